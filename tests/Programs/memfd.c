/* Shared file memory that has no file name: a memfd mapped twice, once writable and once
 * readable and executable (the W^X double mapping of JIT compilers), its chunks mapped
 * MAP_FIXED one after another into a reserved range (the kernel merges them into one VMA and
 * reports the merged mapping), written through one view and read through the other; a
 * MAP_SHARED and a MAP_PRIVATE mapping of /dev/zero (shmem, and anonymous memory); then a
 * child, forked, reads the memfd's pages through the inherited views and writes the shared
 * /dev/zero mapping, which its parent then reads.
 *   memfd [MIB] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv)
{
    size_t sz = (argc > 1 ? strtoul(argv[1], NULL, 0) : 16) << 20, chunk = 64UL << 10;
    int fd = memfd_create("ptlab-doublemap", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)sz) < 0)
        return 1;
    /* Two reserved ranges, filled chunk by chunk with MAP_FIXED views of the same offsets. */
    char *rw = mmap(NULL, sz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    char *rx = mmap(NULL, sz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (rw == MAP_FAILED || rx == MAP_FAILED)
        return 1;
    for (size_t o = 0; o < sz; o += chunk) {
        if (mmap(rw + o, chunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (off_t)o) == MAP_FAILED ||
            mmap(rx + o, chunk, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_FIXED, fd, (off_t)o) == MAP_FAILED)
            return 1;
        if ((o & ((1UL << 20) - 1)) == 0)
            usleep(2000);
    }
    long sum = 0;
    for (size_t o = 0; o < sz; o += 4096)
        rw[o] = 1;
    for (size_t o = 0; o < sz; o += 8192)
        sum += rx[o];
    usleep(30000);

    int zfd = open("/dev/zero", O_RDWR);
    if (zfd < 0)
        return 1;
    char *zs = mmap(NULL, 4UL << 20, PROT_READ | PROT_WRITE, MAP_SHARED, zfd, 0);
    char *zp = mmap(NULL, 4UL << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE, zfd, 0);
    if (zs == MAP_FAILED || zp == MAP_FAILED)
        return 1;
    for (size_t o = 0; o < (4UL << 20); o += 4096) {
        zs[o] = 2;
        zp[o] = 3;
    }
    usleep(30000);

    pid_t child = fork();
    if (child == 0) {
        long s = 0;
        for (size_t o = 0; o < sz; o += 4096)
            s += rx[o];
        for (size_t o = 0; o < (2UL << 20); o += 4096)
            zs[o] = 5;
        usleep(30000);
        print_status("child");
        _exit(s == (long)(sz / 4096) ? 0 : 1);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 1;
    for (size_t o = 0; o < (4UL << 20); o += 4096)
        sum += zs[o];
    print_status("end");
    return sum == (long)(sz / 8192) + 512 * 5 + 512 * 2 ? 0 : 1;
}
