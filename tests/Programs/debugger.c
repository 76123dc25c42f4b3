/* A small debugger: it forks a child that asks to be traced (PTRACE_TRACEME, as gdb's inferior
 * does), then seizes a second child (PTRACE_SEIZE, as strace and LeakSanitizer do). Each child
 * waits 0.5 s and exits. Prints "traceme ok|EPERM" and "seize ok|EPERM" and exits 0 when both
 * calls succeeded, 1 when one failed: alone it exits 0; inside a recording, whose tracer already
 * traces every process of the tree, both fail.
 *   debugger */
#include <errno.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include "common.h"

int main(void)
{
    int pipefd[2];
    if (pipe(pipefd) < 0)
        return 2;
    pid_t first = fork();
    if (first == 0) {
        long r = ptrace(PTRACE_TRACEME, 0, 0, 0);
        int ok = r == 0;
        if (write(pipefd[1], &ok, sizeof ok) != sizeof ok)
            _exit(2);
        usleep(500000);
        _exit(0);
    }
    int traceme = 0;
    if (read(pipefd[0], &traceme, sizeof traceme) != sizeof traceme)
        return 2;
    printf("traceme %s\n", traceme ? "ok" : "EPERM");
    pid_t second = fork();
    if (second == 0) {
        usleep(500000);
        _exit(0);
    }
    long r = ptrace(PTRACE_SEIZE, second, 0, 0);
    int seize = r == 0;
    printf("seize %s\n", seize ? "ok" : strerror(errno));
    fflush(stdout);
    int status;
    while (waitpid(-1, &status, __WALL) > 0)
        ;
    return traceme && seize ? 0 : 1;
}
