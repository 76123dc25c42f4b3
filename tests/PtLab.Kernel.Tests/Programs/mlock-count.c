/*
 * mlock-count: one page-cache page mapped by two VMAs (A and B, MAP_SHARED of the same file page),
 * locked and unlocked through each in turn. After every step it prints the page's PG_mlocked and
 * unevictable bits from /proc/kpageflags (needs root for the frame number in /proc/self/pagemap):
 *   STEP MLOCKED UNEVICTABLE
 * The mlock and munlock batches are per CPU: the program pins itself to one CPU and drains them
 * (MADV_COLD runs lru_add_drain, which drains the mlock batch too) before it reads the bits.
 *   mlock-count DIR      (DIR: a directory on a disk-backed file system)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL
#define KPF_UNEVICTABLE 18
#define KPF_MLOCKED 33

static char *drain_page;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void step(const char *name, const volatile char *page)
{
    (void)*page; /* mapped */
    if (madvise(drain_page, PAGE, MADV_COLD) != 0)
        die("madvise(MADV_COLD)");
    int pm = open("/proc/self/pagemap", O_RDONLY);
    int kf = open("/proc/kpageflags", O_RDONLY);
    if (pm < 0 || kf < 0)
        die("open pagemap/kpageflags");
    uint64_t e, flags;
    if (pread(pm, &e, 8, (off_t)((uintptr_t)page / PAGE * 8)) != 8)
        die("pread pagemap");
    uint64_t pfn = e & ((1ULL << 55) - 1);
    if (!(e >> 63) || pfn == 0) {
        fprintf(stderr, "no frame number in pagemap (not root?)\n");
        exit(2);
    }
    if (pread(kf, &flags, 8, (off_t)(pfn * 8)) != 8)
        die("pread kpageflags");
    close(pm);
    close(kf);
    printf("%s %d %d\n", name, (int)(flags >> KPF_MLOCKED & 1), (int)(flags >> KPF_UNEVICTABLE & 1));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mlock-count DIR\n");
        return 2;
    }

    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        die("sched_setaffinity");

    char path[4096];
    snprintf(path, sizeof path, "%s/mlock-count.data", argv[1]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("open");
    unlink(path);
    static char data[PAGE];
    memset(data, 1, sizeof data);
    if (write(fd, data, PAGE) != (ssize_t)PAGE || fsync(fd) != 0)
        die("write");

    drain_page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *a = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    char *b = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    if (drain_page == MAP_FAILED || a == MAP_FAILED || b == MAP_FAILED)
        die("mmap");
    drain_page[0] = 1;

    step("mapped", a);
    (void)*(volatile char *)b;
    if (mlock(a, PAGE) != 0)
        die("mlock");
    step("lock-a", a);
    if (mlock(b, PAGE) != 0)
        die("mlock");
    step("lock-b", a);
    munlock(a, PAGE);
    step("unlock-a", b);
    munlock(b, PAGE);
    step("unlock-b", b);
    if (mlock(a, PAGE) != 0 || mlock(b, PAGE) != 0)
        die("mlock");
    step("lock-both", a);
    munmap(b, PAGE);
    step("unmap-b", a);
    munlock(a, PAGE);
    step("unlock-a-again", a);
    return 0;
}
