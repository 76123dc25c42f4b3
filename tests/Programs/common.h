/* Shared by the test programs: print this process's memory figures from /proc/self/status, as the
 * last thing before exit, so a recording's exit sample can be checked against them. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Numbers of the x86-64 calls an older libc's headers may lack. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#ifndef SYS_mseal
#define SYS_mseal 462
#endif

/* Fills the file behind FD with SZ bytes of ones, writes them back and drops them from the page
 * cache (where the file system lets them go): a file on disk that nobody has read since. 0, or -1
 * when a write failed. */
static inline int write_cold_file(int fd, size_t sz)
{
    static char buf[1 << 16];
    memset(buf, 1, sizeof buf);
    for (size_t o = 0; o < sz; o += sizeof buf)
        if (pwrite(fd, buf, sizeof buf, (off_t)o) != (ssize_t)sizeof buf)
            return -1;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return 0;
}

/* A new file "DIR/ptlab-NAME.PID", opened read-write and unlinked at once (DIR: argv[1], else
 * P_tmpdir); -1 after a message when it cannot be created. */
static inline int open_temp_file(int argc, char **argv, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ptlab-%s.%d", argc > 1 ? argv[1] : P_tmpdir, name, getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        perror(path);
    else
        unlink(path);
    return fd;
}

static void print_status(const char *tag)
{
    FILE *f = fopen("/proc/self/status", "r");
    char l[256];
    if (!f)
        return;
    while (fgets(l, sizeof l, f))
        if (!strncmp(l, "VmPTE:", 6) || !strncmp(l, "VmRSS:", 6) || !strncmp(l, "RssAnon:", 8))
            printf("%s %s", tag, l);
    fclose(f);
    fflush(stdout);
}

/* Forks a child that runs BODY (when not null) and exits with status 0, and waits for it: 0
 * when the child ran and exited so, -1 otherwise. */
static inline int run_child(void (*body)(void))
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (body)
            body();
        _exit(0);
    }
    int status;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Reads the first byte of every page of [BASE, BASE + SIZE), prints their sum and, last, the
 * status figures as print_status does. */
static inline void read_pages_and_report(const char *base, size_t size)
{
    long sum = 0;
    for (size_t o = 0; o < size; o += 4096)
        sum += base[o];
    printf("sum %ld\n", sum);
    print_status("end");
}
