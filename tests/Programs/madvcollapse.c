/* MADV_COLLAPSE of private anonymous memory, as an allocator or a JIT would use it: a 2 MiB-aligned
 * 32 MiB region is written sparsely (one page in 16, so every 2 MiB has a PTE table), then
 *   - madvise(MADV_COLLAPSE) of the first 8 MiB: four huge pages, their tables deposited;
 *   - process_madvise(MADV_COLLAPSE) of the next 8 MiB on itself (a pidfd of its own pid);
 *   - a collapse of 4 MiB over a never-touched 2 MiB (EINVAL after the first one is done);
 *   - MADV_DONTNEED of one page of a collapsed 2 MiB (a split) and of two whole ones, and a munmap
 *     of one more (the deposits go with the leaves).
 * Prints each call's result ("call NAME RESULT") and the figures at its end.
 *   madvcollapse */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "common.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define MB (1UL << 20)

static void call(const char *name, long r)
{
    printf("call %s %ld\n", name, r < 0 ? -(long)errno : r);
}

int main(void)
{
    size_t sz = 32 * MB;
    char *raw = mmap(NULL, sz + 2 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return 1;
    char *p = (char *)(((uintptr_t)raw + 2 * MB - 1) & ~(2 * MB - 1));
    for (size_t o = 0; o < 28 * MB; o += 16 * 4096)
        p[o] = 1;

    call("madvise", madvise(p, 8 * MB, MADV_COLLAPSE));

    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    struct iovec iov = { p + 8 * MB, 8 * MB };
    call("process_madvise", pidfd < 0 ? -1 : syscall(SYS_process_madvise, pidfd, &iov, 1UL, MADV_COLLAPSE, 0U));

    call("madvise-hole", madvise(p + 26 * MB, 4 * MB, MADV_COLLAPSE)); /* [28, 30) MiB was never touched */

    call("dontneed-page", madvise(p + 4096, 4096, MADV_DONTNEED));
    call("dontneed-whole", madvise(p + 2 * MB, 4 * MB, MADV_DONTNEED));
    call("munmap", munmap(p + 8 * MB, 2 * MB));
    print_status("end");
    return 0;
}
