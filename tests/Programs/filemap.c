/* File mappings and mremap: a 4 MiB file in DIR mapped shared (written) and private (read, then
 * written: copy-on-write); an anonymous 4 MiB mapping grown to 8 MiB in place or moved,
 * shrunk and moved to a fixed address; another 4 MiB moved with MREMAP_DONTUNMAP.
 *   filemap DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

int main(int argc, char **argv)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ptlab-filemap.%d", argc > 1 ? argv[1] : P_tmpdir, getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4 << 20)) {
        perror(path);
        return 1;
    }
    unlink(path);
    size_t sz = 4UL << 20;
    char *s = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *q = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (s == MAP_FAILED || q == MAP_FAILED)
        return 1;
    for (size_t o = 0; o < sz; o += 4096)
        s[o] = 1;
    long sum = 0;
    for (size_t o = 0; o < sz; o += 4096)
        sum += q[o];
    for (size_t o = 0; o < sz / 2; o += 4096)
        q[o] = 3;
    char *a = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t o = 0; o < sz; o += 4096)
        a[o] = 1;
    a = mremap(a, sz, 2 * sz, MREMAP_MAYMOVE);
    for (size_t o = 0; o < 2 * sz; o += 4096)
        a[o] = 2;
    a = mremap(a, 2 * sz, sz, 0);
    char *target = mmap(NULL, 2 * sz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    a = mremap(a, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED, target + sz);
    char *c = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t o = 0; o < sz; o += 4096)
        c[o] = 4;
    /* Linux 6.18 refuses MREMAP_DONTUNMAP without MREMAP_FIXED (EINVAL): give it a place. */
    char *spot = mmap(NULL, sz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *b = mremap(c, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, spot);
    if (a == MAP_FAILED || b == MAP_FAILED) {
        perror("mremap");
        return 1;
    }
    for (size_t o = 0; o < sz; o += 4096)
        sum += b[o] + a[o] + c[o]; /* c reads zero pages: its tables stayed, its pages moved */
    munmap(s, sz);
    printf("sum %ld\n", sum);
    print_status("end");
    return 0;
}
