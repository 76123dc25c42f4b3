/* A 64 MiB file in DIR, written, synced and dropped from the page cache, then opened twice and
 * mapped through each open (private, read-only, no advice). The first half is read page by page in
 * order through the first mapping while the second half is read likewise through the second, the
 * two streams interleaved page by page: each open keeps its own readahead state, so each stream
 * grows its folio order as a lone sequential reader does.
 *   twoopens DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ptlab-twoopens.%d", argc > 1 ? argv[1] : P_tmpdir, getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    size_t sz = 64UL << 20, half = sz / 2;
    if (write_cold_file(fd, sz) < 0)
        return 1;
    int fd2 = open(path, O_RDONLY);
    unlink(path);
    if (fd2 < 0)
        return 1;
    char *a = mmap(NULL, sz, PROT_READ, MAP_PRIVATE, fd, 0);
    char *b = mmap(NULL, sz, PROT_READ, MAP_PRIVATE, fd2, 0);
    if (a == MAP_FAILED || b == MAP_FAILED)
        return 1;
    long sum = 0;
    for (size_t o = 0; o < half; o += 4096) {
        sum += a[o];
        sum += b[half + o];
        if ((o & ((8UL << 20) - 1)) == 0)
            usleep(30000); /* a status sample now and then */
    }
    print_status("end");
    return sum == (long)(sz / 4096) ? 0 : 1;
}
