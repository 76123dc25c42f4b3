/* glibc malloc churn: OPS random malloc/free over SLOTS live blocks, sizes from 16 B to 1 MiB
 * (above glibc's 128 KiB mmap threshold some blocks are mmapped), each block's pages written.
 *   churn OPS SEED */
#include <stdint.h>
#include "common.h"

static uint64_t rng;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    enum { SLOTS = 512 };
    long ops = argc > 1 ? atol(argv[1]) : 20000;
    rng = argc > 2 ? strtoull(argv[2], 0, 0) | 1 : 88172645463325252ULL;
    static char *slot[SLOTS];
    for (long i = 0; i < ops; i++) {
        int s = (int)(next() % SLOTS);
        if (slot[s]) {
            free(slot[s]);
            slot[s] = NULL;
            continue;
        }
        size_t size = (size_t)16 << (next() % 17); /* 16 B .. 1 MiB */
        size += next() % size;
        char *p = malloc(size);
        if (!p)
            return 1;
        for (size_t o = 0; o < size; o += 4096)
            p[o] = (char)i;
        slot[s] = p;
    }
    for (int s = 0; s < SLOTS; s++)
        free(slot[s]);
    print_status("end");
    return 0;
}
