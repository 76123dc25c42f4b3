/* A file mapped in parts that the kernel merges: the first 1 MiB of a 4 MiB file is mapped
 * private and read-only, then each following 1 MiB is mapped MAP_FIXED right after the previous
 * part, at the adjoining file offset, with the same protection, as a runtime maps an archive's
 * regions over its reservation. Each new part merges with the VMA before it, and the kernel's
 * mapping record (MMAP2) reports the merged VMA, which starts below the new mapping. Every page
 * is read.
 *   filemerge DIR */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    const size_t part = 1UL << 20, size = 4 * part;
    int fd = open_temp_file(argc, argv, "filemerge");
    if (fd < 0 || write_cold_file(fd, size))
        return 1;
    char *base = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return 1;
    for (size_t o = 0; o < size; o += part)
        if (mmap(base + o, part, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, (off_t)o) != base + o) {
            perror("mmap");
            return 1;
        }
    read_pages_and_report(base, size);
    return 0;
}
