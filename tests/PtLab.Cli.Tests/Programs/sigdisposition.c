/* Runs a program with SIGINT and SIGQUIT set to a chosen disposition, and unblocked:
   "default", as a foreground program of a terminal has them, or "ignore", as a non-interactive
   shell starts a background job (POSIX: an asynchronous list without job control inherits both
   ignored). An ignored disposition survives fork and exec, so a test runner that was itself started
   in the background passes "ignore" on to every program it starts; this sets what a test means.
   Usage: sigdisposition default|ignore PROGRAM [ARG...] */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "default") != 0 && strcmp(argv[1], "ignore") != 0)) {
        fprintf(stderr, "usage: sigdisposition default|ignore PROGRAM [ARG...]\n");
        return 2;
    }

    void (*disposition)(int) = strcmp(argv[1], "default") == 0 ? SIG_DFL : SIG_IGN;
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGINT);
    sigaddset(&both, SIGQUIT);
    if (signal(SIGINT, disposition) == SIG_ERR || signal(SIGQUIT, disposition) == SIG_ERR ||
        sigprocmask(SIG_UNBLOCK, &both, NULL) != 0) {
        perror("sigdisposition");
        return 1;
    }

    execvp(argv[2], argv + 2);
    perror(argv[2]);
    return 127;
}
