/* A 48 MiB file in DIR, written, synced and dropped from the page cache, then mapped private with
 * no advice and read page by page in order: readahead grows its folio order on every readahead
 * mark it meets, and with a large readahead window the last part comes in PMD-sized folios that
 * the faults map with PMD entries (no PTE tables).
 *   seqfile DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv)
{
    int fd = open_temp_file(argc, argv, "seqfile");
    if (fd < 0)
        return 1;
    size_t sz = 48UL << 20;
    if (write_cold_file(fd, sz) < 0)
        return 1;
    char *p = mmap(NULL, sz, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return 1;
    long sum = 0;
    for (size_t o = 0; o < sz; o += 4096) {
        sum += p[o];
        if ((o & ((8UL << 20) - 1)) == 0)
            usleep(30000); /* a status sample now and then */
    }
    print_status("end");
    return sum == (long)(sz / 4096) ? 0 : 1;
}
