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
 *   R <time> <root pid> exec|attach
 *   S <time> <pid> <tid> tick|exec|exit|attach <VmSize> <VmRSS> <RssAnon> <RssFile> <RssShmem> <VmSwap> <VmPTE>   (kB)
 *   M <time> <pid> <one /proc/PID/maps line, verbatim>
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
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
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

static void maps(pid_t pid)
{
    char path[64], buf[4096 + 256];
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
    }
    fclose(f);
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
 * process_madvise for the tracer and allows everything else. Without CAP_SYS_ADMIN the kernel
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

/* A process_madvise entry stop: writes the call's V line. */
static void process_madvise_entry(struct task *t, pid_t tid)
{
    struct user_regs_struct regs;
    long long now = now_ns();
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0) {
        line("E %lld PTRACE_GETREGS of %d at process_madvise: %s\n", now, tid, strerror(errno));
        return;
    }
    if (regs.orig_rax != __NR_process_madvise)
        return;
    pid_t tgid = t ? t->tgid : read_tgid(tid);
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
            process_madvise_entry(t, tid);
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
        line("R %lld %d attach\n", now_ns(), root);
        line("F %lld off attached: no filter can be installed into a running process\n", now_ns());
        fflush(out);
        maps(root);
        sample(root, tasks[0].tid, "attach");
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
                drop(tid);
            }
        }
        if (tid < 0 && errno == ECHILD)
            break;
        if (ntasks == 0 && attach_mode)
            break;
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
    line("D %lld\n", now_ns());
    fclose(out);
    return 0;
}
