/* System V shared memory as databases use it: a parent creates a 16 MiB segment (shmget),
 * attaches it (shmat), writes its first half and forks; the child, which inherits the attach,
 * reads the first quarter through it, attaches the same segment a second time, read-only, at
 * another address, reads all of it there, and detaches the inherited attach (shmdt); the parent
 * waits, removes the segment (IPC_RMID: it lives on while attached) and reads all of it.
 * Both processes map one set of pages: RssShmem in each.
 *   sysvshm */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

#define SEG (16UL << 20)

static long read_all(const volatile char *p, size_t len)
{
    long s = 0;
    for (size_t o = 0; o < len; o += 4096)
        s += p[o];
    return s;
}

int main(void)
{
    int id = shmget(IPC_PRIVATE, SEG, IPC_CREAT | 0600);
    if (id < 0) {
        perror("shmget");
        return 1;
    }
    char *a = shmat(id, NULL, 0);
    if (a == (void *)-1) {
        perror("shmat");
        shmctl(id, IPC_RMID, NULL);
        return 1;
    }
    for (size_t o = 0; o < SEG / 2; o += 4096)
        a[o] = 1;
    usleep(30000);

    pid_t child = fork();
    if (child == 0) {
        long s = read_all(a, SEG / 4);
        const char *b = shmat(id, NULL, SHM_RDONLY);
        if (b == (void *)-1 || b == a)
            _exit(2);
        s += read_all(b, SEG);
        usleep(30000);
        if (shmdt(a) != 0)
            _exit(3);
        usleep(30000);
        print_status("child");
        _exit(s == (long)(SEG / 4096 / 4 + SEG / 4096 / 2) ? 0 : 4);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        shmctl(id, IPC_RMID, NULL);
        return 1;
    }
    shmctl(id, IPC_RMID, NULL);
    long s = read_all(a, SEG);
    usleep(30000);
    print_status("end");
    return s == (long)(SEG / 4096 / 2) ? 0 : 1;
}
