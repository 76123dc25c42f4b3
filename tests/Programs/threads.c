/* THREADS threads, each maps its own 16 MiB, touches it, madvises half of it away, unmaps the
 * rest; the main thread joins them and prints its status.
 *   threads THREADS */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include "common.h"

static void *work(void *arg)
{
    (void)arg;
    size_t size = 16UL << 20;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    for (size_t o = 0; o < size; o += 4096)
        p[o] = 1;
    madvise(p, size / 2, MADV_DONTNEED);
    munmap(p + size / 2, size / 2);
    return p;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 4;
    pthread_t t[64];
    if (n > 64)
        n = 64;
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    printf("threads %d\n", n);
    print_status("end");
    return 0;
}
