/* A heap that a forked child grows: the parent grows its break by 4 MiB and writes it; two
 * children, each a fork, grow the heap they inherited by 16 MiB more and write every page of it
 * before they exit. fork copies the break with the mm (dup_mm): a replay that starts a child's
 * heap afresh at its first brk maps none of the growth, and the writes find nothing there.
 *   forkbrk */
#define _GNU_SOURCE
#include "common.h"

static void grow_and_write(size_t bytes, char value)
{
    char *from = sbrk(0);
    if (sbrk((intptr_t)bytes) == (void *)-1) {
        perror("sbrk");
        exit(1);
    }
    for (size_t o = 0; o < bytes; o += 4096)
        from[o] = value;
}

static void child(void)
{
    grow_and_write(16UL << 20, 2);
    print_status("child");
}

int main(void)
{
    grow_and_write(4UL << 20, 1);
    for (int i = 0; i < 2; i++)
        if (run_child(child))
            return 1;
    print_status("end");
    return 0;
}
