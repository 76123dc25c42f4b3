/* An allocator under churn: a worker thread allocates and frees blocks of mixed sizes (64 B to
   1.25 MiB) over a working set of about 150 MiB, writing each block, for as long as stdin stays open.
   Prints "ready 0 0" once the working set is built. Run it with LD_PRELOAD to test jemalloc or tcmalloc. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SLOTS
#define SLOTS 1024 /* blocks live at once; -DSLOTS=8192 for a bigger working set */
#endif
static void *blocks[SLOTS];
static volatile int stop;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static size_t size_of(uint64_t r)
{
    switch (r % 8) {
    case 0: case 1: case 2: return 64 + r % 4096;            /* small */
    case 3: case 4: return 4096 + r % (64 << 10);            /* medium */
    case 5: case 6: return (64 << 10) + r % (192 << 10);     /* large */
    default: return (256 << 10) + r % (1 << 20);             /* huge: mmap-backed in glibc */
    }
}

static void step(void)
{
    size_t i = next() % SLOTS;
    free(blocks[i]);
    size_t n = size_of(next());
    blocks[i] = malloc(n);
    if (blocks[i]) memset(blocks[i], 1, n);
}

static void *worker(void *arg)
{
    (void)arg;
    while (!stop) for (int k = 0; k < 1000; k++) step();
    return NULL;
}

int main(void)
{
    for (size_t i = 0; i < SLOTS * 4; i++) step();
    printf("ready 0 0\n");
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    char line[64];
    while (fgets(line, sizeof line, stdin)) { }
    stop = 1;
    pthread_join(t, NULL);
    return 0;
}
