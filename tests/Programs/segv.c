/* Faults the kernel answers with SIGSEGV, caught and survived, as a JVM's implicit null checks
 * and safepoint polls are: a read of address 0 (SEGV_MAPERR), a write to a PROT_NONE guard page
 * and a read of it (SEGV_ACCERR), a read in a hole left by munmap (SEGV_MAPERR); between them
 * ordinary memory is written.
 *   segv */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

static sigjmp_buf back;
static volatile int caught;

static void on_segv(int sig)
{
    (void)sig;
    caught++;
    siglongjmp(back, 1);
}

static void probe(volatile char *p, int write)
{
    if (sigsetjmp(back, 1) == 0) {
        if (write)
            *p = 1;
        else
            (void)*p;
    }
}

int main(void)
{
    struct sigaction sa = { .sa_handler = on_segv };
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL))
        return 1;
    size_t sz = 8UL << 20;
    char *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + sz / 2, 4096, PROT_NONE) || munmap(m + sz / 4, 4096))
        return 1;
    for (size_t o = 0; o < sz / 4; o += 4096)
        m[o] = 1;
    probe((volatile char *)0, 0);
    probe(m + sz / 2, 1);
    probe(m + sz / 2, 0);
    probe(m + sz / 4, 0);
    for (size_t o = sz / 2 + 4096; o < sz; o += 4096)
        m[o] = 1;
    usleep(30000);
    print_status("end");
    return caught == 4 ? 0 : 1;
}
