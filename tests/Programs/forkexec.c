/* Forks CHILDREN children; each touches 8 MiB of a copy of its parent's 8 MiB, then execs this
 * program again as "leaf", which maps and touches 4 MiB and exits. The parent waits for them.
 *   forkexec CHILDREN      (forkexec leaf: the exec'd child) */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

static char *touch(size_t size)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(1);
    for (size_t o = 0; o < size; o += 4096)
        p[o] = 1;
    return p;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "leaf")) {
        touch(4UL << 20);
        print_status("leaf");
        return 0;
    }
    int n = argc > 1 ? atoi(argv[1]) : 2;
    char *p = touch(8UL << 20);
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        if (c == 0) {
            for (size_t o = 0; o < (8UL << 20); o += 4096)
                p[o] = 2; /* copy-on-write faults */
            execl("/proc/self/exe", argv[0], "leaf", (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(c, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return 1;
    }
    printf("children %d\n", n);
    print_status("end");
    return 0;
}
