/* A command that leaves a daemon behind, as gpg leaves its agent: it forks a child that calls
 * setsid and forks the daemon, which maps and writes 1 MiB and lives SECONDS more; the command
 * and the child exit at once. Exits 0.
 *   daemon SECONDS */
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
    if (fork() == 0) {
        setsid();
        if (fork() == 0) {
            char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED)
                memset(p, 1, 1 << 20);
            sleep(seconds);
            _exit(0);
        }
        _exit(0);
    }
    return 0;
}
