/* A mapped file whose page cache changes after the program maps it, by means no fault shows.
 *   cachechange DIR   makes a 32 MiB file in DIR (written back and dropped from the page cache:
 *                     cold), maps its first 16 MiB read-only under MADV_RANDOM (a fault reads its own page
 *                     only; fault-around maps whatever else of its 16 pages is cached), then
 *                       1. read()s its first 8 MiB (readahead fills the cache, in large folios
 *                          where the file system builds them);
 *                       2. a child process drops [2 MiB, 4 MiB) of it again with
 *                          POSIX_FADV_DONTNEED (another process: no fault, no syscall of the
 *                          parent);
 *                       3. reads every 64th page of the whole mapping.
 *                     Faults where the read (or its readahead) left pages cached and the child
 *                     did not drop them map their window, or their large folio whole; the others
 *                     map one page each. (The file is twice the mapping so that no folio the
 *                     faults meet ends the file.) Sleeps 60 ms between steps, so that
 *                     samples see each. Prints how many pages mincore() finds cached after each. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

#define FILE_SIZE (32UL << 20) /* readahead from the read below stops short of end of file */
#define MAP_SIZE (16UL << 20)
#define STRIDE (64 * 4096UL)

static long cached_pages(void *p)
{
    static unsigned char vec[MAP_SIZE / 4096];
    long n = 0;
    if (mincore(p, MAP_SIZE, vec))
        return -1;
    for (size_t i = 0; i < sizeof vec; i++)
        n += vec[i] & 1;
    return n;
}

static void pause_ms(long ms)
{
    struct timespec ts = {0, ms * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: cachechange DIR\n");
        return 2;
    }
    int fd = open_temp_file(argc, argv, "cachechange");
    if (fd < 0 || write_cold_file(fd, FILE_SIZE)) {
        perror("cachechange: file");
        return 1;
    }
    volatile char *p = mmap(NULL, MAP_SIZE, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED || madvise((void *)p, MAP_SIZE, MADV_RANDOM)) {
        perror("cachechange: mmap");
        return 1;
    }
    printf("mapped: %ld pages cached\n", cached_pages((void *)p));
    pause_ms(60);

    static char buf[1 << 16];
    for (off_t at = 0; at < (off_t)(MAP_SIZE / 2); at += sizeof buf)
        if (pread(fd, buf, sizeof buf, at) != (ssize_t)sizeof buf) {
            perror("cachechange: pread");
            return 1;
        }
    printf("read: %ld pages cached\n", cached_pages((void *)p));
    pause_ms(60);

    pid_t child = fork();
    if (child == 0)
        _exit(posix_fadvise(fd, 2UL << 20, 2UL << 20, POSIX_FADV_DONTNEED) ? 1 : 0);
    int status;
    if (child < 0 || waitpid(child, &status, 0) != child || status != 0) {
        fprintf(stderr, "cachechange: the child did not drop the range\n");
        return 1;
    }
    printf("dropped: %ld pages cached\n", cached_pages((void *)p));
    pause_ms(60);

    long sum = 0;
    for (size_t o = 0; o < MAP_SIZE; o += STRIDE)
        sum += p[o];
    printf("sum %ld\n", sum);
    pause_ms(60);
    print_status("end");
    return 0;
}
