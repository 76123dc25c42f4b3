/*
 * What MADV_COLLAPSE does on the host, seen from inside the process: after each step the result
 * and the changes of VmPTE, RssAnon, RssFile and RssShmem (/proc/self/status), and AnonHugePages,
 * FilePmdMapped and ShmemPmdMapped summed over the mapping's smaps entries.
 *
 * Usage: collapse DIR MODE STEPS
 *   DIR    directory for the test file (file mode; unlinked at once)
 *   MODE   "anon" (private anonymous), "shmem" (shared anonymous) or "file" (private, 8 MiB file)
 *   STEPS  comma-separated, page numbers from the mapping's start (8 MiB long, 1 GiB into an empty
 *          512 GiB slot when one is free, so that its upper tables are its own):
 *          "wN[:M]" store to M pages from N, "rN[:M]" load, "cN:M" MADV_COLLAPSE of M pages from
 *          N, "CN:M" of M bytes from byte N, "dN:M" MADV_DONTNEED, "uN:M" munmap, "pN:M" mprotect
 *          PROT_READ, "PN:M" PROT_NONE, "h" MADV_HUGEPAGE, "n" MADV_NOHUGEPAGE, "t" prctl
 *          PR_SET_THP_DISABLE, "l" mlock of the mapping, "vN" vmsplice page N into a pipe that is
 *          never read (a pin: the page holds a reference beyond its mapping), "fN:M"
 *          MADV_FREE, "kN:M" MADV_COLD, "oN:M" MADV_PAGEOUT, "mN:M:D" mremap of M pages from N
 *          to page D (MREMAP_MAYMOVE | MREMAP_FIXED, the same length), "W" mprotect PROT_READ |
 *          PROT_WRITE of the whole mapping (a VMA split by "p" merges again), "F" fork a child that
 *          keeps its copy of the mapping until "X" (or the end) makes it exit
 *
 * LazyFree is read after this CPU's LRU batches were drained (see drain_lru_batches).
 *
 * Output, one line per step: "STEP r=0|ERRNO pte=KB anon=KB file=KB shmem=KB AnonHugePages=KB
 * FilePmdMapped=KB ShmemPmdMapped=KB LazyFree=KB present=N zero=N swap=N split=N splitpmd=N
 * deferred=N swpout=N swpfb=N" (the status figures are changes since the mapping was made; present, zero and swap
 * count the mapping's pages whose pagemap entry is present, maps the shared zero page (its frame
 * number needs root: 0 without it) or is a swap entry; split, splitpmd, deferred, swpout and swpfb
 * are the changes of /proc/vmstat's thp_split_page, thp_split_pmd, thp_deferred_split_page,
 * thp_swpout and thp_swpout_fallback over the step, which other processes can move too;
 * nothing is allocated between the first and the last reading: /proc is read with read() into a
 * buffer touched before, and the lines are written at the end from another such buffer).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define SIZE (8UL << 20)
#ifndef MADV_COLD
#define MADV_COLD 20
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static char out[1 << 16];
static size_t out_len;

/* A whole /proc file read into proc_buf with read(), nothing allocated; NUL-terminated. */
static char proc_buf[1 << 20];

static const char *read_proc(const char *path)
{
    int fd = open(path, O_RDONLY);
    size_t n = 0;
    ssize_t r;
    while (fd >= 0 && n < sizeof proc_buf - 1 && (r = read(fd, proc_buf + n, sizeof proc_buf - 1 - n)) > 0)
        n += (size_t)r;
    if (fd >= 0)
        close(fd);
    proc_buf[n] = 0;
    return proc_buf;
}

/*
 * A page of the program's own data, advised MADV_COLD before each reading: the advice drains this
 * CPU's LRU batches first (lru_add_drain), so that pages MADV_FREE marked are counted in LazyFree
 * at once rather than when a batch of 31 fills. The process is bound to one CPU for that.
 */
static char drain_page[PAGE] __attribute__((aligned(PAGE)));

static void drain_lru_batches(void)
{
    (void)madvise(drain_page, PAGE, MADV_COLD);
}

/* VmPTE, RssAnon, RssFile and RssShmem from one read of /proc/self/status, in kB. */
struct status {
    long pte, anon, file, shmem;
};

static long field_kb(const char *text, const char *key)
{
    size_t n = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, n) == 0 && l[n] == ':')
            return strtol(l + n + 1, NULL, 10);
    return -1;
}

static struct status read_status(void)
{
    const char *t = read_proc("/proc/self/status");
    struct status st = { field_kb(t, "VmPTE"), field_kb(t, "RssAnon"), field_kb(t, "RssFile"), field_kb(t, "RssShmem") };
    return st;
}

/* The sum of one smaps field over the entries that start in [lo, hi). */
static long smaps_kb(uintptr_t lo, uintptr_t hi, const char *key)
{
    const char *t = read_proc("/proc/self/smaps");
    size_t n = strlen(key);
    int in = 0;
    long total = 0;
    for (const char *l = t; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        unsigned long s, e;
        const char *dash = strchr(l, '-'), *space = strchr(l, ' '), *eol = strchr(l, '\n');
        if (dash && space && dash < space && (!eol || space < eol) && sscanf(l, "%lx-%lx ", &s, &e) == 2) {
            in = s >= lo && s < hi;
            continue;
        }
        if (in && strncmp(l, key, n) == 0 && l[n] == ':')
            total += strtol(l + n + 1, NULL, 10);
    }
    return total;
}

/* One field of /proc/vmstat ("name value" lines). */
static long vmstat(const char *key)
{
    const char *t = read_proc("/proc/vmstat");
    size_t n = strlen(key);
    for (const char *l = t; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, n) == 0 && l[n] == ' ')
            return strtol(l + n + 1, NULL, 10);
    return 0;
}

struct thp_events {
    long split, splitpmd, deferred, swpout, swpfb;
};

static struct thp_events read_thp_events(void)
{
    struct thp_events e = { vmstat("thp_split_page"), vmstat("thp_split_pmd"), vmstat("thp_deferred_split_page"),
        vmstat("thp_swpout"), vmstat("thp_swpout_fallback") };
    return e;
}

/* The mapping's pagemap entries, read into a buffer of the program's own. */
static uint64_t pagemap_buf[SIZE / PAGE];
static int kpageflags_fd = -1;

/* Whether the frame is the shared 4 KiB zero page: KPF_ZERO_PAGE (bit 24) on a frame that is not
 * part of a compound page (the huge zero folio has the flag too). Asked of /proc/kpageflags rather
 * than learnt from a read fault, since a host may take a private page on a read fault. */
static int is_zero_pfn(uint64_t pfn)
{
    uint64_t f = 0;
    if (pfn == 0 || kpageflags_fd < 0 || pread(kpageflags_fd, &f, 8, (off_t)(pfn * 8)) != 8)
        return 0;
    return ((f >> 24) & 1) && !((f >> 15) & 3);
}

struct pte_counts {
    long present, zero, swap;
};

static struct pte_counts read_pagemap(const char *p)
{
    struct pte_counts c = { 0, 0, 0 };
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0)
        return c;
    ssize_t got = pread(fd, pagemap_buf, sizeof pagemap_buf, (off_t)((uintptr_t)p / PAGE * 8));
    close(fd);
    for (long i = 0; i < got / 8; i++) {
        uint64_t e = pagemap_buf[i];
        if (e >> 63) {
            c.present++;
            if (is_zero_pfn(e & ((1ULL << 55) - 1)))
                c.zero++;
        } else if ((e >> 62) & 1) {
            c.swap++;
        }
    }
    return c;
}

/* /proc/kpageflags, for is_zero_pfn (root only; without it no page counts as the zero page). */
static void open_kpageflags(void)
{
    kpageflags_fd = open("/proc/kpageflags", O_RDONLY);
}

/* The child of an "F" step, which holds its copy of the mapping until its pipe is closed. */
static pid_t child = -1;
static int child_pipe = -1;

static int fork_child(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char c;
        close(fds[1]);
        while (read(fds[0], &c, 1) > 0)
            ;
        _exit(0);
    }
    close(fds[0]);
    child = pid;
    child_pipe = fds[1];
    return 0;
}

static int end_child(void)
{
    if (child < 0)
        return -1;
    close(child_pipe);
    int status;
    pid_t r = waitpid(child, &status, 0);
    child = -1;
    return r < 0 ? -1 : 0;
}

/* Touches 512 KiB of stack below the caller, so that no step grows the stack (and its tables). */
static void grow_stack(void)
{
    volatile char big[512 << 10];
    for (size_t i = 0; i < sizeof big; i += PAGE)
        big[i] = 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: collapse DIR anon|shmem|file STEPS\n");
        return 2;
    }
    const char *mode = argv[2];
    /* 1 GiB into the first free 512 GiB slot from 0x7e0000000000 down (nothing else in it). */
    char *p = NULL;
    for (uintptr_t slot = 0x7e0000000000UL; slot >= 0x100000000000UL && !p; slot -= 1UL << 39) {
        char *r = mmap((char *)slot, 1UL << 39, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
        if (r == (char *)slot) {
            munmap(r, 1UL << 39);
            p = r + (1UL << 30);
        } else if (r != MAP_FAILED) {
            munmap(r, 1UL << 39);
        }
    }
    if (!p) {
        fprintf(stderr, "no free 512 GiB slot\n");
        return 1;
    }
    int fd = -1, flags = 0;
    if (!strcmp(mode, "anon")) {
        flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    } else if (!strcmp(mode, "shmem")) {
        flags |= MAP_SHARED | MAP_ANONYMOUS;
    } else if (!strcmp(mode, "file")) {
        char path[4096];
        snprintf(path, sizeof path, "%s/ptlab-collapse-XXXXXX", argv[1]);
        fd = mkstemp(path);
        if (fd < 0) {
            perror(path);
            return 1;
        }
        unlink(path);
        static char page[PAGE];
        for (unsigned long i = 0; i < SIZE / PAGE; i++) {
            memset(page, (int)i, PAGE);
            if (pwrite(fd, page, PAGE, (off_t)(i * PAGE)) != (ssize_t)PAGE) {
                perror("pwrite");
                return 1;
            }
        }
        flags |= MAP_PRIVATE;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    if (mmap(p, SIZE, PROT_READ | PROT_WRITE, flags | MAP_FIXED_NOREPLACE, fd, 0) == MAP_FAILED) {
        perror("mmap");
        return 1;
    }

    int pipefd[2];
    if (pipe(pipefd) != 0) {
        perror("pipe");
        return 1;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    drain_page[0] = 1;
    open_kpageflags();
    char *steps = strdup(argv[3]);
    memset(out, 0, sizeof out);
    memset(proc_buf, 0, sizeof proc_buf);
    grow_stack();
    (void)smaps_kb(0, 0, "Rss");
    out_len = (size_t)snprintf(out, sizeof out, "%s r=%s pte=%ld\n", "warm-up", strerrorname_np(EINVAL), 0L);
    out_len = 0;
    (void)read_pagemap(p);
    struct status base = read_status();
    for (char *s = strtok(steps, ","); s; s = strtok(NULL, ",")) {
        long n = 0, m = 1;
        if (s[1])
            sscanf(s + 1, "%ld:%ld", &n, &m);
        int r = 0;
        struct thp_events before = read_thp_events();
        switch (s[0]) {
        case 'r':
            for (long i = 0; i < m; i++)
                (void)*(volatile char *)(p + (n + i) * PAGE);
            break;
        case 'w':
            for (long i = 0; i < m; i++)
                *(volatile char *)(p + (n + i) * PAGE) = 1;
            break;
        case 'c':
            r = madvise(p + n * PAGE, m * PAGE, MADV_COLLAPSE);
            break;
        case 'C':
            r = madvise(p + n, (size_t)m, MADV_COLLAPSE);
            break;
        case 'u':
            r = munmap(p + n * PAGE, m * PAGE);
            break;
        case 'p':
        case 'P':
            r = mprotect(p + n * PAGE, m * PAGE, s[0] == 'p' ? PROT_READ : PROT_NONE);
            break;
        case 'd':
            r = madvise(p + n * PAGE, m * PAGE, MADV_DONTNEED);
            break;
        case 'f':
            r = madvise(p + n * PAGE, m * PAGE, MADV_FREE);
            break;
        case 'k':
            r = madvise(p + n * PAGE, m * PAGE, MADV_COLD);
            break;
        case 'o':
            r = madvise(p + n * PAGE, m * PAGE, MADV_PAGEOUT);
            break;
        case 'm': {
            long d = 0;
            if (sscanf(s + 1, "%ld:%ld:%ld", &n, &m, &d) != 3) {
                fprintf(stderr, "bad step %s\n", s);
                return 2;
            }
            r = mremap(p + n * PAGE, m * PAGE, m * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, p + d * PAGE) == MAP_FAILED ? -1 : 0;
            break;
        }
        case 'h':
            r = madvise(p, SIZE, MADV_HUGEPAGE);
            break;
        case 'n':
            r = madvise(p, SIZE, MADV_NOHUGEPAGE);
            break;
        case 't':
            r = prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
            break;
        case 'l':
            r = mlock(p, SIZE);
            break;
        case 'W':
            r = mprotect(p, SIZE, PROT_READ | PROT_WRITE);
            break;
        case 'F':
            r = fork_child();
            break;
        case 'X':
            r = end_child();
            break;
        case 'v': {
            struct iovec v = { p + n * PAGE, PAGE };
            r = vmsplice(pipefd[1], &v, 1, 0) == (ssize_t)PAGE ? 0 : -1;
            break;
        }
        default:
            fprintf(stderr, "unknown step %s\n", s);
            return 2;
        }
        int e = r ? errno : 0;
        drain_lru_batches();
        struct thp_events after = read_thp_events();
        struct pte_counts ptes = read_pagemap(p);
        struct status now = read_status();
        out_len += (size_t)snprintf(out + out_len, sizeof out - out_len,
            "%s r=%s pte=%ld anon=%ld file=%ld shmem=%ld AnonHugePages=%ld FilePmdMapped=%ld ShmemPmdMapped=%ld LazyFree=%ld"
            " present=%ld zero=%ld swap=%ld split=%ld splitpmd=%ld deferred=%ld swpout=%ld swpfb=%ld\n",
            s, e ? strerrorname_np(e) : "0", now.pte - base.pte, now.anon - base.anon,
            now.file - base.file, now.shmem - base.shmem,
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "AnonHugePages"),
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "FilePmdMapped"),
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "ShmemPmdMapped"),
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "LazyFree"),
            ptes.present, ptes.zero, ptes.swap, after.split - before.split, after.splitpmd - before.splitpmd,
            after.deferred - before.deferred, after.swpout - before.swpout, after.swpfb - before.swpfb);
    }
    end_child();
    fwrite(out, 1, out_len, stdout);
    return 0;
}
