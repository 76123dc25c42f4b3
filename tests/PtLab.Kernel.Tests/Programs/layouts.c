/* Builds one page-table layout with a known truth, prints "ready START END" (the region, 2 MiB
   aligned, in hex) and waits for commands on stdin: "exec" execs /bin/sleep, EOF exits.
   Layouts: halves whole guard thp zero tmpfs sparse split. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <errno.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define TWO_MIB (2UL << 20)

static void die(const char *what) { perror(what); exit(3); }

/* A region of `size` bytes at a 2 MiB-aligned address, between PROT_NONE pads in other 2 MiB slots,
   so no page table of the region is shared with any other mapping. */
static char *region(size_t size, int flags, int fd)
{
    char *pad = mmap(NULL, size + 2 * TWO_MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pad == MAP_FAILED) die("mmap pad");
    char *p = (char *)(((uintptr_t)pad + TWO_MIB - 1) & ~(TWO_MIB - 1));
    if (p == pad) p += TWO_MIB;
    if (mmap(p, size, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0) == MAP_FAILED) die("mmap region");
    return p;
}

static void write_pages(char *p, size_t len) { for (size_t o = 0; o < len; o += 4096) p[o] = 1; }

int main(int argc, char **argv)
{
    const char *layout = argc > 1 ? argv[1] : "";
    size_t size = 64UL << 20;
    char *p;
    if (!strcmp(layout, "halves")) {          /* 32 tables, each emptied by two 1 MiB DONTNEEDs */
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        for (size_t i = 0; i < size; i += TWO_MIB) {
            write_pages(p + i, TWO_MIB);
            madvise(p + i, TWO_MIB / 2, MADV_DONTNEED);
            madvise(p + i + TWO_MIB / 2, TWO_MIB / 2, MADV_DONTNEED);
        }
    } else if (!strcmp(layout, "whole")) {    /* 32 tables, each emptied by one 2 MiB DONTNEED */
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        for (size_t i = 0; i < size; i += TWO_MIB) {
            write_pages(p + i, TWO_MIB);
            madvise(p + i, TWO_MIB, MADV_DONTNEED);
        }
    } else if (!strcmp(layout, "guard")) {    /* 4 tables holding one guard marker each */
        size = 8UL << 20;
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        for (size_t i = 0; i < size; i += TWO_MIB)
            if (madvise(p + i, 4096, MADV_GUARD_INSTALL) != 0) { printf("skip MADV_GUARD_INSTALL: %s\n", strerror(errno)); return 0; }
    } else if (!strcmp(layout, "thp")) {      /* 32 THPs: no PTE table in use, 32 deposited */
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        if (madvise(p, size, MADV_HUGEPAGE) != 0) die("MADV_HUGEPAGE");
        write_pages(p, size);
    } else if (!strcmp(layout, "zero")) {     /* 32 tables of zero-page entries */
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        for (size_t o = 0; o < size; o += 4096) (void)*(volatile char *)(p + o);
    } else if (!strcmp(layout, "tmpfs")) {    /* 16 tables of a shared tmpfs mapping, the upper 8 emptied in halves */
        size = 32UL << 20;
        int fd = memfd_create("ptlab-layout", 0);
        if (fd < 0 || ftruncate(fd, size) != 0) die("memfd");
        p = region(size, MAP_SHARED, fd);
        write_pages(p, size);
        for (size_t i = size / 2; i < size; i += TWO_MIB) {
            madvise(p + i, TWO_MIB / 2, MADV_DONTNEED);
            madvise(p + i + TWO_MIB / 2, TWO_MIB / 2, MADV_DONTNEED);
        }
    } else if (!strcmp(layout, "sparse")) {   /* 64 GiB, one page per 8 MiB: 8,192 tables, every other one emptied by a 4 KiB DONTNEED */
        size = 64UL << 30;
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
        size_t n = 0;
        for (size_t i = 0; i < size; i += 4 * TWO_MIB, n++) {
            p[i] = 1;
            if (n % 2) madvise(p + i, 4096, MADV_DONTNEED);
        }
    } else if (!strcmp(layout, "split")) {    /* 4 MiB in three VMAs: the first two share one table */
        size = 4UL << 20;
        p = region(size, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        write_pages(p, size);
        if (mprotect(p + TWO_MIB / 2, TWO_MIB / 2, PROT_READ) != 0) die("mprotect");
    } else {
        fprintf(stderr, "unknown layout '%s'\n", layout);
        return 2;
    }

    printf("ready %lx %lx\n", (unsigned long)p, (unsigned long)(p + size));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "exec", 4)) {
            execl("/bin/sleep", "sleep", "30", (char *)NULL);
            die("exec");
        }
    }
    return 0;
}
