/* Mapped files that are, or are not, in the page cache when the program maps them.
 *   warmcold prep DIR   makes DIR/ptlab-warm and DIR/ptlab-cold, 16 MiB each, written back to
 *                       disk and dropped from the page cache; then reads ptlab-warm whole with
 *                       read(), so that it is cached and ptlab-cold is not. Prints how many pages
 *                       of each mincore() finds cached.
 *   warmcold DIR        maps each file read-only, warm first: the first half read every 64th page
 *                       with the default advice, the second half every 64th page under
 *                       MADV_RANDOM (no readahead: a fault brings in its page alone, and
 *                       fault-around maps whatever else of its 16 pages is cached). Sleeps 100 ms
 *                       after each file, so that samples see each step. */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <time.h>
#include "common.h"

#define FILE_SIZE (16UL << 20)
#define STRIDE (64 * 4096UL)

static void path_of(char *buf, size_t n, const char *dir, const char *name)
{
    snprintf(buf, n, "%s/ptlab-%s", dir, name);
}

static long cached_pages(int fd)
{
    void *p = mmap(NULL, FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    static unsigned char vec[FILE_SIZE / 4096];
    long n = 0;
    if (p == MAP_FAILED || mincore(p, FILE_SIZE, vec))
        return -1;
    for (size_t i = 0; i < sizeof vec; i++)
        n += vec[i] & 1;
    munmap(p, FILE_SIZE);
    return n;
}

static int prep(const char *dir)
{
    static char buf[1 << 16];
    const char *names[] = {"cold", "warm"};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        path_of(path, sizeof path, dir, names[i]);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write_cold_file(fd, FILE_SIZE)) {
            perror(path);
            return 1;
        }
        if (i == 1) {
            ssize_t got;
            off_t at = 0;
            while ((got = pread(fd, buf, sizeof buf, at)) > 0)
                at += got;
        }
        printf("%s: %ld of %lu pages cached\n", names[i], cached_pages(fd), FILE_SIZE / 4096);
        close(fd);
    }
    return 0;
}

static long touch(const char *dir, const char *name)
{
    char path[4096];
    path_of(path, sizeof path, dir, name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    volatile char *p = mmap(NULL, FILE_SIZE, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    close(fd);
    long sum = 0;
    for (size_t o = 0; o < FILE_SIZE / 2; o += STRIDE)
        sum += p[o];
    madvise((char *)p + FILE_SIZE / 2, FILE_SIZE / 2, MADV_RANDOM);
    for (size_t o = FILE_SIZE / 2; o < FILE_SIZE; o += STRIDE)
        sum += p[o];
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return sum;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "prep"))
        return prep(argv[2]);
    if (argc != 2) {
        fprintf(stderr, "usage: warmcold prep DIR | warmcold DIR\n");
        return 2;
    }
    long sum = touch(argv[1], "warm") + touch(argv[1], "cold");
    printf("sum %ld\n", sum);
    print_status("end");
    return 0;
}
