/*
 * ptlab-tracer: the half of `ptlab record` that perf cannot do. It follows a process tree with
 * ptrace and writes, to OUT, samples of /proc/PID/status with CLOCK_MONOTONIC times (the clock
 * `perf record -k CLOCK_MONOTONIC` stamps events with):
 *   - every INTERVAL_MS, one sample per live process of the tree;
 *   - at every exec (PTRACE_EVENT_EXEC stop: the new mm is built, no instruction of the new
 *     program has run), one sample and the whole of /proc/PID/maps: the initial layout;
 *   - at every thread's exit (PTRACE_EVENT_EXIT stop: do_exit has not yet run exit_mm, so the
 *     mm and its page tables are intact), one sample read through that thread's own
 *     /proc/PID/task/TID/status. The last of these is the process's last figure;
 *   - the page-cache residency of every regular file the tree maps, once per file, when the file
 *     first appears: at the exec stop (or attach) for the files of the layout, read through
 *     /proc/PID/map_files (the path where that fails), and at the entry of each mmap of a
 *     descriptor (exec mode only: the seccomp filter below also stops mmap calls whose fd is
 *     not -1), read through /proc/TID/fd/FD. Which pages are cached comes from cachestat()
 *     (Linux 6.5+; per range, halving ranges that are partly cached) or, without it, from
 *     mincore() over a temporary read-only mapping. The folio sizes come from mapping the cached
 *     runs here (MADV_RANDOM, then MADV_POPULATE_READ: no readahead, no read) and reading their
 *     frames' flags (/proc/self/pagemap and /proc/kpageflags, root only); the populate marks the
 *     pages accessed, the one change the snapshot makes. Only regular files are opened (a device
 *     or FIFO could react to an open);
 *   - every folio added to or deleted from the page cache of those files after they first
 *     appeared, by any process or kernel thread (filemap:mm_filemap_add_to_page_cache and
 *     mm_filemap_delete_from_page_cache, opened here system-wide with perf_event_open, one ring
 *     per CPU, CLOCK_MONOTONIC, filtered in the kernel to the inode numbers of the files seen so
 *     far; the filter grows before each file's residency is read, so no change between the two
 *     is missed). Needs root (or perf_event_paranoid -1 and read access to tracefs); without
 *     it the G line says why and no P line follows;
 *   - at every process_madvise call (exec mode only), the ranges of its iovec array, which perf's
 *     sys_enter_process_madvise cannot show (it has the array's address only). CMD starts under a
 *     seccomp filter that answers SECCOMP_RET_TRACE for process_madvise and allows every other
 *     call, so only those calls stop (PTRACE_EVENT_SECCOMP, at syscall entry, before the call's
 *     tracepoint); the tracer reads the array with process_vm_readv. The filter is inherited by
 *     every task of the tree; a filtered call with no tracer fails with ENOSYS, so the tracer
 *     never detaches in exec mode (PTRACE_O_EXITKILL: if it dies, the tree dies with it).
 *
 *   ptlab-tracer [-e FD] [-o FILE] OUT INTERVAL_MS exec CMD ARGS...   fork CMD under ptrace
 *   ptlab-tracer OUT INTERVAL_MS attach PID DURATION_MS   seize PID's threads, detach after DURATION_MS (0: until it exits)
 * -e FD: CMD's standard error is FD (the recorder's own, while the tracer's goes to perf's log);
 * -o FILE: CMD's standard output goes to FILE.
 *
 * Lines of OUT (fields separated by one space; times in ns of CLOCK_MONOTONIC):
 *   H ptlab-tracer 1 <tracer pid>
 *   R <time> <root pid> exec|attach     attach: the moment every thread was stopped for the layout read
 *   Q <time> <pid> <start> <end> <categories>   attach: a range of pages present or swapped out
 *                                         at that moment (hex; PAGEMAP_SCAN's PAGE_IS_* bits)
 *   Q <time> off <why>                    attach: those ranges could not be read
 *   T <time> <pid> <start> <end>          attach: a range where PTE tables (empty ones too) or
 *                                         PMD leaves exist at that moment (hex)
 *   T <time> off <why>                    attach: those ranges could not be read
 *   S <time> <pid> <tid> tick|exec|exit|attach <VmSize> <VmRSS> <RssAnon> <RssFile> <RssShmem> <VmSwap> <VmPTE>   (kB)
 *   M <time> <pid> <one /proc/PID/maps line, verbatim>
 *   K <time> <pid> <start> <end>          a VMA of the layout just read (after its M and C lines)
 *                                         that is sealed (VmFlags "sl" in /proc/PID/smaps; hex)
 *   X <time> <pid> <tid> <wait status the thread is exiting with>
 *   W <time> <pid> <wait status>          a process (thread-group leader) was reaped
 *   N <time> <pid> <tid>                  a task joined the tree (its tgid read from /proc)
 *   I <time> <signal>                     the tracer was asked to stop (SIGINT/SIGTERM)
 *   E <time> <message>                    a problem the recorder should report
 *   F <time> on|off <why>                 whether process_madvise ranges are captured (off: attach
 *                                         mode, or the seccomp filter could not be installed)
 *   V <time> <pid> <tid> <pidfd> <target pid> <advice> <flags> <iovec address> <vlen> <n> <base>:<len>...
 *                                         a process_madvise call at its entry: the target process
 *                                         the pidfd names (0 when unknown), then the n ranges read
 *                                         (hex); n is 0 when the array could not be read (the call
 *                                         fails with EFAULT) or vlen exceeds UIO_MAXIOV (EINVAL)
 *   C <time> <pid> <tid> <dev> <inode> <size> <n> <first>:<count>[:<order>]... <path>
 *                                         the page-cache residency of a file (dev hex major:minor,
 *                                         size in bytes) when it first appeared: n runs of cached
 *                                         pages (page index and page count, hex, and the folio
 *                                         order of the run's folios where frame flags could be
 *                                         read), then the path (the rest of the line)
 *   G <time> on|off <why>                 whether page-cache changes are recorded (P lines)
 *   O <time> on|off <why>                 whether the folio orders of cached runs can be read
 *                                         (/proc/self/pagemap frame numbers and /proc/kpageflags)
 *   P <time> <pid> <tid> a|d <dev> <inode> <index> <order>
 *                                         a folio of 2^order pages at page index <index> (hex) was
 *                                         added to (a) or deleted from (d) the page cache of the
 *                                         file <dev> (hex major:minor, the tracepoint's: the inode
 *                                         that owns the cache) <inode>, in the context of task
 *                                         <tid> of process <pid> (any process, not only the tree's).
 *                                         Written in batches: not in time order with other lines
 *   L <time> <n>                          n page-cache events were lost (a ring overflowed)
 *   A <time> <pid> <tid> <request> <target>   exec mode: a ptrace call (PTRACE_TRACEME, 0;
 *                                         PTRACE_ATTACH, 16; PTRACE_SEIZE, 0x4206) at its entry whose
 *                                         target (the caller for TRACEME) is a task of the tree: one
 *                                         this tracer already traces, so the kernel refuses it (EPERM)
 *   U <time> <pid>...                     exec mode, once: the command exited a second ago or more
 *                                         and these processes of its tree are still running (daemons,
 *                                         background jobs, build servers it started); the tracer
 *                                         follows them to their exit
 *   D <time>                              the end: the tree is gone or detached
 * Exit status: 0 when the tree was followed to its end, 3 when CMD could not be started, 4 when
 * ptrace failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/perf_event.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TASKS 65536

#ifndef __NR_process_madvise
#define __NR_process_madvise 440
#endif
#ifndef PTRACE_EVENT_SECCOMP
#define PTRACE_EVENT_SECCOMP 7
#endif
#ifndef PTRACE_O_TRACESECCOMP
#define PTRACE_O_TRACESECCOMP (1 << PTRACE_EVENT_SECCOMP)
#endif
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
#define UIO_MAXIOV_ 1024
#define PIDFD_SELF_THREAD_ (-10000)
#define PIDFD_SELF_THREAD_GROUP_ (-20000)

struct task {
    pid_t tid;
    pid_t tgid;
    int seen_stop;   /* 0 until the first stop of a task auto-attached by a clone event */
    int exiting;     /* its PTRACE_EVENT_EXIT stop was seen */
};

static struct task tasks[MAX_TASKS];
static int ntasks;
static FILE *out;
static int attach_mode;
static pid_t root;
static long long root_gone_at; /* exec mode: when the command's own process exited (0: not yet) */
static long long saw_sigint_delivery; /* a tracee got SIGINT/SIGTERM: the program is being stopped */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
}

static struct task *find(pid_t tid)
{
    for (int i = 0; i < ntasks; i++)
        if (tasks[i].tid == tid)
            return &tasks[i];
    return NULL;
}

static pid_t read_tgid(pid_t tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/status", tid);
    FILE *f = fopen(path, "r");
    pid_t tgid = tid;
    if (!f)
        return tgid;
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "Tgid:", 5)) {
            tgid = (pid_t)atoi(buf + 5);
            break;
        }
    fclose(f);
    return tgid;
}

static struct task *add(pid_t tid, pid_t tgid)
{
    struct task *t = find(tid);
    if (t)
        return t;
    if (ntasks == MAX_TASKS) {
        line("E %lld more than %d tasks at once: %d is not sampled\n", now_ns(), MAX_TASKS, tid);
        return NULL;
    }
    t = &tasks[ntasks++];
    t->tid = tid;
    t->tgid = tgid ? tgid : read_tgid(tid);
    t->seen_stop = 0;
    t->exiting = 0;
    line("N %lld %d %d\n", now_ns(), t->tgid, tid);
    return t;
}

static void drop(pid_t tid)
{
    for (int i = 0; i < ntasks; i++)
        if (tasks[i].tid == tid) {
            tasks[i] = tasks[--ntasks];
            return;
        }
}

/* One sample of the mm that task TID uses. Returns 0 when the task has no mm (any more). */
static int sample(pid_t tgid, pid_t tid, const char *why)
{
    static const char *keys[] = {"VmSize:", "VmRSS:", "RssAnon:", "RssFile:", "RssShmem:", "VmSwap:", "VmPTE:"};
    long long v[7];
    int have = 0;
    char path[96], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/status", tgid, tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    /* The kernel writes the whole file at the first read: the sample's time is taken right after
     * it, so events stamped before it happened before the figures were read (a time taken before
     * the open would be early by however long this thread waited for a CPU in between). */
    long long t = 0;
    while (fgets(buf, sizeof buf, f) && (t = t ? t : now_ns()))
        for (int k = 0; k < 7; k++)
            if (!strncmp(buf, keys[k], strlen(keys[k]))) {
                v[k] = atoll(buf + strlen(keys[k]));
                have |= 1 << k;
            }
    fclose(f);
    if (have != 0x7f)
        return 0;
    line("S %lld %d %d %s %lld %lld %lld %lld %lld %lld %lld\n", t, tgid, tid, why,
         v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    return 1;
}

/* ---- page-cache changes: filemap tracepoints, system-wide, filtered by inode ---- */

#define CACHE_RING_PAGES 256 /* 1 MiB of samples per CPU, drained at every pass of the main loop */

struct cache_ring {
    int cpu;
    int owner;                  /* the event that owns the ring (filter: inode 0, never matches) */
    int fd_add, fd_del;         /* the events of the current filter, writing to the owner's ring */
    struct perf_event_mmap_page *meta;
    char *data;
    size_t size;
};
/* One ring per CPU, for the whole recording; the events of each filter write to it. */
static struct cache_ring *rings;
static int nrings;
static int cache_add_id = -1, cache_del_id = -1;
static unsigned long long *watched; /* inode numbers in the filter */
static size_t nwatched, capwatched;

static int tracepoint_id(const char *name)
{
    static const char *roots[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};
    char path[256];
    for (int r = 0; r < 2; r++) {
        snprintf(path, sizeof path, "%s/events/filemap/%s/id", roots[r], name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int id = -1;
        if (fscanf(f, "%d", &id) != 1)
            id = -1;
        fclose(f);
        return id;
    }
    return -1;
}

static int open_cache_event(int id, int cpu, const char *filter)
{
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.type = PERF_TYPE_TRACEPOINT;
    a.config = (unsigned long long)id;
    a.sample_period = 1;
    a.sample_type = PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_RAW;
    a.disabled = 1;
    a.use_clockid = 1;
    a.clockid = CLOCK_MONOTONIC;
    a.wakeup_events = 1 << 20;
    int fd = (int)syscall(__NR_perf_event_open, &a, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd >= 0 && ioctl(fd, PERF_EVENT_IOC_SET_FILTER, filter) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Writes the P (and L) lines of every sample in the rings. */
static void cache_drain(void)
{
    for (int i = 0; i < nrings; i++) {
        struct cache_ring *r = &rings[i];
        unsigned long long head = __atomic_load_n(&r->meta->data_head, __ATOMIC_ACQUIRE);
        unsigned long long tail = r->meta->data_tail;
        while (tail + sizeof(struct perf_event_header) <= head) {
            unsigned char buf[512];
            struct perf_event_header h;
            for (size_t k = 0; k < sizeof h; k++)
                ((unsigned char *)&h)[k] = (unsigned char)r->data[(tail + k) % r->size];
            if (h.size < sizeof h || tail + h.size > head)
                break;
            size_t len = h.size < sizeof buf ? h.size : sizeof buf;
            for (size_t k = 0; k < len; k++)
                buf[k] = (unsigned char)r->data[(tail + k) % r->size];
            const unsigned char *b = buf + sizeof h;
            if (h.type == PERF_RECORD_SAMPLE && len >= sizeof h + 20 + 37) {
                /* pid, tid (u32 each), time (u64), raw size (u32), then the tracepoint's entry:
                 * common_type (u16) at 0, i_ino at 16, index at 24, s_dev (u32) at 32, order at 36 */
                unsigned int pid, tid, rawsize, sdev;
                unsigned long long time, ino, index;
                unsigned short type;
                memcpy(&pid, b, 4);
                memcpy(&tid, b + 4, 4);
                memcpy(&time, b + 8, 8);
                memcpy(&rawsize, b + 16, 4);
                const unsigned char *raw = b + 20;
                if (rawsize >= 37) {
                    memcpy(&type, raw, 2);
                    memcpy(&ino, raw + 16, 8);
                    memcpy(&index, raw + 24, 8);
                    memcpy(&sdev, raw + 32, 4);
                    line("P %lld %u %u %c %02x:%02x %llu %llx %u\n", (long long)time, pid, tid, type == cache_add_id ? 'a' : 'd',
                         sdev >> 20, sdev & 0xfffff, ino, index, raw[36]);
                }
            } else if (h.type == PERF_RECORD_LOST && len >= sizeof h + 16) {
                unsigned long long lost;
                memcpy(&lost, b + 8, 8);
                line("L %lld %llu\n", now_ns(), lost);
            }
            tail += h.size;
        }
        __atomic_store_n(&r->meta->data_tail, tail, __ATOMIC_RELEASE);
    }
}

/* Closes the events of the current filter (their samples stay in the rings). */
static void cache_close_filter(void)
{
    for (int i = 0; i < nrings; i++) {
        if (rings[i].fd_add >= 0)
            close(rings[i].fd_add);
        if (rings[i].fd_del >= 0)
            close(rings[i].fd_del);
        rings[i].fd_add = rings[i].fd_del = -1;
    }
}

/*
 * Opens both tracepoints on every CPU with FILTER, writing to that CPU's ring, and enables them,
 * then closes those of the previous filter: a tracepoint event takes its filter once (a second
 * PERF_EVENT_IOC_SET_FILTER fails with EEXIST), so a new filter is a new pair of events per CPU.
 * The new events run before the old ones go, so no change is missed (one may be written twice).
 * Returns 0, or -1 with errno (the previous events stay).
 */
static int cache_set_filter(const char *filter)
{
    int *fds = calloc((size_t)nrings * 2, sizeof *fds);
    if (!fds)
        return -1;
    for (int i = 0; i < 2 * nrings; i++)
        fds[i] = -1;
    int ok = 1, e = 0;
    for (int i = 0; i < nrings && ok; i++)
        for (int k = 0; k < 2 && ok; k++) {
            int fd = open_cache_event(k ? cache_del_id : cache_add_id, rings[i].cpu, filter);
            fds[2 * i + k] = fd;
            if (fd < 0 || ioctl(fd, PERF_EVENT_IOC_SET_OUTPUT, rings[i].owner) < 0)
                ok = 0, e = errno;
        }
    if (!ok) {
        for (int i = 0; i < 2 * nrings; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        free(fds);
        errno = e;
        return -1;
    }
    for (int i = 0; i < 2 * nrings; i++)
        ioctl(fds[i], PERF_EVENT_IOC_ENABLE, 0);
    cache_close_filter();
    for (int i = 0; i < nrings; i++) {
        rings[i].fd_add = fds[2 * i];
        rings[i].fd_del = fds[2 * i + 1];
    }
    free(fds);
    return 0;
}

/* Closes and unmaps every page-cache ring opened so far (PAGE: the page size they were mapped with). */
static void cache_rings_free(long page)
{
    for (int i = 0; i < nrings; i++) {
        close(rings[i].owner);
        munmap(rings[i].meta, rings[i].size + (size_t)page);
    }
    free(rings);
    rings = NULL;
    nrings = 0;
}

/* Opens a ring per CPU, owned by an event no file passes (inode 0), to learn whether the changes can be recorded. Writes the G line. */
static void cache_events_open(void)
{
    cache_add_id = tracepoint_id("mm_filemap_add_to_page_cache");
    cache_del_id = tracepoint_id("mm_filemap_delete_from_page_cache");
    if (cache_add_id < 0 || cache_del_id < 0) {
        line("G %lld off the filemap tracepoints are not in tracefs (not mounted, or not readable)\n", now_ns());
        return;
    }
    long cpus = sysconf(_SC_NPROCESSORS_CONF), page = sysconf(_SC_PAGESIZE);
    rings = calloc((size_t)cpus, sizeof *rings);
    if (!rings) {
        line("G %lld off out of memory\n", now_ns());
        return;
    }
    for (int c = 0; c < cpus; c++) {
        struct cache_ring *r = &rings[nrings];
        r->owner = open_cache_event(cache_add_id, c, "i_ino == 0");
        if (r->owner < 0 && errno == ENODEV)
            continue; /* an offline CPU */
        void *m = r->owner < 0 ? MAP_FAILED : mmap(NULL, (size_t)(CACHE_RING_PAGES + 1) * page, PROT_READ | PROT_WRITE, MAP_SHARED, r->owner, 0);
        if (m == MAP_FAILED) {
            line("G %lld off perf_event_open of the filemap tracepoints on CPU %d: %s\n", now_ns(), c, strerror(errno));
            if (r->owner >= 0)
                close(r->owner);
            cache_rings_free(page);
            return;
        }
        r->cpu = c;
        r->fd_add = r->fd_del = -1;
        r->meta = m;
        r->data = (char *)m + page;
        r->size = (size_t)CACHE_RING_PAGES * page;
        nrings++;
    }
    line("G %lld on %d CPUs\n", now_ns(), nrings);
}

/*
 * Adds the N inode numbers INOS to the events' filter. The filter names inode numbers only: the
 * tracepoints' device is the one of the inode that owns the cache, which for overlayfs is a
 * layer's, not the mapping's; the recorder drops changes of files it cannot match. Past the
 * kernel's filter length (a page), the filter takes the inodes from the lowest to the highest
 * watched: a superset, matched again by the recorder.
 */
static void cache_watch(const unsigned long long *inos, size_t n)
{
    if (nrings == 0)
        return;
    size_t before = nwatched;
    for (size_t k = 0; k < n; k++) {
        int known = 0;
        for (size_t i = 0; i < nwatched && !known; i++)
            known = watched[i] == inos[k];
        if (known)
            continue;
        if (nwatched == capwatched) {
            size_t cap = capwatched ? 2 * capwatched : 64;
            unsigned long long *w = realloc(watched, cap * sizeof *w);
            if (!w)
                break;
            watched = w;
            capwatched = cap;
        }
        watched[nwatched++] = inos[k];
    }
    if (nwatched == before)
        return;
    static char filter[4000];
    size_t at = 0;
    unsigned long long lo = ~0ULL, hi = 0;
    int fits = 1;
    for (size_t i = 0; i < nwatched; i++) {
        int w = snprintf(filter + at, sizeof filter - at, "%si_ino == %llu", i ? " || " : "", watched[i]);
        if (w < 0 || (size_t)w >= sizeof filter - at)
            fits = 0;
        else
            at += (size_t)w;
        lo = watched[i] < lo ? watched[i] : lo;
        hi = watched[i] > hi ? watched[i] : hi;
    }
    if (!fits)
        snprintf(filter, sizeof filter, "i_ino >= %llu && i_ino <= %llu", lo, hi);
    if (cache_set_filter(filter) < 0)
        line("E %lld the page-cache events with filter '%.64s...' could not be opened: %s\n", now_ns(), filter, strerror(errno));
}

/* The end of the recording: no more changes, every one written. */
static void cache_events_close(void)
{
    cache_close_filter();
    cache_drain();
    cache_rings_free(sysconf(_SC_PAGESIZE));
}

/* ---- page-cache residency of mapped files ---- */

struct cachestat_range_ {
    unsigned long long off, len;
};
struct cachestat_ {
    unsigned long long nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* The files whose residency was written: one line per file for the whole recording. */
struct seen_file {
    unsigned long long dev, ino;
};
static struct seen_file *seen;
static size_t nseen, capseen;

static int seen_before(unsigned long long dev, unsigned long long ino)
{
    for (size_t i = 0; i < nseen; i++)
        if (seen[i].dev == dev && seen[i].ino == ino)
            return 1;
    if (nseen == capseen) {
        size_t cap = capseen ? 2 * capseen : 256;
        struct seen_file *n = realloc(seen, cap * sizeof *n);
        if (!n)
            return 1; /* out of memory: take no more snapshots */
        seen = n;
        capseen = cap;
    }
    seen[nseen].dev = dev;
    seen[nseen].ino = ino;
    nseen++;
    return 0;
}

/* Runs of cached pages, merged as they are found in index order. */
struct runs {
    unsigned long long *first, *count;
    int *order; /* the folio order of the run's folios, -1 when unknown */
    size_t n, cap;
    int failed;
};

static void add_run(struct runs *r, unsigned long long first, unsigned long long count, int order)
{
    if (r->n && r->first[r->n - 1] + r->count[r->n - 1] == first && r->order[r->n - 1] == order) {
        r->count[r->n - 1] += count;
        return;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        unsigned long long *f = realloc(r->first, cap * sizeof *f);
        if (f)
            r->first = f;
        unsigned long long *c = f ? realloc(r->count, cap * sizeof *c) : NULL;
        if (c)
            r->count = c;
        int *o = c ? realloc(r->order, cap * sizeof *o) : NULL;
        if (!o) {
            r->failed = ENOMEM;
            return;
        }
        r->order = o;
        r->cap = cap;
    }
    r->first[r->n] = first;
    r->count[r->n] = count;
    r->order[r->n] = order;
    r->n++;
}

static int no_cachestat;

/* Cached pages of [first, first + n) (cachestat counts the part of each folio inside the range), or -1. */
static long long cached_in(int fd, unsigned long long first, unsigned long long n, struct runs *r)
{
    struct cachestat_range_ range = {first << 12, n << 12};
    struct cachestat_ cs;
    if (syscall(__NR_cachestat, fd, &range, &cs, 0) < 0) {
        r->failed = errno;
        return -1;
    }
    return (long long)cs.nr_cache;
}

/* The runs of [first, first + n), of which `cached` pages are in the cache: halves until each part is all or nothing. */
static void runs_in(int fd, unsigned long long first, unsigned long long n, long long cached, struct runs *r)
{
    if (r->failed || cached <= 0)
        return;
    if ((unsigned long long)cached >= n) {
        add_run(r, first, n, -1);
        return;
    }
    unsigned long long half = n / 2;
    long long left = cached_in(fd, first, half, r);
    if (left < 0)
        return;
    runs_in(fd, first, half, left, r);
    runs_in(fd, first + half, n - half, cached - left, r);
}

static void runs_by_mincore(int fd, unsigned long long pages, struct runs *r)
{
    void *p = mmap(NULL, pages << 12, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        r->failed = errno;
        return;
    }
    unsigned char *vec = malloc(pages);
    if (!vec || mincore(p, pages << 12, vec) < 0) {
        r->failed = vec ? errno : ENOMEM;
    } else {
        for (unsigned long long i = 0; i < pages; i++)
            if (vec[i] & 1)
                add_run(r, i, 1, -1);
    }
    free(vec);
    munmap(p, pages << 12);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#define KPF_COMPOUND_HEAD_ 15
#define KPF_COMPOUND_TAIL_ 16

static int pagemap_fd = -2, kpageflags_fd = -2;

/*
 * Writes the O line: whether this tracer can read folio orders, i.e. open /proc/kpageflags and
 * see frame numbers in /proc/self/pagemap (both need CAP_SYS_ADMIN; without it pagemap reads
 * the frame numbers as 0).
 */
static void folio_orders_probe(void)
{
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    kpageflags_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    static volatile char probe = 1;
    unsigned long long entry = 0;
    const char *why = NULL;
    if (pagemap_fd < 0)
        why = "/proc/self/pagemap cannot be opened";
    else if (kpageflags_fd < 0)
        why = "/proc/kpageflags cannot be opened (it needs CAP_SYS_ADMIN)";
    else if (probe != 1 || pread(pagemap_fd, &entry, 8, (off_t)((unsigned long)&probe >> 12) * 8) != 8 || (entry & ((1ULL << 55) - 1)) == 0)
        why = "/proc/self/pagemap hides frame numbers (it shows them to CAP_SYS_ADMIN only)";
    if (why)
        line("O %lld off %s\n", now_ns(), why);
    else
        line("O %lld on\n", now_ns());
}

/*
 * The folio orders of the cached runs R of the file FD of PAGES pages, where /proc/self/pagemap
 * gives frame numbers (CAP_SYS_ADMIN) and /proc/kpageflags their flags: the runs are mapped
 * here, read-only, MADV_RANDOM (so that a fault on a page with the readahead mark starts no
 * readahead: no page is added to the cache), and populated (MADV_POPULATE_READ: the pages are
 * cached, so nothing is read). A compound head followed by its tails is one folio. Each run is
 * then split where the order changes. On any failure the runs stay as they are, order unknown.
 */
static void folio_orders(int fd, unsigned long long pages, struct runs *r)
{
    if (pagemap_fd == -2)
        pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (kpageflags_fd == -2)
        kpageflags_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    if (pagemap_fd < 0 || kpageflags_fd < 0 || r->n == 0)
        return;
    char *p = mmap(NULL, pages << 12, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return;
    struct runs out = {0};
    unsigned long long *pfn = NULL, *flags = NULL;
    size_t cap = 0;
    int ok = madvise(p, pages << 12, MADV_RANDOM) == 0;
    for (size_t k = 0; ok && k < r->n; k++) {
        unsigned long long first = r->first[k], n = r->count[k];
        if (n > cap) {
            free(pfn);
            free(flags);
            cap = n;
            pfn = malloc(cap * sizeof *pfn);
            flags = malloc(cap * sizeof *flags);
            if (!pfn || !flags) {
                ok = 0;
                break;
            }
        }
        if (madvise(p + (first << 12), n << 12, MADV_POPULATE_READ) < 0 ||
            pread(pagemap_fd, pfn, n * 8, (off_t)(((unsigned long)p >> 12) + first) * 8) != (ssize_t)(n * 8)) {
            ok = 0;
            break;
        }
        for (unsigned long long i = 0; i < n && ok; i++) {
            unsigned long long f = pfn[i] & ((1ULL << 55) - 1);
            if (!(pfn[i] >> 63) || f == 0) {
                ok = 0; /* not present, or frame numbers hidden (no CAP_SYS_ADMIN) */
                break;
            }
            /* One read for each stretch of consecutive frames. */
            unsigned long long j = i + 1;
            while (j < n && (pfn[j] & ((1ULL << 55) - 1)) == f + (j - i))
                j++;
            if (pread(kpageflags_fd, flags + i, (j - i) * 8, (off_t)(f * 8)) != (ssize_t)((j - i) * 8))
                ok = 0;
            i = j - 1;
        }
        for (unsigned long long i = 0; i < n && ok;) {
            unsigned long long size = 1;
            if (flags[i] >> KPF_COMPOUND_HEAD_ & 1) {
                unsigned long long base = pfn[i] & ((1ULL << 55) - 1);
                while (i + size < n && (flags[i + size] >> KPF_COMPOUND_TAIL_ & 1) &&
                       (pfn[i + size] & ((1ULL << 55) - 1)) == base + size)
                    size++;
            }
            int order = 0;
            while ((1ULL << (order + 1)) <= size)
                order++;
            /* A folio's pages that a run cut (its head before the run): taken as order-0 pages. */
            if ((1ULL << order) != size || ((first + i) & (size - 1)) != 0)
                order = 0, size = 1;
            add_run(&out, first + i, size, order);
            i += size;
        }
    }
    munmap(p, pages << 12);
    free(pfn);
    free(flags);
    if (ok && !out.failed) {
        free(r->first);
        free(r->count);
        free(r->order);
        *r = out;
    } else {
        free(out.first);
        free(out.count);
        free(out.order);
    }
}

/*
 * Writes the C line of the open regular file FD (whose device and inode are DEV and INO, as the
 * kernel's mapping records name them) for task TID of process PID, unless the file was written
 * before. The time is taken before the file is looked at: pages the program's own faults bring
 * in afterwards cannot have been counted.
 */
static void snapshot(pid_t pid, pid_t tid, int fd, unsigned long long dev, unsigned long long ino, const char *path)
{
    struct stat st;
    long long t = now_ns();
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || seen_before(dev, ino))
        return;
    cache_watch(&ino, 1);
    unsigned long long pages = ((unsigned long long)st.st_size + 4095) >> 12;
    struct runs r = {0};
    if (pages > 0) {
        long long all = no_cachestat ? -1 : cached_in(fd, 0, pages, &r);
        if (all < 0 && r.failed == ENOSYS) {
            no_cachestat = 1;
            r.failed = 0;
        }
        if (no_cachestat)
            runs_by_mincore(fd, pages, &r);
        else
            runs_in(fd, 0, pages, all, &r);
        if (!r.failed)
            folio_orders(fd, pages, &r);
    }
    if (r.failed) {
        line("E %lld page-cache residency of %s: %s\n", t, path, strerror(r.failed));
    } else {
        line("C %lld %d %d %02llx:%02llx %llu %lld %zu", t, pid, tid, dev >> 20, dev & 0xfffff, ino, (long long)st.st_size, r.n);
        for (size_t i = 0; i < r.n; i++)
            if (r.order[i] < 0)
                line(" %llx:%llx", r.first[i], r.count[i]);
            else
                line(" %llx:%llx:%x", r.first[i], r.count[i], r.order[i]);
        line(" %s\n", path);
    }
    free(r.first);
    free(r.count);
    free(r.order);
}

/*
 * The device of the super block that descriptor FD of task TID lives on, as /proc/PID/maps and
 * perf's MMAP2 will name it (file_user_inode()->i_sb->s_dev): the device of its mount in the
 * task's mountinfo (fdinfo's mnt_id). stat's st_dev is not it on btrfs (a subvolume's anonymous
 * device) nor, for some layouts, on overlayfs. Returns 0 when it cannot be read.
 */
static unsigned long long mount_dev(pid_t tid, int fd)
{
    char path[96], buf[4096 + 256];
    snprintf(path, sizeof path, "/proc/%d/fdinfo/%d", tid, fd);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long mnt = -1;
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "mnt_id:", 7)) {
            mnt = atol(buf + 7);
            break;
        }
    fclose(f);
    if (mnt < 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/mountinfo", tid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long long dev = 0;
    while (fgets(buf, sizeof buf, f)) {
        long id, parent;
        unsigned int maj, min;
        if (sscanf(buf, "%ld %ld %u:%u", &id, &parent, &maj, &min) == 4 && id == mnt) {
            dev = ((unsigned long long)maj << 20) | min;
            break;
        }
    }
    fclose(f);
    return dev;
}

/* The residency of the file task TID maps through descriptor FD (an mmap entry stop). */
static void snapshot_fd(pid_t pid, pid_t tid, int fd)
{
    char link[96], target[4096];
    struct stat st;
    snprintf(link, sizeof link, "/proc/%d/fd/%d", tid, fd);
    if (stat(link, &st) < 0 || !S_ISREG(st.st_mode))
        return; /* a bad descriptor (the call fails), a device, a FIFO: nothing to read */
    /* stat's device to the mount's, looked up once per device (the pair does not change). */
    static unsigned long long stat_devs[64], mount_devs[64];
    static size_t ndevs;
    unsigned long long sdev = ((unsigned long long)major(st.st_dev) << 20) | minor(st.st_dev), dev = 0;
    for (size_t i = 0; i < ndevs && !dev; i++)
        if (stat_devs[i] == sdev)
            dev = mount_devs[i];
    if (!dev) {
        dev = mount_dev(tid, fd);
        if (!dev)
            dev = sdev;
        else if (ndevs < sizeof stat_devs / sizeof stat_devs[0]) {
            stat_devs[ndevs] = sdev;
            mount_devs[ndevs++] = dev;
        }
    }
    for (size_t i = 0; i < nseen; i++)
        if (seen[i].dev == dev && seen[i].ino == st.st_ino)
            return;
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    int f = open(link, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return;
    snapshot(pid, tid, f, dev, st.st_ino, target);
    close(f);
}

/* The residency of the files of the layout just read (one maps line at a time). */
static void snapshot_maps_line(pid_t pid, const char *l)
{
    unsigned long start, end, off;
    unsigned int maj, min;
    unsigned long long ino;
    char perms[8];
    int at = 0;
    if (sscanf(l, "%lx-%lx %7s %lx %x:%x %llu %n", &start, &end, perms, &off, &maj, &min, &ino, &at) < 7 || ino == 0)
        return;
    unsigned long long dev = ((unsigned long long)maj << 20) | min;
    for (size_t i = 0; i < nseen; i++)
        if (seen[i].dev == dev && seen[i].ino == ino)
            return;
    char path[4096 + 64];
    snprintf(path, sizeof path, "%s", l + at);
    path[strcspn(path, "\n")] = 0;
    char mf[128];
    snprintf(mf, sizeof mf, "/proc/%d/map_files/%lx-%lx", pid, start, end);
    struct stat st;
    int f = open(mf, O_RDONLY | O_CLOEXEC);
    if (f < 0 && path[0] == '/') {
        /* No map_files (not root): the path, if it still names the mapped file. */
        if (stat(path, &st) == 0 && st.st_ino == ino && major(st.st_dev) == maj && minor(st.st_dev) == min && S_ISREG(st.st_mode))
            f = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (f < 0)
        return;
    snapshot(pid, pid, f, dev, ino, path);
    close(f);
}

/* Whether the kernel can seal VMAs (mseal, Linux 6.10+): only then can a layout hold sealed ones. */
static int kernel_seals(void)
{
    static int known = -1;
    if (known < 0) {
        struct utsname u;
        int major = 0, minor = 0;
        known = uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 && (major > 6 || (major == 6 && minor >= 10));
    }
    return known;
}

/*
 * The sealed VMAs of the layout just read: one K line each, stamped after the layout's residency
 * lines (the process is still stopped, so its layout is the one read). maps does not show a seal,
 * smaps does (its VmFlags line, "sl"); reading smaps walks the page tables of every VMA, so only a
 * kernel that can seal is asked.
 */
static void sealed(pid_t pid)
{
    if (!kernel_seals())
        return;
    long long t = now_ns();
    char path[64], buf[4096 + 256];
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        line("E %lld cannot read %s: %s\n", t, path, strerror(errno));
        return;
    }
    unsigned long start = 0, end = 0;
    while (fgets(buf, sizeof buf, f)) {
        size_t n = strlen(buf);
        if (n && buf[n - 1] != '\n') { /* a long path: only the head of a line is looked at */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
        }
        unsigned long s, e;
        char dash;
        /* A VMA's first line is "start-end perms ..."; its fields are "Name: value". */
        if (sscanf(buf, "%lx%c%lx ", &s, &dash, &e) == 3 && dash == '-') {
            start = s;
            end = e;
        } else if (strncmp(buf, "VmFlags:", 8) == 0 && strstr(buf + 8, " sl ") && end > start) {
            line("K %lld %d %lx %lx\n", t, pid, start, end);
        }
    }
    fclose(f);
}

static void maps(pid_t pid)
{
    char path[64], buf[4096 + 256];
    static char *lines[65536];
    size_t nlines = 0;
    long long t = now_ns();
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        line("E %lld cannot read %s: %s\n", t, path, strerror(errno));
        return;
    }
    while (fgets(buf, sizeof buf, f)) {
        size_t n = strlen(buf);
        if (n && buf[n - 1] != '\n') { /* a path longer than the buffer: keep the head */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            buf[n - 1] = '\n';
        }
        line("M %lld %d %s", t, pid, buf);
        if (nlines < sizeof lines / sizeof lines[0] && (lines[nlines] = strdup(buf)))
            nlines++;
    }
    fclose(f);
    /* After the whole layout: the residency lines follow its M lines. The layout's files are
     * watched for changes at once first (one new filter rather than one per file). */
    static unsigned long long inos[65536];
    size_t ninos = 0;
    for (size_t i = 0; i < nlines; i++) {
        unsigned long start, end, off;
        unsigned int maj, min;
        char perms[8];
        if (sscanf(lines[i], "%lx-%lx %7s %lx %x:%x %llu", &start, &end, perms, &off, &maj, &min, &inos[ninos]) == 7 && inos[ninos] != 0)
            ninos++;
    }
    cache_watch(inos, ninos);
    for (size_t i = 0; i < nlines; i++) {
        snapshot_maps_line(pid, lines[i]);
        free(lines[i]);
    }
    sealed(pid);
}

/* One sample per process (thread group) of the tree, through any live thread of it. */
static void sample_all(const char *why)
{
    pid_t done[MAX_TASKS];
    int ndone = 0;
    for (int i = 0; i < ntasks; i++) {
        struct task *t = &tasks[i];
        if (t->exiting)
            continue;
        int dup = 0;
        for (int j = 0; j < ndone; j++)
            if (done[j] == t->tgid)
                dup = 1;
        if (dup)
            continue;
        if (sample(t->tgid, t->tid, why))
            done[ndone++] = t->tgid;
    }
}

/*
 * Installs, in the calling process (the child, before it execs CMD), a filter that stops
 * process_madvise, ptrace, and mmap of a descriptor, for the tracer and allows everything else. Without CAP_SYS_ADMIN the kernel
 * wants no_new_privs first; as root it is not set (it would change what a setuid CMD can do).
 * Returns 0, or the errno of the failure.
 */
static int install_filter(void)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_madvise, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ptrace, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 4),
        /* mmap's fd (args[4], the low 32 bits on little-endian x86-64): -1 maps no file. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof code / sizeof code[0], code};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0)
        return 0;
    if (errno != EACCES)
        return errno;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return errno;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0 ? 0 : errno;
}

/* The process a pidfd of task TID names, from /proc/TID/fdinfo/FD's "Pid:" line; 0 when unknown. */
static pid_t pidfd_target(pid_t tgid, pid_t tid, int pidfd)
{
    if (pidfd == PIDFD_SELF_THREAD_ || pidfd == PIDFD_SELF_THREAD_GROUP_)
        return tgid;
    if (pidfd < 0)
        return 0;
    char path[96], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/fdinfo/%d", tgid, tid, pidfd);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long pid = 0;
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "Pid:", 4)) {
            pid = atol(buf + 4);
            break;
        }
    fclose(f);
    /* -1: the process is gone; 0: not in our pid namespace. A thread's pidfd names its process. */
    return pid > 0 ? read_tgid((pid_t)pid) : 0;
}

/*
 * A seccomp stop: an mmap of a descriptor (its file's residency), a ptrace call (its A line, when
 * the tree's being traced here refuses it), or a process_madvise call (its V line).
 */
static void seccomp_entry(struct task *t, pid_t tid)
{
    struct user_regs_struct regs;
    long long now = now_ns();
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0) {
        line("E %lld PTRACE_GETREGS of %d at a filtered call: %s\n", now, tid, strerror(errno));
        return;
    }
    pid_t tgid = t ? t->tgid : read_tgid(tid);
    if (regs.orig_rax == __NR_mmap) {
        if (!(regs.r10 & MAP_ANONYMOUS))
            snapshot_fd(tgid, tid, (int)regs.r8);
        return;
    }
    if (regs.orig_rax == __NR_ptrace) {
        /* A task has one tracer: TRACEME from a task of the tree, or ATTACH/SEIZE of one, fails
         * with EPERM because this tracer is it. The program then runs differently (a debugger
         * without its inferior, LeakSanitizer's stop-the-world), which the recorder says. */
        long request = (long)regs.rdi;
        pid_t target = request == PTRACE_TRACEME ? tid : (pid_t)regs.rsi;
        if ((request == PTRACE_TRACEME || request == PTRACE_ATTACH || request == 0x4206) && find(target))
            line("A %lld %d %d %ld %d\n", now, tgid, tid, request, target);
        return;
    }
    if (regs.orig_rax != __NR_process_madvise)
        return;
    int pidfd = (int)regs.rdi;
    unsigned long long vec = regs.rsi, vlen = regs.rdx;
    static struct iovec iov[UIO_MAXIOV_];
    long n = 0;
    if (vlen > 0 && vlen <= UIO_MAXIOV_) {
        struct iovec local = {iov, vlen * sizeof(struct iovec)};
        struct iovec remote = {(void *)vec, vlen * sizeof(struct iovec)};
        ssize_t got = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        n = got == (ssize_t)(vlen * sizeof(struct iovec)) ? (long)vlen : 0;
    }
    line("V %lld %d %d %d %d %d %u 0x%llx %llu %ld", now, tgid, tid, pidfd, pidfd_target(tgid, tid, pidfd),
         (int)regs.r10, (unsigned)regs.r8, vec, vlen, n);
    for (long i = 0; i < n; i++)
        line(" %lx:%lx", (unsigned long)iov[i].iov_base, (unsigned long)iov[i].iov_len);
    line("\n");
}

static const long opts_base = PTRACE_O_TRACEEXIT | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK |
                              PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC;

static int handle_stop(pid_t tid, int status)
{
    int sig = WSTOPSIG(status);
    int event = (unsigned)status >> 16;
    struct task *t = find(tid);
    if (!t)
        t = add(tid, 0);
    if (event) {
        unsigned long msg = 0;
        ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg);
        switch (event) {
        case PTRACE_EVENT_CLONE:
        case PTRACE_EVENT_FORK:
        case PTRACE_EVENT_VFORK:
            add((pid_t)msg, 0);
            break;
        case PTRACE_EVENT_EXEC: {
            /* A non-leader thread that execs takes the leader's tid; every other thread is gone. */
            pid_t tgid = t ? t->tgid : tid;
            for (int i = ntasks - 1; i >= 0; i--)
                if (tasks[i].tgid == tgid && tasks[i].tid != tid)
                    tasks[i] = tasks[--ntasks];
            maps(tid);
            sample(tid, tid, "exec");
            break;
        }
        case PTRACE_EVENT_EXIT:
            if (t) {
                t->exiting = 1;
                sample(t->tgid, tid, "exit");
                line("X %lld %d %d %lu\n", now_ns(), t->tgid, tid, msg);
            }
            break;
        case PTRACE_EVENT_SECCOMP:
            seccomp_entry(t, tid);
            break;
        case PTRACE_EVENT_STOP:
            break;
        }
        return ptrace(PTRACE_CONT, tid, 0, 0);
    }
    if (t && !t->seen_stop && sig == SIGSTOP && !attach_mode) {
        /* The SIGSTOP a task auto-attached by a clone event starts with: not the program's. */
        t->seen_stop = 1;
        return ptrace(PTRACE_CONT, tid, 0, 0);
    }
    if (t)
        t->seen_stop = 1;
    if (attach_mode) {
        /* Seized tasks report group-stops as PTRACE_EVENT_STOP (handled above); this is a signal. */
        if (sig == SIGINT || sig == SIGTERM)
            saw_sigint_delivery = 1;
        return ptrace(PTRACE_CONT, tid, 0, sig);
    }
    siginfo_t si;
    if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) < 0 && errno == EINVAL) {
        /* A group-stop (not a signal delivery): stop signals are not honoured while recording. */
        return ptrace(PTRACE_CONT, tid, 0, 0);
    }
    if (sig == SIGINT || sig == SIGTERM)
        saw_sigint_delivery = 1;
    return ptrace(PTRACE_CONT, tid, 0, sig);
}

static int seize_all(pid_t pid)
{
    /* Threads can be created while we seize: repeat until a pass finds no new thread. */
    int added = 1, any = 0;
    while (added) {
        added = 0;
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task", pid);
        DIR *d = opendir(path);
        if (!d)
            return any ? 0 : -1;
        struct dirent *e;
        while ((e = readdir(d))) {
            pid_t tid = (pid_t)atoi(e->d_name);
            if (tid <= 0 || find(tid))
                continue;
            if (ptrace(PTRACE_SEIZE, tid, 0, (void *)opts_base) < 0) {
                if (errno == ESRCH)
                    continue;
                closedir(d);
                return -1;
            }
            add(tid, pid);
            added = 1;
            any = 1;
        }
        closedir(d);
    }
    return 0;
}

/*
 * PAGEMAP_SCAN (Linux 6.7+, include/uapi/linux/fs.h), defined here for headers older than the
 * kernel. Read-only: no write-protect flag is passed, so the scan changes nothing in the target.
 */
struct pm_page_region {
    unsigned long long start, end, categories;
};
struct pm_scan_args {
    unsigned long long size, flags, start, end, walk_end, vec, vec_len, max_pages;
    unsigned long long category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PM_PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_args)
#define PM_IS_WRITTEN (1ULL << 1)
#define PM_IS_FILE (1ULL << 2)
#define PM_IS_PRESENT (1ULL << 3)
#define PM_IS_SWAPPED (1ULL << 4)
#define PM_IS_PFNZERO (1ULL << 5)
#define PM_IS_HUGE (1ULL << 6)
#define PM_TASK_SIZE 0x7ffffffff000ULL

/*
 * Attach: the pages the process has at the moment of the layout (present or swapped entries),
 * as Q lines of ranges with the kernel's PAGE_IS_* categories, so that the replay starts from
 * the tables they need rather than from none. 512 regions a call (one walk of the kernel's bounce
 * buffer), resumed at walk_end. Without PAGEMAP_SCAN one "Q <time> off <why>" line says so.
 */
/* One PAGEMAP_SCAN pass over the whole user address space: a line "<letter> <time> <pid> <start>
 * <end>" per region (and its categories with `categories`), or "<letter> <time> off <why>". */
static void scan_pass(int fd, pid_t pid, char letter, unsigned long long mask, unsigned long long anyof,
                      unsigned long long ret, int categories)
{
    static struct pm_page_region vec[512];
    unsigned long long at = 0;
    while (at < PM_TASK_SIZE) {
        struct pm_scan_args a = {
            .size = sizeof a, .start = at, .end = PM_TASK_SIZE,
            .vec = (unsigned long long)(unsigned long)vec, .vec_len = 512,
            .category_mask = mask, .category_anyof_mask = anyof, .return_mask = ret,
        };
        long n = ioctl(fd, PM_PAGEMAP_SCAN, &a);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            line("%c %lld off PAGEMAP_SCAN: %s\n", letter, now_ns(), errno == ENOTTY || errno == EINVAL ? "not in this kernel (Linux 6.7+)" : strerror(errno));
            return;
        }
        long long t = now_ns();
        for (long i = 0; i < n; i++) {
            if (categories)
                line("%c %lld %d %llx %llx %llx\n", letter, t, pid, vec[i].start, vec[i].end, vec[i].categories);
            else
                line("%c %lld %d %llx %llx\n", letter, t, pid, vec[i].start, vec[i].end);
        }
        if (a.walk_end <= at)
            return;
        at = a.walk_end;
    }
}

static void resident(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        line("Q %lld off cannot open %s: %s\n", now_ns(), path, strerror(errno));
        line("T %lld off cannot open %s: %s\n", now_ns(), path, strerror(errno));
        return;
    }
    scan_pass(fd, pid, 'Q', 0, PM_IS_PRESENT | PM_IS_SWAPPED, PM_IS_PRESENT | PM_IS_SWAPPED | PM_IS_FILE | PM_IS_PFNZERO | PM_IS_HUGE, 1);
    /* Then where PTE tables exist, empty ones included: asked for PAGE_IS_WRITTEN alone (in both
     * masks), the scan takes its fast path, which reports every entry of an existing PTE table,
     * pte_none ones too, and a PMD leaf as its whole range, and nothing where there is no table. */
    scan_pass(fd, pid, 'T', PM_IS_WRITTEN, 0, PM_IS_WRITTEN, 0);
    close(fd);
}

/*
 * Attach: every seized thread is interrupted and waited for, so that the layout read next is one
 * moment of the process (no thread maps, unmaps or faults while /proc/PID/maps is read). A task
 * stops only on its way back to user mode, so every fault and address-space call a thread began
 * before the stop has finished, and perf stamped it before the moment returned here: those
 * events are already in the layout. The stops are kept in held[] and handled (each thread
 * resumed, a signal passed on) once the layout is read. Returns the number held; a thread that
 * does not stop within two seconds (an uninterruptible wait) is left running, with an E line.
 */
struct held_stop {
    pid_t tid;
    int status;
};
static struct held_stop held[MAX_TASKS];

static int hold_all(long long *moment)
{
    static pid_t interrupted[MAX_TASKS];
    int waiting = 0, nheld = 0;
    for (int i = 0; i < ntasks; i++)
        if (ptrace(PTRACE_INTERRUPT, tasks[i].tid, 0, 0) == 0)
            interrupted[waiting++] = tasks[i].tid;
    long long give_up = now_ns() + 2000000000LL;
    while (waiting > 0 && nheld < MAX_TASKS) {
        int status;
        pid_t tid = waitpid(-1, &status, __WALL | WNOHANG);
        if (tid == 0) {
            if (now_ns() > give_up) {
                line("E %lld %d threads did not stop within 2 s of the attach: the layout was read while they ran\n", now_ns(), waiting);
                break;
            }
            usleep(200);
            continue;
        }
        if (tid < 0)
            break;
        for (int i = 0; i < waiting; i++)
            if (interrupted[i] == tid) {
                interrupted[i] = interrupted[--waiting];
                break;
            }
        if (WIFSTOPPED(status)) {
            held[nheld].tid = tid;
            held[nheld].status = status;
            nheld++;
        } else {
            drop(tid);
        }
    }
    *moment = now_ns();
    return nheld;
}

/*
 * Exec mode, once the command has exited: the processes of the tree still running a second later
 * (daemons, background jobs, build servers such as an MSBuild node or a compiler server, in the
 * command's session or one of their own) are named by one U line. The second lets children that
 * were exiting with the command go first. The tracer cannot let the others go (a filtered call
 * fails with ENOSYS without it), so it follows them on.
 */
static void say_daemons_left(void)
{
    static int said;
    if (said || attach_mode || !root_gone_at || ntasks == 0 || now_ns() - root_gone_at < 1000000000LL)
        return;
    said = 1;
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "U %lld", now_ns());
    for (int i = 0; i < ntasks && n < (int)sizeof buf - 16; i++)
        if (tasks[i].tid == tasks[i].tgid)
            n += snprintf(buf + n, sizeof buf - n, " %d", tasks[i].tgid);
    line("%s\n", buf);
    fflush(out);
}

static void detach_all(void)
{
    for (int i = 0; i < ntasks; i++)
        ptrace(PTRACE_INTERRUPT, tasks[i].tid, 0, 0);
    /* Each interrupted task reports one stop; detach it there. Tasks that exit meanwhile report that. */
    while (ntasks > 0) {
        int status;
        pid_t tid = waitpid(-1, &status, __WALL);
        if (tid < 0)
            break;
        if (WIFSTOPPED(status)) {
            int sig = WSTOPSIG(status), event = (unsigned)status >> 16;
            if (event == PTRACE_EVENT_EXIT) {
                struct task *t = find(tid);
                if (t)
                    sample(t->tgid, tid, "exit");
            }
            /* A signal caught in the stop is passed on, not lost. */
            ptrace(PTRACE_DETACH, tid, 0, (event == 0 && sig != SIGTRAP) ? sig : 0);
        }
        drop(tid);
    }
}

int main(int argc, char **argv)
{
    int err_fd = -1;
    const char *out_file = NULL;
    while (argc > 2 && argv[1][0] == '-' && argv[1][1] && !argv[1][2]) {
        if (argv[1][1] == 'e')
            err_fd = atoi(argv[2]);
        else if (argv[1][1] == 'o')
            out_file = argv[2];
        else
            break;
        argv += 2;
        argc -= 2;
    }
    if (err_fd >= 0)
        fcntl(err_fd, F_SETFD, FD_CLOEXEC);
    if (argc < 5) {
        fprintf(stderr, "usage: %s OUT INTERVAL_MS exec CMD ARGS... | attach PID DURATION_MS\n", argv[0]);
        return 2;
    }
    out = fopen(argv[1], "w");
    if (!out) {
        fprintf(stderr, "ptlab-tracer: cannot write %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    setvbuf(out, NULL, _IOFBF, 1 << 16);
    long long interval = atoll(argv[2]) * 1000000LL;
    attach_mode = !strcmp(argv[3], "attach");
    long long deadline = 0;
    line("H ptlab-tracer 1 %d\n", getpid());
    folio_orders_probe();
    cache_events_open();

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);

    if (!attach_mode) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0)
            return 4;
        pid_t child = fork();
        if (child == 0) {
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            if (err_fd >= 0)
                dup2(err_fd, 2); /* dup2 clears FD_CLOEXEC on the copy */
            if (out_file) {
                int o = open(out_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (o < 0 || dup2(o, 1) < 0)
                    _exit(126);
            }
            ptrace(PTRACE_TRACEME, 0, 0, 0);
            raise(SIGSTOP);
            /* After the stop: the tracer has set PTRACE_O_TRACESECCOMP, so no filtered call can
             * stop with no tracer to see it. A failure is reported as -errno; CMD runs anyway. */
            int fe = install_filter();
            if (fe) {
                fe = -fe;
                if (write(fds[1], &fe, sizeof fe) < 0)
                    _exit(127);
            }
            execvp(argv[4], argv + 4);
            int e = errno;
            if (write(fds[1], &e, sizeof e) < 0)
                _exit(127);
            _exit(127);
        }
        close(fds[1]);
        root = child;
        line("R %lld %d exec\n", now_ns(), child);
        fflush(out); /* the recorder reads the tracer's pid and the root's from here to interrupt them */
        int status;
        if (waitpid(child, &status, __WALL) < 0 || !WIFSTOPPED(status)) {
            line("E %lld the command did not start under ptrace\n", now_ns());
            fclose(out);
            return 4;
        }
        if (ptrace(PTRACE_SETOPTIONS, child, 0, (void *)(opts_base | PTRACE_O_EXITKILL | PTRACE_O_TRACESECCOMP)) < 0) {
            line("E %lld PTRACE_SETOPTIONS: %s\n", now_ns(), strerror(errno));
            fclose(out);
            return 4;
        }
        struct task *t = add(child, child);
        t->seen_stop = 1;
        ptrace(PTRACE_CONT, child, 0, 0);
        /* The filter's failure, if any, comes first as -errno; then the exec either succeeds (the
         * pipe closes) or sends errno. */
        int e = 0;
        ssize_t n = read(fds[0], &e, sizeof e);
        if (n == sizeof e && e < 0) {
            line("F %lld off the seccomp filter could not be installed: %s\n", now_ns(), strerror(-e));
            e = 0;
            n = read(fds[0], &e, sizeof e);
        } else {
            line("F %lld on seccomp\n", now_ns());
        }
        close(fds[0]);
        if (n == sizeof e) {
            line("E %lld cannot run %s: %s\n", now_ns(), argv[4], strerror(e));
            fflush(out);
            /* The child stops at its exit (PTRACE_O_TRACEEXIT): let it go. */
            pid_t w;
            while ((w = waitpid(-1, &status, __WALL)) > 0)
                if (WIFSTOPPED(status))
                    ptrace(PTRACE_CONT, w, 0, 0);
            line("D %lld\n", now_ns());
            fclose(out);
            fprintf(stderr, "ptlab-tracer: cannot run %s: %s\n", argv[4], strerror(e));
            return 3;
        }
    } else {
        root = (pid_t)atoi(argv[4]);
        long long duration = argc > 5 ? atoll(argv[5]) * 1000000LL : 0;
        if (seize_all(root) < 0) {
            line("E %lld cannot attach to %d: %s\n", now_ns(), root, strerror(errno));
            fclose(out);
            fprintf(stderr, "ptlab-tracer: cannot attach to %d: %s\n", root, strerror(errno));
            return 4;
        }
        long long moment;
        int nheld = hold_all(&moment);
        line("R %lld %d attach\n", moment, root);
        line("F %lld off attached: no filter can be installed into a running process\n", now_ns());
        fflush(out);
        maps(root);
        resident(root);
        sample(root, tasks[0].tid, "attach");
        for (int i = 0; i < nheld; i++)
            if (handle_stop(held[i].tid, held[i].status) < 0 && errno != ESRCH)
                line("E %lld ptrace continue of %d: %s\n", now_ns(), held[i].tid, strerror(errno));
        if (duration > 0)
            deadline = now_ns() + duration;
    }

    long long next = now_ns() + interval;
    long long stop_at = 0, kill_at = 0;
    for (;;) {
        int status;
        pid_t tid;
        while ((tid = waitpid(-1, &status, __WALL | WNOHANG)) > 0) {
            if (WIFSTOPPED(status)) {
                if (handle_stop(tid, status) < 0 && errno != ESRCH)
                    line("E %lld ptrace continue of %d: %s\n", now_ns(), tid, strerror(errno));
            } else {
                struct task *t = find(tid);
                if (t && t->tid == t->tgid)
                    line("W %lld %d %d\n", now_ns(), t->tgid, status);
                else if (!t && tid == root)
                    line("W %lld %d %d\n", now_ns(), tid, status);
                if (tid == root)
                    root_gone_at = now_ns();
                drop(tid);
            }
        }
        if (tid < 0 && errno == ECHILD)
            break;
        if (ntasks == 0 && attach_mode)
            break;
        say_daemons_left();
        cache_drain();
        long long now = now_ns();
        if (attach_mode && deadline && now >= deadline) {
            detach_all();
            break;
        }
        if (now >= next) {
            sample_all("tick");
            fflush(out);
            next += interval * ((now - next) / interval + 1);
        }
        if (stop_at && !saw_sigint_delivery && now >= stop_at) {
            /* Nobody passed the interrupt on to the program (a signal to the recorder alone): do it. */
            for (int i = 0; i < ntasks; i++)
                if (tasks[i].tid == tasks[i].tgid)
                    kill(tasks[i].tgid, SIGINT);
            stop_at = 0;
        }
        if (kill_at && now >= kill_at) {
            for (int i = 0; i < ntasks; i++)
                kill(tasks[i].tid, SIGKILL);
            kill_at = 0;
        }
        long long wake = next;
        if (deadline && deadline < wake)
            wake = deadline;
        if (stop_at && stop_at < wake)
            wake = stop_at;
        if (kill_at && kill_at < wake)
            wake = kill_at;
        long long wait = wake - now;
        if (wait < 0)
            wait = 0;
        struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
        siginfo_t si;
        int s = sigtimedwait(&set, &si, &ts);
        if (s == SIGINT || s == SIGTERM) {
            line("I %lld %d\n", now_ns(), s);
            fflush(out);
            if (attach_mode) {
                detach_all();
                break;
            }
            if (!stop_at && !kill_at) {
                stop_at = now_ns() + 1000000000LL;
                kill_at = stop_at + 3000000000LL;
            }
        }
    }
    cache_events_close();
    line("D %lld\n", now_ns());
    fclose(out);
    return 0;
}
