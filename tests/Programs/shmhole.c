/* Shared memory whose pages another process takes away: a memfd of 8 MiB mapped shared and
 * written whole, then a child punches a hole over its first 4 MiB (fallocate, which no trace
 * event records) and exits; the parent reads one page of the hole back and exits. The hole's
 * pages leave the parent's page tables (RssShmem 4 MiB + 4 kB at exit). Exits 0.
 *   shmhole */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(void)
{
    const size_t size = 8 << 20;
    int fd = memfd_create("shmhole", 0);
    if (fd < 0 || ftruncate(fd, size) < 0)
        return 1;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return 1;
    memset(p, 1, size);
    pid_t child = fork();
    if (child == 0)
        _exit(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, size / 2) == 0 ? 0 : 1);
    int status;
    if (waitpid(child, &status, 0) != child || status != 0)
        return 1;
    usleep(100000); /* a sample with the hole */
    return p[4096] == 0 ? 0 : 1;
}
