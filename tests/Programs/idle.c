/* A process that sits idle while `record -p` attaches: it writes 32 MiB, asks the kernel to page
 * out the second half at once (MADV_PAGEOUT: swapped out where the host has swap, left alone
 * where it has none), prints "ready" and blocks reading its standard input, so that nothing of it
 * happens until the input ends. Then it reads 4 MiB of the paged-out half back and exits 0.
 *   idle */
#include <sys/mman.h>
#include "common.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#define MIB (1UL << 20)

int main(void)
{
    char *p = mmap(NULL, 32 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    memset(p, 1, 32 * MIB);
    madvise(p + 16 * MIB, 16 * MIB, MADV_PAGEOUT);
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    for (size_t o = 16 * MIB; o < 20 * MIB; o += 4096)
        (void)*(volatile char *)(p + o);
    return 0;
}
