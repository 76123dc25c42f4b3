/* The program whose recording is sample.perf.txt: 64 KiB mapped, 16 pages touched, half of them
 * madvised away, one thread that touches 4 pages, then munmap and exit.
 * Recorded with:
 *   perf record -d -k CLOCK_MONOTONIC -m 8M -o sample.data \
 *     -e exceptions:page_fault_user -e exceptions:page_fault_kernel --filter 'address < 0x800000000000' \
 *     -e syscalls:sys_{enter,exit}_{mmap,munmap,mremap,madvise,mprotect,brk} \
 *     -e syscalls:sys_enter_exit -e syscalls:sys_enter_exit_group \
 *     -e task:task_newtask -e sched:sched_process_exec -e sched:sched_process_exit -- ./sample
 *   perf script -i sample.data --ns --show-task-events --show-mmap-events --show-lost-events \
 *     -F comm,pid,tid,cpu,time,event,trace > sample.perf.txt */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

static char *p;

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 8; i < 12; i++)
        p[i * 4096] = 2;
    return 0;
}

int main(void)
{
    p = mmap(0, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 16; i++)
        p[i * 4096] = 1;
    madvise(p, 32 << 10, MADV_DONTNEED);
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    pthread_join(t, 0);
    munmap(p, 64 << 10);
    return 0;
}
