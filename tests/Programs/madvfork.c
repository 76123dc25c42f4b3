/* The advices that decide what fork copies: 32 MiB written and marked MADV_DONTFORK (the child
 * has a hole there), 32 MiB written and marked MADV_WIPEONFORK (the child gets the range empty
 * and faults in zero pages), parts of each taken back with MADV_DOFORK and MADV_KEEPONFORK, and
 * the EINVAL cases (WIPEONFORK of a shared mapping and of a file). MADV_MERGEABLE and
 * MADV_UNMERGEABLE (flags only while ksmd does not run) are called too. The child writes a
 * quarter of the wiped range and checks it read zeros, and checks the DONTFORK hole with msync.
 *   madvfork */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#define MIB (1UL << 20)

static char *region(size_t sz)
{
    char *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    for (size_t o = 0; o < sz; o += 4096)
        p[o] = 1;
    return p;
}

int main(void)
{
    size_t sz = 32 * MIB;
    char *keep = region(8 * MIB), *dontfork = region(sz), *wipe = region(sz);
    char *shared = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    FILE *tmp = tmpfile();
    char *file = tmp ? mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fileno(tmp), 0) : MAP_FAILED;
    if (!keep || !dontfork || !wipe || shared == MAP_FAILED || file == MAP_FAILED)
        return 1;
    if (madvise(dontfork, sz, MADV_DONTFORK) || madvise(dontfork + sz - 4 * MIB, 4 * MIB, MADV_DOFORK))
        return 2;
    if (madvise(wipe, sz, MADV_WIPEONFORK) || madvise(wipe + sz - 4 * MIB, 4 * MIB, MADV_KEEPONFORK))
        return 3;
    if (madvise(shared, MIB, MADV_WIPEONFORK) != -1 || errno != EINVAL || madvise(file, 4096, MADV_WIPEONFORK) != -1 || errno != EINVAL)
        return 4;
    if (madvise(keep, 8 * MIB, MADV_MERGEABLE) == 0)
        madvise(keep, 4 * MIB, MADV_UNMERGEABLE);
    usleep(30000);

    pid_t child = fork();
    if (child == 0) {
        long nonzero = 0;
        for (size_t o = 0; o < sz - 4 * MIB; o += 16384)
            nonzero += wipe[o];
        for (size_t o = 0; o < sz / 4; o += 4096)
            wipe[o] = 2;
        for (size_t o = 0; o < 8 * MIB; o += 4096)
            keep[o] = 3;
        int hole = msync(dontfork, 4096, MS_ASYNC) == -1 && errno == ENOMEM;
        int kept = msync(dontfork + sz - 4096, 4096, MS_ASYNC) == 0 && dontfork[sz - 4096] == 1;
        usleep(30000);
        print_status("child");
        _exit(nonzero == 0 && hole && kept && wipe[sz - 4096] == 1 ? 0 : 1);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 5;
    print_status("end");
    return 0;
}
