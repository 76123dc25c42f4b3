/* Shared memory that another process cuts short, with no trace event to say so: 8 MiB mapped
 * shared and written whole, then a child takes away its second half and exits, and the parent
 * reads a page of the first half and exits. The pages taken leave the parent's page tables.
 *   cutshared hole       a memfd; the child punches a hole over the first half instead
 *                        (fallocate): RssShmem 4 MiB + the page read back at exit
 *   cutshared truncate DIR   a file in DIR; the child truncates it to half (ftruncate):
 *                        RssFile 4 MiB + the program's own file pages at exit
 * Exits 0. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    const size_t size = 8 << 20;
    int hole = argc > 1 && !strcmp(argv[1], "hole");
    char path[4096];
    snprintf(path, sizeof path, "%s/cutshared.data", argc > 2 ? argv[2] : ".");
    int fd = hole ? memfd_create("cutshared", 0) : open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, size) < 0)
        return 1;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return 1;
    memset(p, 1, size);
    pid_t child = fork();
    if (child == 0) {
        int r = hole ? fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, size / 2) : ftruncate(fd, size / 2);
        _exit(r == 0 ? 0 : 1);
    }
    int status;
    if (waitpid(child, &status, 0) != child || status != 0)
        return 1;
    usleep(100000); /* a sample with the cut */
    if (!hole)
        unlink(path);
    return p[4096] == (hole ? 0 : 1) ? 0 : 1;
}
