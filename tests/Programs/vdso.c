/* The vDSO: exec maps it as a special mapping, the kernel's own pages. A read of its text maps a
 * kernel page counted in RssFile (not anonymous, no file behind it); its [vvar] data pages are raw
 * frame numbers that no RSS counter counts. The parent reads the clock through the vDSO and reads
 * every page of its text; the forked child, which fork gives no entries for the vDSO (no
 * anon_vma), refaults the pages as it does the same.
 *   vdso */
#define _GNU_SOURCE
#include "common.h"
#include <time.h>

/* Reads the first byte of every page of the [vdso] mapping; the number of pages, or -1. */
static int read_vdso(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char l[512];
    int pages = -1;
    if (!f)
        return -1;
    while (fgets(l, sizeof l, f)) {
        unsigned long start, end;
        if (strstr(l, "[vdso]") && sscanf(l, "%lx-%lx", &start, &end) == 2) {
            volatile long sum = 0;
            for (unsigned long a = start; a < end; a += 4096)
                sum += *(volatile const char *)a;
            pages = (int)((end - start) / 4096);
        }
    }
    fclose(f);
    return pages;
}

static void use_vdso(void)
{
    struct timespec ts;
    for (int i = 0; i < 3; i++)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    if (read_vdso() <= 0)
        _exit(1);
}

int main(void)
{
    use_vdso();
    if (run_child(use_vdso))
        return 1;
    print_status("end");
    return 0;
}
