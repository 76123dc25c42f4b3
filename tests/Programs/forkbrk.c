/* A heap that a forked child grows: the parent grows its break by 4 MiB and writes it; two
 * children, each a fork, grow the heap they inherited by 16 MiB more and write every page of it
 * before they exit. fork copies the break with the mm (dup_mm): a replay that starts a child's
 * heap afresh at its first brk maps none of the growth, and the writes find nothing there.
 *   forkbrk */
#define _GNU_SOURCE
#include <sys/wait.h>
#include "common.h"

static void grow_and_write(size_t bytes, char value)
{
    char *from = sbrk(0);
    if (sbrk((intptr_t)bytes) == (void *)-1) {
        perror("sbrk");
        exit(1);
    }
    for (size_t o = 0; o < bytes; o += 4096)
        from[o] = value;
}

int main(void)
{
    grow_and_write(4UL << 20, 1);
    for (int i = 0; i < 2; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            grow_and_write(16UL << 20, 2);
            print_status("child");
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return 1;
    }
    print_status("end");
    return 0;
}
