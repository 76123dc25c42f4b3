/* process_madvise, on the program itself and on a child, with several ranges per call:
 *   - itself (a pidfd of its own pid): MADV_DONTNEED over three ranges of a 16 MiB anonymous
 *     mapping (one length not a page multiple), MADV_COLD and MADV_PAGEOUT over others, and a
 *     call whose second range runs into a hole (partial progress: the first range's bytes);
 *   - a child that maps a 4 MiB file and an anonymous 4 MiB and reads/writes them: MADV_PAGEOUT
 *     of the file range (the clean page-cache pages leave its RSS), MADV_COLD of the anonymous
 *     range, and MADV_DONTNEED, which the kernel refuses for another process (EINVAL).
 * Prints each call's result ("call NAME RESULT") and each process's figures at its end.
 *   pmadv DIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

#define MB (1UL << 20)

static long pmadv(int pidfd, struct iovec *iov, int n, int advice)
{
    long r = syscall(SYS_process_madvise, pidfd, iov, (size_t)n, advice, 0U);
    return r < 0 ? -errno : r;
}

static void touch(char *p, size_t len, char v)
{
    for (size_t o = 0; o < len; o += 4096)
        p[o] = v;
}

int main(int argc, char **argv)
{
    int fd = open_temp_file(argc, argv, "pmadv");
    if (fd < 0)
        return 1;
    static char block[64 * 1024];
    memset(block, 7, sizeof block);
    for (size_t o = 0; o < 4 * MB; o += sizeof block)
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block)
            return 1;
    fdatasync(fd); /* clean page-cache pages: MADV_PAGEOUT can drop them */

    /* Mapped before the fork, touched only by the child: its addresses are the parent's. */
    char *file = mmap(NULL, 4 * MB, PROT_READ, MAP_SHARED, fd, 0);
    char *anon = mmap(NULL, 4 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int go[2], ready[2];
    if (file == MAP_FAILED || anon == MAP_FAILED || pipe(go) || pipe(ready))
        return 1;
    pid_t child = fork();
    if (child == 0) {
        long sum = 0;
        for (size_t o = 0; o < 4 * MB; o += 4096)
            sum += file[o];
        touch(anon, 4 * MB, 1);
        print_status("child-before");
        char c = 1;
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(1);
        printf("child sum %ld\n", sum);
        print_status("child-end");
        _exit(0);
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        return 1;
    int childfd = (int)syscall(SYS_pidfd_open, child, 0);
    struct iovec remote[2] = {{file, 2 * MB}, {file + 2 * MB, 2 * MB}};
    printf("call remote-pageout %ld\n", pmadv(childfd, remote, 2, MADV_PAGEOUT));
    struct iovec remote_anon[1] = {{anon, 4 * MB}};
    printf("call remote-cold %ld\n", pmadv(childfd, remote_anon, 1, MADV_COLD));
    printf("call remote-dontneed %ld\n", pmadv(childfd, remote_anon, 1, MADV_DONTNEED));
    c = 1;
    if (write(go[1], &c, 1) != 1)
        return 1;
    int status;
    waitpid(child, &status, 0);

    /* On itself: 16 MiB written, then three ranges dropped in one call. */
    int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
    char *a = mmap(NULL, 16 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || self < 0)
        return 1;
    touch(a, 16 * MB, 2);
    struct iovec drop[3] = {{a, 2 * MB}, {a + 4 * MB, 3 * MB}, {a + 10 * MB, 1 * MB + 5000}};
    printf("call self-dontneed %ld\n", pmadv(self, drop, 3, MADV_DONTNEED));
    struct iovec cold[2] = {{a + 2 * MB, 2 * MB}, {a + 8 * MB, 1 * MB}};
    printf("call self-cold %ld\n", pmadv(self, cold, 2, MADV_COLD));
    struct iovec out[1] = {{a + 12 * MB, 2 * MB}};
    printf("call self-pageout %ld\n", pmadv(self, out, 1, MADV_PAGEOUT));
    /* A hole after the mapping: the second range drops what is mapped, then fails (ENOMEM). */
    munmap(a + 15 * MB, 1 * MB);
    struct iovec partial[2] = {{a + 13 * MB, 1 * MB}, {a + 14 * MB, 2 * MB}};
    printf("call self-partial %ld\n", pmadv(self, partial, 2, MADV_DONTNEED));
    print_status("end");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
