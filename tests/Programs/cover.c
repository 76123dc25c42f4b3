/* The seed cover letter's loop at a small size: mmap CHUNKS x 2 MiB, then for each 2 MiB chunk touch
 * every page and madvise it away (4 = MADV_DONTNEED, 8 = MADV_FREE).
 *   cover CHUNKS ADVICE */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    size_t chunks = argc > 1 ? strtoul(argv[1], 0, 0) : 64;
    int advice = argc > 2 ? atoi(argv[2]) : MADV_DONTNEED;
    size_t size = chunks << 21;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < chunks; i++) {
        char *q = p + (i << 21);
        for (size_t o = 0; o < (2UL << 20); o += 4096)
            q[o] = 1;
        if (madvise(q, 2UL << 20, advice)) {
            perror("madvise");
            return 1;
        }
    }
    printf("madvise calls %zu\n", chunks);
    print_status("end");
    return 0;
}
