/*
 * What MADV_COLLAPSE does on the host, seen from inside the process: after each step the result
 * and the changes of VmPTE, RssAnon, RssFile and RssShmem (/proc/self/status), and AnonHugePages,
 * FilePmdMapped and ShmemPmdMapped summed over the mapping's smaps entries.
 *
 * Usage: collapse DIR MODE STEPS
 *   DIR    directory for the test file (file mode; unlinked at once)
 *   MODE   "anon" (private anonymous), "shmem" (shared anonymous) or "file" (private, 8 MiB file)
 *   STEPS  comma-separated, page numbers from the mapping's start (2 MiB aligned, 8 MiB long):
 *          "wN[:M]" store to M pages from N, "rN[:M]" load, "cN:M" MADV_COLLAPSE of M pages from
 *          N, "dN:M" MADV_DONTNEED, "h" MADV_HUGEPAGE, "n" MADV_NOHUGEPAGE, "t" prctl
 *          PR_SET_THP_DISABLE, "l" mlock of the mapping, "vN" vmsplice page N into a pipe that is
 *          never read (a pin: the page holds a reference beyond its mapping)
 *
 * Output, one line per step: "STEP r=0|ERRNO pte=KB anon=KB file=KB shmem=KB AnonHugePages=KB
 * FilePmdMapped=KB ShmemPmdMapped=KB" (the status figures are changes since the mapping was made;
 * the buffer for all lines is written at the end, so that stdio does not move them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096UL
#define SIZE (8UL << 20)
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static char out[1 << 16];
static size_t out_len;

/* VmPTE, RssAnon, RssFile and RssShmem from one read of /proc/self/status, in kB. */
struct status {
    long pte, anon, file, shmem;
};

static struct status read_status(void)
{
    struct status st = { -1, -1, -1, -1 };
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f)) {
        char key[64];
        long kb;
        if (sscanf(line, "%63[^:]: %ld", key, &kb) != 2)
            continue;
        if (!strcmp(key, "VmPTE"))
            st.pte = kb;
        else if (!strcmp(key, "RssAnon"))
            st.anon = kb;
        else if (!strcmp(key, "RssFile"))
            st.file = kb;
        else if (!strcmp(key, "RssShmem"))
            st.shmem = kb;
    }
    if (f)
        fclose(f);
    return st;
}

/* The sum of one smaps field over the entries that start in [lo, hi). */
static long smaps_kb(uintptr_t lo, uintptr_t hi, const char *key)
{
    char buf[512];
    FILE *f = fopen("/proc/self/smaps", "r");
    int in = 0;
    long total = 0;
    size_t n = strlen(key);
    while (f && fgets(buf, sizeof buf, f)) {
        unsigned long s, e;
        if (sscanf(buf, "%lx-%lx ", &s, &e) == 2 && strchr(buf, '-') < strchr(buf, ' ')) {
            in = s >= lo && s < hi;
            continue;
        }
        if (in && strncmp(buf, key, n) == 0 && buf[n] == ':')
            total += strtol(buf + n + 1, NULL, 10);
    }
    if (f)
        fclose(f);
    return total;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: collapse DIR anon|shmem|file STEPS\n");
        return 2;
    }
    const char *mode = argv[2];
    char *reserve = mmap(NULL, SIZE + (2UL << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserve == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char *p = (char *)(((uintptr_t)reserve + (2UL << 20) - 1) & ~((2UL << 20) - 1));
    int fd = -1, flags = MAP_FIXED;
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
    if (mmap(p, SIZE, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED) {
        perror("mmap");
        return 1;
    }

    int pipefd[2];
    if (pipe(pipefd) != 0) {
        perror("pipe");
        return 1;
    }
    struct status base = read_status();
    char *steps = strdup(argv[3]);
    for (char *s = strtok(steps, ","); s; s = strtok(NULL, ",")) {
        long n = 0, m = 1;
        if (s[1])
            sscanf(s + 1, "%ld:%ld", &n, &m);
        int r = 0;
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
        case 'd':
            r = madvise(p + n * PAGE, m * PAGE, MADV_DONTNEED);
            break;
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
        struct status now = read_status();
        out_len += (size_t)snprintf(out + out_len, sizeof out - out_len,
            "%s r=%s pte=%ld anon=%ld file=%ld shmem=%ld AnonHugePages=%ld FilePmdMapped=%ld ShmemPmdMapped=%ld\n",
            s, e ? strerrorname_np(e) : "0", now.pte - base.pte, now.anon - base.anon,
            now.file - base.file, now.shmem - base.shmem,
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "AnonHugePages"),
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "FilePmdMapped"),
            smaps_kb((uintptr_t)p, (uintptr_t)p + SIZE, "ShmemPmdMapped"));
    }
    fwrite(out, 1, out_len, stdout);
    return 0;
}
