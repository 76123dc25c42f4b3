/* CHUNKS aligned-or-not 2 MiB chunks: touch each, then madvise(MADV_DONTNEED) it in N equal calls.
 *   halves CHUNKS N */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    size_t chunks = argc > 1 ? strtoul(argv[1], 0, 0) : 32;
    size_t calls = argc > 2 ? strtoul(argv[2], 0, 0) : 2;
    size_t size = chunks << 21, step = (2UL << 20) / calls, n = 0;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < chunks; i++) {
        char *q = p + (i << 21);
        for (size_t o = 0; o < (2UL << 20); o += 4096)
            q[o] = 1;
        for (size_t c = 0; c < calls; c++, n++)
            madvise(q + c * step, step, MADV_DONTNEED);
    }
    printf("madvise calls %zu\n", n);
    print_status("end");
    return 0;
}
