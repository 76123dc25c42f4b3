/* A mapped file cut short by another process: a file of 8 MiB in DIR written through a shared
 * mapping, then a child truncates it to 4 MiB (ftruncate, which no trace event records) and
 * exits. The pages past the new end leave the parent's page tables (RssFile 4 MiB at exit, where
 * the mapping still spans 8 MiB). Exits 0.
 *   truncfile DIR */
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv)
{
    const size_t size = 8 << 20;
    char path[4096];
    snprintf(path, sizeof path, "%s/truncfile.data", argc > 1 ? argv[1] : ".");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, size) < 0)
        return 1;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return 1;
    memset(p, 1, size);
    pid_t child = fork();
    if (child == 0)
        _exit(ftruncate(fd, size / 2) == 0 ? 0 : 1);
    int status;
    if (waitpid(child, &status, 0) != child || status != 0)
        return 1;
    usleep(100000); /* a sample with the file cut */
    unlink(path);
    return p[4096] == 1 ? 0 : 1;
}
