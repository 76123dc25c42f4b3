/* Shared by the test programs: print this process's memory figures from /proc/self/status, as the
 * last thing before exit, so a recording's exit sample can be checked against them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

/* Numbers of the x86-64 calls an older libc's headers may lack. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

static void print_status(const char *tag)
{
    FILE *f = fopen("/proc/self/status", "r");
    char l[256];
    if (!f)
        return;
    while (fgets(l, sizeof l, f))
        if (!strncmp(l, "VmPTE:", 6) || !strncmp(l, "VmRSS:", 6) || !strncmp(l, "RssAnon:", 8))
            printf("%s %s", tag, l);
    fclose(f);
    fflush(stdout);
}
