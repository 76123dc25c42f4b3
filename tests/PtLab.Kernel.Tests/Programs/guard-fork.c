/*
 * The host side of PtLab's check of guard markers across fork: in an empty 512 GiB slot it maps
 * four 2 MiB regions, installs a guard marker in the first page of each (MADV_GUARD_INSTALL),
 * forks, and has the child report what it inherited.
 *
 * Usage: guard-fork DIR   (DIR: a directory for a 2 MiB test file, unlinked once open)
 *
 * Layout (offsets from the slot): 0 private anonymous, its first 16 pages written before the
 * install; 2 MiB shared anonymous, its second page written; 4 MiB private anonymous marked
 * MADV_WIPEONFORK; 6 MiB a private mapping of the test file, never written (no anon_vma).
 *
 * Output, one line per region, from the child:
 *   NAME PAGEMAP SIGNO CODE
 * PAGEMAP is the child's /proc/self/pagemap entry of the region's first page, in hex; SIGNO and
 * CODE what a write to that page raised (0 0 when it did not fault). Exit status 0, or 1 with a
 * message on stderr when a call failed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1UL << 20)
#define SLOT (1UL << 39)
#define GUARD_INSTALL 102

static sigjmp_buf env;
static volatile int fsig, fcode;

static void on_fault(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    fsig = sig;
    fcode = si->si_code;
    siglongjmp(env, 1);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static char *map(unsigned long at, int flags, int fd)
{
    if (fd < 0)
        flags |= MAP_ANONYMOUS;
    char *p = mmap((void *)at, 2 * MIB, PROT_READ | PROT_WRITE, flags | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED)
        die("mmap");
    return p;
}

static void report(const char *name, char *p)
{
    uint64_t e = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0 || pread(fd, &e, 8, (off_t)((uintptr_t)p / PAGE * 8)) != 8)
        die("pagemap");
    close(fd);
    fsig = 0;
    fcode = 0;
    if (!sigsetjmp(env, 1))
        *(volatile char *)p = 1;
    printf("%s %llx %d %d\n", name, (unsigned long long)e, fsig, fcode);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: guard-fork DIR\n");
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/ptlab-guard-fork-XXXXXX", argv[1]);
    int fd = mkstemp(path);
    if (fd < 0 || unlink(path) || ftruncate(fd, (off_t)(2 * MIB)))
        die("test file");
    unsigned long slot = 0x7e0000000000UL;
    while (slot >= SLOT && msync((void *)slot, PAGE, 0) == 0)
        slot -= SLOT; /* a slot whose first page is mapped is taken */
    struct sigaction sa = { .sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_NODEFER };
    sigaction(SIGSEGV, &sa, NULL);
    char *priv = map(slot, MAP_PRIVATE, -1);
    char *shared = map(slot + 2 * MIB, MAP_SHARED, -1);
    char *wiped = map(slot + 4 * MIB, MAP_PRIVATE, -1);
    char *file = map(slot + 6 * MIB, MAP_PRIVATE, fd);
    for (unsigned long o = 0; o < 16 * PAGE; o += PAGE)
        priv[o] = 1;
    shared[PAGE] = 1;
    if (madvise(wiped, 2 * MIB, MADV_WIPEONFORK) || madvise(priv, PAGE, GUARD_INSTALL) ||
        madvise(shared, PAGE, GUARD_INSTALL) || madvise(wiped, PAGE, GUARD_INSTALL) ||
        madvise(file, PAGE, GUARD_INSTALL))
        die("madvise");
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        report("private", priv);
        report("shared", shared);
        report("wiped", wiped);
        report("file", file);
        fflush(stdout);
        _exit(0);
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("child");
    return 0;
}
