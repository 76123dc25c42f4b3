/* A shared file mapping that grows with its file, as a database maps its file: a one-page file
 * mapped shared, then four times the file is extended by ftruncate (no event records it), the
 * mapping is grown with mremap (MREMAP_MAYMOVE) to the file's new size, and every page of the new
 * part is written through the mapping. A model that keeps the file's first size answers those
 * writes with SIGBUS and builds none of their page tables.
 *   growfile DIR */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    int fd = open_temp_file(argc, argv, "growfile");
    if (fd < 0 || ftruncate(fd, 4096))
        return 1;
    size_t size = 4096;
    char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return 1;
    m[0] = 1;
    for (int round = 0; round < 4; round++) {
        size_t grown = size + (6UL << 20);
        if (ftruncate(fd, (off_t)grown))
            return 1;
        char *n = mremap(m, size, grown, MREMAP_MAYMOVE);
        if (n == MAP_FAILED) {
            perror("mremap");
            return 1;
        }
        for (size_t o = size; o < grown; o += 4096)
            n[o] = (char)round;
        m = n;
        size = grown;
    }
    read_pages_and_report(m, size);
    return 0;
}
