/*
 * The host side of PtLab's fork check: builds a fixed set of mappings in an empty 512 GiB slot,
 * forks, and prints the /proc/self/status figures of parent and child at each step, so that the
 * model's fork (copy_page_range) can be compared with the kernel's.
 *
 * Usage: fork-witness DIR   (DIR: a disk-backed directory for the test file)
 *
 * Output, one line per checkpoint, all sizes in kB:
 *   LABEL VmPTE RssAnon RssFile RssShmem
 * VmPTE is /proc/self/status's, absolute: "base" and "child-base" come from a first fork made while
 * the slot holds nothing, and are the baselines of the parent's and the child's later figures. The
 * RSS figures count the slot's mappings only, from /proc/self/smaps (Anonymous, and Rss less
 * Anonymous for the file and the shared anonymous mappings): the program's own code pages, which a
 * child refaults as it runs, stay out of them. The last line is
 *   sigbus SIGNO
 * for a read one page past the end of a mapped file.
 *
 * Layout (offsets from the slot):
 *   0       private anonymous, 8 MiB: first 4 MiB written, next 2 MiB read (zero page), rest untouched
 *   16 MiB  private anonymous, 2 MiB, untouched before fork (read by the child)
 *   32 MiB  private file mapping, 4 MiB: in every 256 KiB, page 10 read, page 2 written (copied)
 *   48 MiB  shared file mapping, 4 MiB, untouched before fork (read by the child)
 *   64 MiB  shared anonymous, 4 MiB, all written
 *   80 MiB  shared file mapping, 4 MiB + 8 KiB: the file ends inside it
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1UL << 20)
#define BLOCK (256UL * 1024)
#define SLOT_SIZE (1UL << 39)
#define PREFERRED_SLOT 0x7e0000000000UL
#define FILE_SIZE (4 * MIB)
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static char buf[1 << 20];
static char line[256];
static sigjmp_buf env;
static volatile int fault_signo;
static unsigned long slot;

static void die(const char *msg)
{
    (void)!write(2, "fork-witness: ", 14);
    (void)!write(2, msg, strlen(msg));
    (void)!write(2, "\n", 1);
    _exit(3);
}

static void slurp(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("cannot open a /proc file");
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    if (n < 0 || len == sizeof buf - 1)
        die("cannot read a /proc file");
    buf[len] = 0;
}

static long kb_after(const char *p, const char *name)
{
    const char *q = strstr(p, name);
    if (!q)
        die("a /proc field is missing");
    return strtol(q + strlen(name), NULL, 10);
}

static void report(const char *label)
{
    slurp("/proc/self/status");
    long pte = kb_after(buf, "VmPTE:");
    slurp("/proc/self/smaps");
    long anon = 0, file = 0, shmem = 0;
    for (char *p = buf; *p;) {
        char *eol = strchr(p, '\n');
        unsigned long start, end;
        /* A VMA's header line is the only one that starts with its address range. */
        if (sscanf(p, "%lx-%lx ", &start, &end) == 2 && start >= slot && start < slot + SLOT_SIZE) {
            long rss = kb_after(p, "\nRss:"), anonymous = kb_after(p, "\nAnonymous:");
            anon += anonymous;
            if (start >= slot + 64 * MIB && start < slot + 68 * MIB)
                shmem += rss - anonymous;
            else
                file += rss - anonymous;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    int len = snprintf(line, sizeof line, "%s %ld %ld %ld %ld\n", label, pte, anon, file, shmem);
    (void)!write(1, line, (size_t)len);
}

static char *map(unsigned long at, size_t len, int flags, int fd)
{
    void *p = mmap((void *)at, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED || (unsigned long)p != at)
        die("mmap in the slot failed");
    return p;
}

static void touch(char *p, size_t len, size_t stride, size_t first, int write)
{
    for (size_t o = first; o < len; o += stride) {
        if (write)
            ((volatile char *)p)[o] = 1;
        else
            (void)((volatile char *)p)[o];
    }
}

/*
 * Faults in the program's own memory before the baselines: the 1 MiB buffer /proc files are read
 * into lies wherever the loader put .bss, and may straddle a 2 MiB boundary, so a later, longer
 * smaps read would otherwise fault a page-table page of its own between the baseline and the
 * checkpoints (and fork would copy it). The stack gets the same treatment for the depth the
 * reports need.
 */
static void settle(void)
{
    for (size_t o = 0; o < sizeof buf; o += PAGE)
        ((volatile char *)buf)[o] = 0;
    volatile char deep[64 * 1024];
    for (size_t o = 0; o < sizeof deep; o += PAGE)
        deep[o] = 0;
}

static void on_bus(int sig)
{
    fault_signo = sig;
    siglongjmp(env, 1);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        die("usage: fork-witness DIR");
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    slot = PREFERRED_SLOT;
    void *probe = mmap((void *)slot, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (probe != (void *)slot)
        die("the slot at 0x7e0000000000 is not free");
    munmap(probe, PAGE);

    char path[4096];
    snprintf(path, sizeof path, "%s/ptlab-fork-witness-XXXXXX", argv[1]);
    int fd = mkstemp(path);
    if (fd < 0)
        die("cannot create the test file");
    unlink(path);
    static char page[PAGE];
    for (unsigned long off = 0; off < FILE_SIZE; off += PAGE) {
        memset(page, (int)(off >> 12), PAGE);
        if (pwrite(fd, page, PAGE, (off_t)off) != (ssize_t)PAGE)
            die("cannot write the test file");
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_bus;
    sigaction(SIGBUS, &sa, NULL);

    settle();

    /* The baselines: the same fork, made while the slot is empty. */
    report("base");
    pid_t pid = fork();
    if (pid == 0) {
        report("child-base");
        _exit(0);
    }
    waitpid(pid, NULL, 0);

    char *anon = map(slot, 8 * MIB, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    char *zero = map(slot + 16 * MIB, 2 * MIB, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    char *fpriv = map(slot + 32 * MIB, FILE_SIZE, MAP_PRIVATE, fd);
    char *fshared = map(slot + 48 * MIB, FILE_SIZE, MAP_SHARED, fd);
    char *shm = map(slot + 64 * MIB, 4 * MIB, MAP_SHARED | MAP_ANONYMOUS, -1);
    touch(anon, 4 * MIB, PAGE, 0, 1);
    touch(anon + 4 * MIB, 2 * MIB, PAGE, 0, 0);
    touch(fpriv, FILE_SIZE, BLOCK, 10 * PAGE, 0);
    touch(fpriv, FILE_SIZE, BLOCK, 2 * PAGE, 1);
    touch(shm, 4 * MIB, PAGE, 0, 1);
    report("parent");

    pid = fork();
    if (pid == 0) {
        report("child");
        touch(anon, MIB, PAGE, 0, 1);
        report("child-cow");
        touch(fshared, FILE_SIZE, BLOCK, 10 * PAGE, 0);
        report("child-refault");
        touch(zero, 2 * MIB, PAGE, 0, 0);
        report("child-zero");
        if (madvise(anon, 2 * MIB, MADV_DONTNEED))
            die("madvise failed");
        report("child-dontneed");
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the child failed");
    report("parent-after");

    char *tail = map(slot + 80 * MIB, FILE_SIZE + 2 * PAGE, MAP_SHARED, fd);
    if (sigsetjmp(env, 1) == 0)
        (void)((volatile char *)tail)[FILE_SIZE + PAGE];
    int len = snprintf(line, sizeof line, "sigbus %d\n", fault_signo);
    (void)!write(1, line, (size_t)len);
    return 0;
}
