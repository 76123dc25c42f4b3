/* A command that leaves a process behind, as gpg leaves its agent: it forks a child that calls
 * setsid and forks the daemon, which maps and writes 1 MiB and lives SECONDS more; the command
 * and the child exit at once. With "nosid" the child does not call setsid: the process left is
 * in the command's own session, as a background job or a build server is. Exits 0.
 *   daemon SECONDS [nosid] */
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
    int own_session = !(argc > 2 && !strcmp(argv[2], "nosid"));
    if (fork() == 0) {
        if (own_session)
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
