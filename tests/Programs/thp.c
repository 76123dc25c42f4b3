/* MADV_HUGEPAGE: a 2 MiB-aligned 16 MiB region advised huge, touched, then half of it
 * DONTNEED'd in 4 KiB pieces of one 2 MiB (splitting a huge page) and half in whole 2 MiB.
 *   thp */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/mman.h>
#include "common.h"

int main(void)
{
    size_t sz = 16UL << 20;
    char *raw = mmap(NULL, sz + (2UL << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return 1;
    char *p = (char *)(((uintptr_t)raw + (2UL << 20) - 1) & ~((2UL << 20) - 1));
    if (madvise(p, sz, MADV_HUGEPAGE)) {
        perror("madvise(MADV_HUGEPAGE)");
        return 1;
    }
    for (size_t o = 0; o < sz; o += 4096)
        p[o] = 1;
    for (size_t o = 0; o < (2UL << 20); o += 4096)
        madvise(p + o, 4096, MADV_DONTNEED);
    madvise(p + (8UL << 20), 8UL << 20, MADV_DONTNEED);
    print_status("end");
    return 0;
}
