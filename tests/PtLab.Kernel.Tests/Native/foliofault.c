/*
 * What one read fault on a cold file mapping brings in and maps on the host: the page-cache folios
 * (their sizes, from /proc/kpageflags), the pages mapped (from /proc/self/pagemap), and the
 * counters (FilePmdMapped and Rss of the mapping's smaps entry, VmPTE and RssFile of
 * /proc/self/status).
 *
 * Usage: foliofault DIR MODE ADVICE TOUCHES [SHIFT [PAGES]]
 *   DIR     directory for the file (on the file system under test); the file is unlinked at once
 *   MODE    "private" or "shared"
 *   ADVICE  "none", "hugepage", "nohugepage", "random" or "sequential" (madvise before the fault)
 *   TOUCHES comma-separated steps in order: "rN" a load from page N of the mapping, "wN" a store,
 *           "dN" MADV_DONTNEED of page N, "DN" MADV_DONTNEED of the 2 MiB from page N, "uN"
 *           munmap of page N, "pN" mprotect of page N adding PROT_EXEC, "hN" MADV_NOHUGEPAGE of
 *           the whole mapping (N ignored); with a count, "N+C" for pages [N, N + C): "cN+C" one
 *           pread of them, "sN+C" read() of them in 128 KiB calls in order (as cat reads), "xN+C"
 *           POSIX_FADV_DONTNEED of them, "lN+C" mlock of them, "LN+C" munlock, "rN+C" a load
 *           from each in order, "kN+C" MADV_COLD of them, "oN+C" MADV_PAGEOUT; "zN" sleeps N ms (lets readahead I/O finish: mincore counts only
 *           pages whose read has completed)
 *   SHIFT   pages the mapping starts above a 2 MiB boundary (default 0)
 *   PAGES   the file's size in pages (default 2048: 8 MiB)
 * The file is written with 4 KiB pwrite calls, then fdatasync and POSIX_FADV_DONTNEED, so the page
 * cache starts empty; the mapping covers the whole file. Pages are numbered from the mapping's
 * start, which is also the file's.
 *
 * Output, one "key value" per line: step lines (the changes after each step), cached (pages in the
 * cache, mincore) and cached_range lines, mapped (pages present in pagemap), mapped_range (the
 * lowest and highest) and present_range lines (each run of present pages), folios (one line
 * "folio FIRST pages N head H tail T thp P mlocked M unevictable U" per cached folio, when
 * kpageflags can be read), locked_kb (smaps Locked), pmd_mapped_kb, rss_kb, d_vmpte_kb,
 * d_rssfile_kb, d_rssanon_kb (changes over all the steps).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_COLD
#define MADV_COLD 20
#define MADV_PAGEOUT 21
#endif

#define PAGE 4096UL
#define MAXPAGES 65536UL
static unsigned long NPAGES = 2048, SIZE = 2048 * PAGE;
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_THP 22
#define KPF_UNEVICTABLE 18
#define KPF_MLOCKED 33

static long proc_kb(const char *file, const char *key)
{
    char buf[8192];
    FILE *f = fopen(file, "r");
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(buf, sizeof buf, f))
        if (strncmp(buf, key, n) == 0 && buf[n] == ':')
            v = strtol(buf + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static long status_kb(const char *key)
{
    return proc_kb("/proc/self/status", key);
}

/* FilePmdMapped and Rss summed over the smaps entries that start in [lo, hi). */
static void smaps(uintptr_t lo, uintptr_t hi, long *pmd, long *rss, long *locked)
{
    char buf[512];
    FILE *f = fopen("/proc/self/smaps", "r");
    int in = 0;
    *pmd = *rss = *locked = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        unsigned long s, e;
        if (sscanf(buf, "%lx-%lx ", &s, &e) == 2 && strchr(buf, '-') < strchr(buf, ' ')) {
            in = s >= lo && s < hi;
            continue;
        }
        if (in && strncmp(buf, "Rss:", 4) == 0)
            *rss += strtol(buf + 4, NULL, 10);
        if (in && strncmp(buf, "Locked:", 7) == 0)
            *locked += strtol(buf + 7, NULL, 10);
        if (in && strncmp(buf, "FilePmdMapped:", 14) == 0)
            *pmd += strtol(buf + 14, NULL, 10);
    }
    if (f)
        fclose(f);
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: foliofault DIR private|shared ADVICE TOUCHES [SHIFT [PAGES]]\n");
        return 2;
    }
    int shared = strcmp(argv[2], "shared") == 0;
    int write = strchr(argv[4], 'w') != NULL;
    unsigned long shift = argc >= 6 ? strtoul(argv[5], NULL, 0) : 0;
    if (argc == 7) {
        NPAGES = strtoul(argv[6], NULL, 0);
        if (NPAGES == 0 || NPAGES > MAXPAGES) {
            fprintf(stderr, "PAGES must be 1..%lu\n", MAXPAGES);
            return 2;
        }
        SIZE = NPAGES * PAGE;
    }
    int advice = -1;
    if (strcmp(argv[3], "hugepage") == 0)
        advice = MADV_HUGEPAGE;
    else if (strcmp(argv[3], "nohugepage") == 0)
        advice = MADV_NOHUGEPAGE;
    else if (strcmp(argv[3], "random") == 0)
        advice = MADV_RANDOM;
    else if (strcmp(argv[3], "sequential") == 0)
        advice = MADV_SEQUENTIAL;

    char path[4096];
    snprintf(path, sizeof path, "%s/foliofault-%d", argv[1], getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    unlink(path);
    static char buf[PAGE];
    for (unsigned long off = 0; off < SIZE; off += PAGE) {
        memset(buf, (int)(off >> 12) | 1, PAGE);
        if (pwrite(fd, buf, PAGE, (off_t)off) != (ssize_t)PAGE) {
            perror("pwrite");
            return 1;
        }
    }
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);

    /* A 2 MiB-aligned place whose 1 GiB region (one PMD table) also holds a page touched before the
     * baseline, 2 MiB below the mapping: so the steps' VmPTE changes count PTE tables only. Without
     * it, about 1 run in 100 put the mapping alone in its GiB, and its first fault added the PMD
     * table too (4 kB more VmPTE). Reserve a GiB more than the mapping needs, so a place where the
     * page below and the whole mapping share one GiB always lies inside the reservation. */
    const uintptr_t M2 = 2UL << 20, G1 = 1UL << 30;
    size_t span = G1 + SIZE + shift * PAGE + 3 * M2;
    char *res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED) {
        perror("mmap reservation");
        return 1;
    }
    uintptr_t base = (((uintptr_t)res + M2 + M2 - 1) & ~(M2 - 1));
    if ((base - M2) / G1 != (base + SIZE + shift * PAGE - 1) / G1)
        base = ((base - M2) / G1 + 1) * G1 + M2;
    munmap(res, span);
    char *below = mmap((void *)(base - M2), PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (below == MAP_FAILED) {
        perror("mmap below");
        return 1;
    }
    *(volatile char *)below = 1;
    uintptr_t at = base + shift * PAGE;
    int prot = PROT_READ | (write ? PROT_WRITE : 0);
    char *p = mmap((void *)at, SIZE, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    if (advice >= 0 && madvise(p, SIZE, advice) != 0) {
        perror("madvise");
        return 1;
    }

    /* A second mapping of the file under MADV_RANDOM, never touched before the steps: mincore
     * of it shows the page cache however the first mapping is cut up; afterwards it maps the
     * cached pages one by one (a cached page faults in without a read, and MADV_RANDOM starts no
     * readahead), so their frames and folio sizes can be read. */
    char *q = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fd, 0);
    madvise(q, SIZE, MADV_RANDOM);
    static unsigned char vec[MAXPAGES];
    mincore(q, SIZE, vec);
    int cached0 = 0;
    for (unsigned long i = 0; i < NPAGES; i++)
        cached0 += vec[i] & 1;

    static char stepbuf[1 << 14];
    int steps = 0;
    /* Everything the steps' bookkeeping touches is touched once before the baseline. */
    memset(stepbuf, 0, sizeof stepbuf);
    snprintf(stepbuf, sizeof stepbuf, "step %c%lu d_vmpte_kb %ld\n", 'x', 1UL, status_kb("VmPTE"));
    static char rbuf[128 << 10];
    memset(rbuf, 0, sizeof rbuf);
    long pte0 = status_kb("VmPTE"), file0 = status_kb("RssFile"), anon0 = status_kb("RssAnon"), lock0 = proc_kb("/proc/meminfo", "Mlocked");
    if (lock0 < 0)
        lock0 = 0;
    for (char *t = argv[4]; *t;) {
        char kind = *t++;
        unsigned long page = strtoul(t, &t, 0), count = 1;
        if (*t == '+')
            count = strtoul(t + 1, &t, 0);
        if (kind != 'z' && (page >= NPAGES || count == 0 || count > NPAGES - page)) {
            fprintf(stderr, "pages %lu+%lu are outside the mapping\n", page, count);
            return 2;
        }
        char *at = p + page * PAGE;
        int rc = 0;
        if (kind == 'w')
            *(volatile char *)at = 7;
        else if (kind == 'r')
            for (unsigned long i = 0; i < count; i++)
                (void)*(volatile char *)(at + i * PAGE);
        else if (kind == 'c') {
            for (unsigned long i = 0; i < count && rc == 0; i += sizeof rbuf / PAGE) {
                size_t n = (count - i) * PAGE < sizeof rbuf ? (count - i) * PAGE : sizeof rbuf;
                rc = pread(fd, rbuf, n, (off_t)((page + i) * PAGE)) == (ssize_t)n ? 0 : -1;
            }
        } else if (kind == 's') {
            rc = lseek(fd, (off_t)(page * PAGE), SEEK_SET) < 0 ? -1 : 0;
            for (unsigned long i = 0; i < count && rc == 0; i += sizeof rbuf / PAGE) {
                size_t n = (count - i) * PAGE < sizeof rbuf ? (count - i) * PAGE : sizeof rbuf;
                rc = read(fd, rbuf, n) == (ssize_t)n ? 0 : -1;
            }
        } else if (kind == 'x')
            rc = posix_fadvise(fd, (off_t)(page * PAGE), (off_t)(count * PAGE), POSIX_FADV_DONTNEED);
        else if (kind == 'l')
            rc = mlock(at, count * PAGE);
        else if (kind == 'L')
            rc = munlock(at, count * PAGE);
        else if (kind == 'd')
            rc = madvise(at, PAGE, MADV_DONTNEED);
        else if (kind == 'D')
            rc = madvise(at, 2UL << 20, MADV_DONTNEED);
        else if (kind == 'u')
            rc = munmap(at, PAGE);
        else if (kind == 'p')
            rc = mprotect(at, PAGE, prot | PROT_EXEC);
        else if (kind == 'k')
            rc = madvise(at, count * PAGE, MADV_COLD);
        else if (kind == 'o')
            rc = madvise(at, count * PAGE, MADV_PAGEOUT);
        else if (kind == 'z')
            usleep((useconds_t)page * 1000);
        else if (kind == 'h')
            rc = madvise(p, SIZE, MADV_NOHUGEPAGE);
        else {
            fprintf(stderr, "unknown step '%c'\n", kind);
            return 2;
        }
        if (rc != 0) {
            perror("step");
            return 1;
        }
        /* Into a static buffer: stdout's buffer, allocated at its first use, would move RssAnon. */
        steps += snprintf(stepbuf + steps, sizeof stepbuf - (size_t)steps,
                          "step %c%lu+%lu d_vmpte_kb %ld d_rssfile_kb %ld d_rssanon_kb %ld d_mlocked_kb %ld\n", kind, page, count,
                          status_kb("VmPTE") - pte0, status_kb("RssFile") - file0, status_kb("RssAnon") - anon0,
                          proc_kb("/proc/meminfo", "Mlocked") < 0 ? 0 : proc_kb("/proc/meminfo", "Mlocked") - lock0);
        if (*t == ',')
            t++;
    }
    long pte1 = status_kb("VmPTE"), file1 = status_kb("RssFile"), anon1 = status_kb("RssAnon");

    long pmd, rss, locked;
    smaps((uintptr_t)p, (uintptr_t)p + SIZE, &pmd, &rss, &locked);
    mincore(q, SIZE, vec);
    int cached = 0;
    for (unsigned long i = 0; i < NPAGES; i++)
        cached += vec[i] & 1;

    static uint64_t pm[MAXPAGES];
    int pmfd = open("/proc/self/pagemap", O_RDONLY);
    pread(pmfd, pm, NPAGES * 8, (off_t)((uintptr_t)p / PAGE * 8));
    int mapped = 0;
    unsigned long lo = NPAGES, hi = 0;
    for (unsigned long i = 0; i < NPAGES; i++)
        if (pm[i] >> 63) {
            mapped++;
            if (i < lo)
                lo = i;
            hi = i + 1;
        }
    fputs(stepbuf, stdout);
    for (unsigned long i = 0; i < NPAGES;) {
        unsigned long j = i;
        while (j < NPAGES && (pm[j] >> 63) == (pm[i] >> 63))
            j++;
        if (pm[i] >> 63)
            printf("present_range %lu %lu\n", i, j);
        i = j;
    }
    printf("cached_before %d\ncached %d\nmapped %d\nmapped_range %lu %lu\n", cached0, cached, mapped, lo, hi);
    for (unsigned long i = 0; i < NPAGES;) {
        unsigned long j = i;
        while (j < NPAGES && (vec[j] & 1) == (vec[i] & 1))
            j++;
        if (vec[i] & 1)
            printf("cached_range %lu %lu\n", i, j);
        i = j;
    }

    for (unsigned long i = 0; i < NPAGES; i++)
        if (vec[i] & 1)
            (void)((volatile char *)q)[i * PAGE];
    pread(pmfd, pm, NPAGES * 8, (off_t)((uintptr_t)q / PAGE * 8));
    int kf = open("/proc/kpageflags", O_RDONLY);
    if (kf >= 0) {
        unsigned long i = 0;
        while (i < NPAGES) {
            uint64_t pfn = pm[i] & ((1ULL << 55) - 1);
            uint64_t fl = 0;
            if (!(pm[i] >> 63) || pfn == 0 || pread(kf, &fl, 8, (off_t)(pfn * 8)) != 8) {
                i++;
                continue;
            }
            /* Count the folio: head, then tails by pfn. */
            unsigned long n = 1;
            if (fl & (1ULL << KPF_COMPOUND_HEAD)) {
                uint64_t t;
                while (pread(kf, &t, 8, (off_t)((pfn + n) * 8)) == 8 && (t & (1ULL << KPF_COMPOUND_TAIL)))
                    n++;
            }
            printf("folio %lu pages %lu head %d tail %d thp %d mlocked %d unevictable %d\n", i, n, !!(fl & (1ULL << KPF_COMPOUND_HEAD)),
                   !!(fl & (1ULL << KPF_COMPOUND_TAIL)), !!(fl & (1ULL << KPF_THP)), !!(fl & (1ULL << KPF_MLOCKED)),
                   !!(fl & (1ULL << KPF_UNEVICTABLE)));
            i += (fl & (1ULL << KPF_COMPOUND_TAIL)) ? 1 : n;
        }
    }
    printf("locked_kb %ld\n", locked);
    printf("pmd_mapped_kb %ld\nrss_kb %ld\nd_vmpte_kb %ld\nd_rssfile_kb %ld\nd_rssanon_kb %ld\n", pmd, rss, pte1 - pte0,
           file1 - file0, anon1 - anon0);
    return 0;
}
