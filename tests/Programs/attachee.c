/* A process for `record -p` to attach to while it runs: before it says so it builds tables of
 * every kind a live process has (written anonymous pages, zero pages read, anonymous pages of a
 * VMA made read-only since, a file mapping read, empty PTE tables, a second thread) and seals a
 * written region (mseal, Linux 6.10+; elsewhere the call fails and nothing is sealed), then prints "ready" and
 * keeps mapping, writing, advising and unmapping regions in two threads, so that the recording
 * starts while the address space changes, until its standard input ends (or SECONDS pass).
 * Then it tries to make the sealed region read-only and to unmap it, which a kernel that sealed
 * it refuses (EPERM). Exits 0.
 *   attachee SECONDS */
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include "common.h"

#define MIB (1UL << 20)
static double seconds;
static volatile int stop;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void touch(char *p, size_t n, int write)
{
    for (size_t o = 0; o < n; o += 4096) {
        if (write)
            p[o] = 1;
        else
            (void)*(volatile char *)(p + o);
    }
}

static void *churn(void *arg)
{
    unsigned long r = (unsigned long)arg * 2654435761UL + 1;
    double end = now() + seconds;
    while (!stop && now() < end) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        size_t n = (1 + r % 8) * MIB;
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            continue;
        touch(p, n, 1);
        madvise(p, n / 2, MADV_DONTNEED);
        touch(p, n / 4, 1);
        if (r & 1)
            munmap(p, n);
        usleep(2000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    seconds = argc > 1 ? atof(argv[1]) : 2;
    char *heap = mmap(NULL, 64 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *zero = mmap(NULL, 16 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *frozen = mmap(NULL, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (heap == MAP_FAILED || zero == MAP_FAILED || frozen == MAP_FAILED)
        return 1;
    touch(heap, 64 * MIB, 1);
    touch(zero, 16 * MIB, 0);
    touch(frozen, 8 * MIB, 1);
    mprotect(frozen, 8 * MIB, PROT_READ);
    /* Empty PTE tables, which no page shows: in each of 16 aligned 2 MiB blocks two VMAs, the
     * first written and then emptied with MADV_DONTNEED, which frees no table it covers only in
     * part (and an munmap would leave a hole the churn below could fill). */
    char *area = mmap(NULL, 34 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        return 1;
    char *blocks = (char *)(((unsigned long)area + 2 * MIB - 1) & ~(2 * MIB - 1));
    for (int i = 0; i < 16; i++) {
        char *b = blocks + i * 2 * MIB;
        mprotect(b + MIB, MIB, PROT_READ);
        touch(b, MIB, 1);
        madvise(b, MIB, MADV_DONTNEED);
    }
    int fd = open(argv[0], O_RDONLY);
    off_t size = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
    char *file = size > 0 ? mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (file != MAP_FAILED)
        touch(file, (size_t)size, 0);
    char *sealed = mmap(NULL, 2 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sealed == MAP_FAILED)
        return 1;
    touch(sealed, 2 * MIB, 1);
    syscall(SYS_mseal, sealed, 2 * MIB, 0);
    printf("ready\n");
    fflush(stdout);
    pthread_t t[2];
    pthread_create(&t[0], NULL, churn, (void *)1);
    pthread_create(&t[1], NULL, churn, (void *)2);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    stop = 1;
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    mprotect(sealed, 4096, PROT_READ);
    munmap(sealed, 2 * MIB);
    return 0;
}
