/* A fault storm for `ptlab bench traces`: write one byte per page of a 64 MiB region, then
 * MADV_DONTNEED it, again and again for SECONDS; print the faults per second it achieved.
 *   faultstorm SECONDS */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2;
    size_t size = 64UL << 20;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    long faults = 0;
    double start = now(), end = start;
    while (end - start < seconds) {
        for (size_t o = 0; o < size; o += 4096, faults++)
            p[o] = 1;
        madvise(p, size, MADV_DONTNEED);
        end = now();
    }
    printf("faults %ld seconds %.3f rate %.0f\n", faults, end - start, faults / (end - start));
    return 0;
}
