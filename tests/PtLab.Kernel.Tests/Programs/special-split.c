/* For each of the vDSO's mappings ([vdso], [vvar]) and each case, a forked child finds the
 * mapping in /proc/self/smaps, makes one call on it, and prints
 *   <case> <name> <ret> <errno> <where> <kB> <flags...>
 * where <where> is the mapping's range afterwards in pages relative to its old start ("gone"
 * when it was unmapped, "T<a>-<b>" when it moved to TARGET), <kB> its Rss and <flags> its
 * VmFlags mnemonics. A first line per mapping gives its size: "size <name> <pages>". */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define TARGET 0x100000000UL

struct vma { unsigned long start, end; long rss_kb; char flags[512]; };

/* The smaps entry named exactly <name>; 0 when there is none. */
static int find(const char *name, struct vma *out)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = 0;
    if (!f)
        exit(2);
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char path[256] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %255s", &s, &e, path) >= 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = strcmp(path, name) == 0;
            if (in) {
                found = 1;
                out->start = s;
                out->end = e;
            }
        } else if (in && strncmp(line, "Rss:", 4) == 0) {
            out->rss_kb = strtol(line + 4, NULL, 10);
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out->flags, sizeof out->flags, "%s", line + 9);
            out->flags[strcspn(out->flags, "\n")] = 0;
        }
    }
    fclose(f);
    return found;
}

static long call(const char *c, unsigned long s, unsigned long len, int prot)
{
    if (!strcmp(c, "munmap-first")) return munmap((void *)s, PAGE);
    if (!strcmp(c, "munmap-last")) return munmap((void *)(s + len - PAGE), PAGE);
    if (!strcmp(c, "munmap-all")) return munmap((void *)s, len);
    if (!strcmp(c, "mprotect-first-none")) return mprotect((void *)s, PAGE, PROT_NONE);
    if (!strcmp(c, "mprotect-first-same")) return mprotect((void *)s, PAGE, prot);
    if (!strcmp(c, "mprotect-first-rw")) return mprotect((void *)s, PAGE, PROT_READ | PROT_WRITE);
    if (!strcmp(c, "mprotect-all-rw")) return mprotect((void *)s, len, PROT_READ | PROT_WRITE);
    if (!strcmp(c, "mprotect-all-none")) return mprotect((void *)s, len, PROT_NONE);
    if (!strcmp(c, "mlock-first")) return mlock((void *)s, PAGE);
    if (!strcmp(c, "mlock-all")) return mlock((void *)s, len);
    if (!strcmp(c, "mlock2-onfault-all")) return mlock2((void *)s, len, MLOCK_ONFAULT);
    if (!strcmp(c, "mlockall-current")) return mlockall(MCL_CURRENT);
    if (!strcmp(c, "populate-read")) return madvise((void *)s, len, MADV_POPULATE_READ);
    if (!strcmp(c, "populate-write")) return madvise((void *)s, len, MADV_POPULATE_WRITE);
    if (!strcmp(c, "dontdump-first")) return madvise((void *)s, PAGE, MADV_DONTDUMP);
    if (!strcmp(c, "dodump-first")) return madvise((void *)s, PAGE, MADV_DODUMP);
    if (!strcmp(c, "dontneed-first")) return madvise((void *)s, PAGE, MADV_DONTNEED);
    if (!strcmp(c, "cold-all")) return madvise((void *)s, len, MADV_COLD);
    if (!strcmp(c, "nohugepage-first")) return madvise((void *)s, PAGE, MADV_NOHUGEPAGE);
    if (!strcmp(c, "nohugepage-all")) return madvise((void *)s, len, MADV_NOHUGEPAGE);
    if (!strcmp(c, "dontfork-all")) return madvise((void *)s, len, MADV_DONTFORK);
    if (!strcmp(c, "random-first")) return madvise((void *)s, PAGE, MADV_RANDOM);
    if (!strcmp(c, "mremap-dontunmap")) return (long)mremap((void *)s, len, len, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    if (!strcmp(c, "mremap-move-first")) return (long)mremap((void *)s, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)TARGET);
    if (!strcmp(c, "mremap-move-all")) return (long)mremap((void *)s, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)TARGET);
    if (!strcmp(c, "mremap-shrink")) return (long)mremap((void *)s, len, PAGE, 0);
    if (!strcmp(c, "mremap-grow")) return (long)mremap((void *)s, len, len + PAGE, MREMAP_MAYMOVE);
    if (!strcmp(c, "mmap-fixed-first")) return (long)mmap((void *)s, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    fprintf(stderr, "unknown case %s\n", c);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *names[] = { "[vdso]", "[vvar]" };
    for (int n = 0; n < 2; n++) {
        struct vma v;
        if (!find(names[n], &v))
            continue;
        printf("size %s %lu\n", names[n], (v.end - v.start) / PAGE);
        for (int i = 1; i < argc; i++) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                struct vma before, after;
                find(names[n], &before);
                int prot = (strstr(before.flags, "rd") ? PROT_READ : 0) | (strstr(before.flags, "ex") ? PROT_EXEC : 0);
                errno = 0;
                long ret = call(argv[i], before.start, before.end - before.start, prot);
                int err = (ret == -1) ? errno : 0;
                if (ret != -1)
                    ret = ret == (long)TARGET ? 1 : ret == (long)before.start ? 2 : ret == 0 ? 0 : 3;
                printf("%s %s %ld %d ", argv[i], names[n], ret, err);
                if (!find(names[n], &after))
                    printf("gone 0\n");
                else if (after.start >= TARGET && after.start < 2 * TARGET)
                    printf("T%lu-%lu %ld %s\n", (after.start - TARGET) / PAGE, (after.end - TARGET) / PAGE, after.rss_kb, after.flags);
                else
                    printf("%ld-%ld %ld %s\n", (long)(after.start - before.start) / (long)PAGE, (long)(after.end - before.start) / (long)PAGE, after.rss_kb, after.flags);
                fflush(stdout);
                _exit(0);
            }
            int status;
            waitpid(pid, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return 3;
        }
    }
    return 0;
}
