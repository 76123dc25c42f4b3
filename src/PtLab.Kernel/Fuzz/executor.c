/*
 * The kernel side of `ptlab fuzz kernel`: runs memory system calls and page touches inside one
 * empty 512 GiB slot (one PGD entry) of its own address space, one request per line on stdin, one
 * reply per request on stdout. No runtime shares the address space, and the program's own page
 * tables are all in place before its baseline, so every change of VmPTE and RssAnon after the
 * baseline belongs to the slot.
 *
 * Start-up (before the hello line):
 *   - THP off for this process (prctl PR_SET_THP_DISABLE): the model has no transparent huge pages;
 *     MADV_HUGEPAGE still sets VM_HUGEPAGE, so the VMA layout is unchanged by this. With
 *     PTLAB_EXECUTOR_THP=collapse in its environment, only faults outside MADV_HUGEPAGE VMAs are
 *     kept from huge pages (PR_THP_DISABLE_EXCEPT_ADVISED, Linux 6.18): MADV_COLLAPSE then
 *     collapses as in any process, and the generator draws no MADV_HUGEPAGE.
 *   - Pinned to the CPU it starts on, so every page it adds to an LRU batch is drained by the
 *     lru_add_drain() of its own MADV_PAGEOUT (-1 in the hello when pinning failed).
 *   - The slot is 0x7e0000000000 when it is free, else the highest 512 GiB slot no VMA touches. Every free gap between its end and the
 *     stack's growth limit is filled with a PROT_NONE, MAP_NORESERVE placeholder, so a mapping
 *     placed by the kernel (no MAP_FIXED) lands at the top of the slot, as in a model whose
 *     mmap_base is the slot's end.
 *   - Warm-up: every readable page of every mapping outside the slot is read, every writable
 *     private page is written back with its own value, the stack is grown, the buffers are
 *     touched, a first signal is taken and one of each operation runs in the slot, twice. Then the
 *     slot is emptied and VmPTE and RssAnon are read as the baseline.
 *
 *   - With a directory as its argument, a test file of FILE_SIZE bytes (not a whole number of
 *     pages) is created there, unlinked, and kept open for reading and writing; `mmapf` maps it.
 *     Every reset puts a new one in its place, under the same descriptor, written page by page
 *     and synced, so a sequence starts with all its pages in the page cache, clean, no hole a
 *     MADV_REMOVE punched before, and no page state an earlier sequence left: a page-cache folio
 *     can stay mlocked after its last locked mapping is gone (a MREMAP_DONTUNMAP clears VM_LOCKED
 *     on the whole old VMA without munlocking the pages it keeps), and only freeing it ends that.
 *
 *   - The heap is moved into the slot: prctl(PR_SET_MM, PR_SET_MM_MAP) puts start_brk and brk at
 *     BRK_OFFSET into it, and every reset puts them back, so `brk` grows and shrinks a heap the
 *     slot's other mappings can meet.
 *
 * Hello (first line): "ptlab-executor 1 slot=0xS end=0xE memtotal=KB thp=off|collapse cpu=N filesize=B brk=0xB"
 * (filesize=0 without a test file; brk=0x0 when the heap could not be moved, and `brk` is refused)
 *
 * Requests (numbers are strtoull base 0: 0x-prefixed hex, decimal, or -1):
 *   NAME ARG...     a system call from the table below; every address range it names must lie in
 *                   the slot, or wrap around 2^64 (which every call rejects before acting)
 *   mmapf ADDR LEN PROT FLAGS OFF
 *                   mmap of the test file at offset OFF (fd is the file's), as mmap's ranges
 *   brk ADDR        brk(ADDR), which returns the break (ADDR must be 0 or in the slot)
 *   read ADDR LEN   one volatile load at ADDR and every 4 KiB after it, below ADDR + LEN
 *   write ADDR LEN  the same with a one-byte store
 *   maps            the VMAs that lie in the slot (parsed from /proc/self/maps)
 *   reset           munlockall, munmap of the whole slot, a fresh placeholder just above it, and
 *                   a new test file; "! 1" (EPERM) when a sealed VMA keeps the slot from emptying
 *   quit            exit 0
 *
 * Replies to a call or touch: one line, RESULT then " pte=KB anon=KB file=KB shmem=KB" (VmPTE,
 * RssAnon, RssFile and RssShmem over the baseline; an mlockall(MCL_CURRENT) that makes pages of the
 * executor's own mappings resident moves the baseline by what it added there), and after a MADV_COLD or MADV_PAGEOUT that
 * returned 0 or ENOMEM " ref=KB" (the Referenced figure of /proc/self/smaps over the private
 * anonymous VMAs wholly inside its range), where RESULT is
 *   = 0xVALUE          the call returned VALUE (a touch returns 0)
 *   ! ERRNO            the call failed with ERRNO (decimal)
 *   S SIGNO CODE 0xA   the touch took signal SIGNO with si_code CODE at address A
 *   O                  a call that returns a mapping (mmap, mremap) placed it outside the slot
 *                      (no hole in the slot was large enough, so the top-down search went on
 *                      below it); the mapping was unmapped again, and the status is after that
 * Reply to maps: "N" then N lines "START END PERMS" (hex without 0x, perms as in /proc/PID/maps),
 * each VMA cut at the slot's end (one that merged with the placeholder above runs past it).
 * A request the executor will not run: "? MESSAGE"; the state is unchanged.
 *
 * To add a system call: one line in `calls` (its number, argument count, and which of its
 * arguments name ranges that must stay in the slot).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <linux/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096UL
#define SLOT_SIZE (1UL << 39)
#define TASK_SIZE_MAX 0x7ffffffff000UL
#define MAX_ARGS 6
/* Below every mmap_base x86-64 randomisation can choose (at most 1 TiB + the stack gap below the
 * top), so it is free in practice and cases replay at the same addresses. */
#define PREFERRED_SLOT 0x7e0000000000UL
/* Where the heap starts in the slot (the model's FuzzText.BrkOffset). */
#define BRK_OFFSET (2UL << 30)
/* The test file's size: 8 MiB less a part page, so its last page ends inside the file. */
#define FILE_SIZE ((8UL << 20) - 1234)
#ifndef SYS_mseal
#define SYS_mseal 462
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* A range argument pair that must stay in the slot; when cond_mask is not 0, only if
 * args[cond_arg] has one of its bits. */
struct range_arg {
    int addr, len, cond_arg;
    unsigned long cond_mask;
};

struct call {
    const char *name;
    long nr;
    int nargs;
    struct range_arg ranges[2];
    int result_len; /* the argument holding the length of a mapping the call returns, or -1 */
};

#define NO_RANGE { -1, -1, 0, 0 }

static const struct call calls[] = {
    /* name       number         args  ranges                                                          result */
    { "mmap",     SYS_mmap,      6, { { 0, 1, 3, MAP_FIXED | MAP_FIXED_NOREPLACE }, NO_RANGE }, 1 },
    { "munmap",   SYS_munmap,    2, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    { "mprotect", SYS_mprotect,  3, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    { "madvise",  SYS_madvise,   3, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    { "mremap",   SYS_mremap,    5, { { 0, 1, 0, 0 }, { 4, 2, 3, 2 | 4 /* MREMAP_FIXED | MREMAP_DONTUNMAP */ } }, 2 },
    { "mlock",    SYS_mlock,     2, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    { "mlock2",   SYS_mlock2,    3, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    { "munlock",  SYS_munlock,   2, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    /* A sealed VMA outlives every reset (munmap refuses it): the driver starts a new executor. */
    { "mseal",    SYS_mseal,     3, { { 0, 1, 0, 0 }, NO_RANGE }, -1 },
    /* These two reach the executor's own mappings too: what mlockall(MCL_CURRENT) faults in
     * outside the slot moves the baselines (see outside_slot_rss), and reset clears the locks
     * they leave (munlockall). */
    { "mlockall", SYS_mlockall,  1, { NO_RANGE, NO_RANGE }, -1 },
    { "munlockall", SYS_munlockall, 0, { NO_RANGE, NO_RANGE }, -1 },
};

static unsigned long slot_start, slot_end;
/* The heap's start in the slot, or 0 when it could not be moved there. */
static unsigned long brk_start;
/* The end of the placeholder that starts at the slot's end (slot_end when there is none). */
static unsigned long guard_end;
static long base_pte_kb, base_anon_kb, base_file_kb, base_shmem_kb;
static int status_fd = -1, maps_fd = -1, smaps_fd = -1, file_fd = -1;
/* Set while a MADV_COLD or MADV_PAGEOUT request runs that walked its whole range (it returned 0
 * or ENOMEM): the reply ends with the referenced memory of the private anonymous VMAs that lie
 * wholly in [ref_start, ref_end). */
static int want_ref;
static unsigned long ref_start, ref_end;

static char in_buf[1 << 16];
static size_t in_len, in_pos;
static char out_buf[1 << 22];
static size_t out_len;
static char proc_buf[1 << 22];
static char alt_stack[1 << 16];

static sigjmp_buf touch_env;
static volatile sig_atomic_t touch_armed;
static volatile int fault_signo, fault_code;
static volatile unsigned long fault_addr;

static void die(const char *msg)
{
    (void)!write(2, "executor: ", 10);
    (void)!write(2, msg, strlen(msg));
    (void)!write(2, "\n", 1);
    _exit(3);
}

static void on_fault(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    if (!touch_armed) {
        /* A fault outside a touch is a bug here: die with the default action. */
        signal(sig, SIG_DFL);
        return;
    }

    fault_signo = sig;
    fault_code = info->si_code;
    fault_addr = (unsigned long)info->si_addr;
    touch_armed = 0;
    siglongjmp(touch_env, 1);
}

/* ---- output ---- */

static void out_flush(void)
{
    size_t done = 0;
    while (done < out_len) {
        ssize_t n = write(1, out_buf + done, out_len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the driver went away */
        done += (size_t)n;
    }

    out_len = 0;
}

static void out_str(const char *s)
{
    size_t n = strlen(s);
    if (out_len + n > sizeof out_buf)
        die("reply too long");
    memcpy(out_buf + out_len, s, n);
    out_len += n;
}

static void out_char(char c)
{
    if (out_len + 1 > sizeof out_buf)
        die("reply too long");
    out_buf[out_len++] = c;
}

static void out_hex(unsigned long v, int prefix)
{
    char tmp[24];
    int i = 0;
    if (prefix)
        out_str("0x");
    do {
        tmp[i++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (i)
        out_char(tmp[--i]);
}

static void out_dec(long v)
{
    char tmp[24];
    int i = 0;
    unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
    if (v < 0)
        out_char('-');
    do {
        tmp[i++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (i)
        out_char(tmp[--i]);
}

/* ---- /proc ---- */

static size_t read_proc(int fd)
{
    size_t len = 0;
    for (;;) {
        if (len == sizeof proc_buf - 1)
            die("a /proc file outgrew the buffer");
        ssize_t n = pread(fd, proc_buf + len, sizeof proc_buf - 1 - len, (off_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("cannot read /proc");
        if (n == 0)
            break;
        len += (size_t)n;
    }

    proc_buf[len] = 0;
    return len;
}

static long status_field(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        die("a field is missing from /proc/self/status");
    p += strlen(key);
    while (*p == ' ' || *p == '\t')
        p++;
    return strtol(p, NULL, 10);
}

static void read_status(long *pte_kb, long *anon_kb, long *file_kb, long *shmem_kb)
{
    read_proc(status_fd);
    *pte_kb = status_field(proc_buf, "\nVmPTE:");
    *anon_kb = status_field(proc_buf, "\nRssAnon:");
    *file_kb = status_field(proc_buf, "\nRssFile:");
    *shmem_kb = status_field(proc_buf, "\nRssShmem:");
}

/* "DIR/ptlab-fuzz-file-XXXXXX" for mkstemp, or empty without a test file. */
static char file_template[4096];

/* Puts a new test file in place of the old one, under the same descriptor: created in the
 * directory, unlinked, written page by page (order-0 page-cache folios, as the model's pages) and
 * synced. Closing the old file frees its page cache. Writing the old file again would keep its
 * folios and their flags: a MREMAP_DONTUNMAP of part of a locked file VMA clears VM_LOCKED on the
 * whole old VMA without munlocking the pages it keeps, so munlockall passes them by and munmap
 * leaves them PG_mlocked on the unevictable LRU; a later sequence's MADV_PAGEOUT put them back
 * there and left them mapped, where the model, starting afresh, unmapped them. A new file also
 * has a fresh readahead state. */
static void create_file(void)
{
    static char page[PAGE];
    static char path[sizeof file_template];
    if (!file_template[0])
        return;
    memcpy(path, file_template, sizeof path);
    int fd = mkstemp(path);
    if (fd < 0)
        die("cannot create the test file");
    unlink(path);
    for (unsigned long off = 0; off < FILE_SIZE; off += PAGE) {
        size_t n = FILE_SIZE - off < PAGE ? FILE_SIZE - off : PAGE;
        if (pwrite(fd, page, n, (off_t)off) != (ssize_t)n)
            die("cannot write the test file");
    }

    if (fdatasync(fd) != 0)
        die("cannot sync the test file");
    if (file_fd < 0) {
        file_fd = fd;
        return;
    }

    if (dup2(fd, file_fd) != file_fd)
        die("cannot put the new test file in place of the old one");
    close(fd);
}

/* Calls fn(start, end, perms, ctx) for each line of /proc/self/maps. */
static void each_vma(void (*fn)(unsigned long, unsigned long, const char *, void *), void *ctx)
{
    size_t len = read_proc(maps_fd);
    char *p = proc_buf, *end = proc_buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        *nl = 0;
        char *q;
        unsigned long s = strtoul(p, &q, 16);
        unsigned long e = strtoul(q + 1, &q, 16);
        fn(s, e, q + 1, ctx);
        p = nl + 1;
    }
}

/* ---- safety ---- */

static unsigned long page_align(unsigned long len) { return (len + PAGE - 1) & ~(PAGE - 1); }

/* In the slot, or wrapping past 2^64 (every call rejects that before acting). */
static int range_ok(unsigned long addr, unsigned long len)
{
    unsigned long alen = page_align(len);
    if (len != 0 && (alen == 0 || addr + alen < addr))
        return 1;
    return addr >= slot_start && addr <= slot_end && alen <= slot_end - addr;
}

/* ---- requests ---- */

/* Moves the heap to BRK_OFFSET in the slot, empty (start_brk = brk), with PR_SET_MM_MAP, which
 * needs no CAP_SYS_RESOURCE (only CONFIG_CHECKPOINT_RESTORE): every other field is given back
 * as /proc/self/stat shows it. brk_start stays 0 when the kernel refuses. */
static void set_brk(void)
{
    char stat[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, stat, sizeof stat - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        die("cannot read /proc/self/stat");
    stat[n] = 0;
    /* Fields after the command's closing parenthesis, numbered from 3 as in proc(5). */
    unsigned long f[53] = { 0 };
    char *p = strrchr(stat, ')');
    for (int i = 3; p && i < 53; i++) {
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        f[i] = strtoul(p, NULL, 10);
    }

    unsigned long want = slot_start + BRK_OFFSET;
    struct prctl_mm_map m = {
        .start_code = f[26], .end_code = f[27], .start_data = f[45], .end_data = f[46],
        .start_brk = want, .brk = want, .start_stack = f[28], .arg_start = f[48], .arg_end = f[49],
        .env_start = f[50], .env_end = f[51], .auxv = NULL, .auxv_size = 0, .exe_fd = (__u32)-1,
    };
    if (prctl(PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0) != 0) {
        if (brk_start != 0)
            die("cannot put the heap back at its start in the slot");
        return;
    }

    brk_start = want;
}

/* Empties the slot and puts back a pristine placeholder above it: a mapping at the slot's top can
 * merge with that placeholder and leave its anon_vma there, which a later neighbour would reuse.
 * Returns -1 (errno EPERM) when a sealed VMA keeps the slot from being emptied: nothing was
 * unmapped, and only a new executor has an empty slot. */
static int reset_slot(void)
{
    munlockall(); /* clears mm->def_flags (MCL_FUTURE) and VM_LOCKED everywhere */
    if (munmap((void *)slot_start, guard_end - slot_start) != 0)
        return -1;
    if (guard_end > slot_end &&
        mmap((void *)slot_end, guard_end - slot_end, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0) != (void *)slot_end)
        die("cannot put the placeholder above the slot back");
    set_brk();
    create_file();
    return 0;
}

/* Sums of /proc/self/smaps fields over the VMAs a filter selects. */
struct smaps_sums {
    long referenced, rss, anonymous;
};

typedef int (*vma_filter)(unsigned long start, unsigned long end, char share, unsigned long inode);

static struct smaps_sums sum_smaps(vma_filter selected)
{
    size_t len = read_proc(smaps_fd);
    char *p = proc_buf, *end = proc_buf + len;
    struct smaps_sums sums = { 0, 0, 0 };
    int counted = 0;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        *nl = 0;
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) {
            /* START-END PERMS OFFSET DEV INODE [PATH], parsed by hand: no scanf, whose first use
             * could allocate memory the model never sees */
            char *q;
            unsigned long s = strtoul(p, &q, 16);
            unsigned long e = strtoul(q + 1, &q, 16);
            const char *perms = q + 1;
            q = strchr(q + 1, ' ');              /* after PERMS */
            q = q ? strchr(q + 1, ' ') : NULL;   /* after OFFSET */
            q = q ? strchr(q + 1, ' ') : NULL;   /* after DEV */
            unsigned long inode = q ? strtoul(q + 1, NULL, 10) : 1;
            counted = selected(s, e, perms[3], inode);
        } else if (counted && !strncmp(p, "Referenced:", 11)) {
            sums.referenced += strtol(p + 11, NULL, 10);
        } else if (counted && !strncmp(p, "Rss:", 4)) {
            sums.rss += strtol(p + 4, NULL, 10);
        } else if (counted && !strncmp(p, "Anonymous:", 10)) {
            sums.anonymous += strtol(p + 10, NULL, 10);
        }
        p = nl + 1;
    }

    return sums;
}

static int private_anon_in_ref_range(unsigned long s, unsigned long e, char share, unsigned long inode)
{
    return s >= ref_start && e <= ref_end && share == 'p' && inode == 0;
}

/* The Referenced kB of /proc/self/smaps summed over the private anonymous VMAs (inode 0) that lie
 * wholly in [ref_start, ref_end). smaps counts a page whose entry is young or whose folio has
 * PG_referenced (which GUP's FOLL_TOUCH sets, and MADV_FREE clears only when its per-CPU batch
 * drains); MADV_COLD and MADV_PAGEOUT clear PG_referenced of every exclusive page they walk, so
 * there the figure is the young entries alone. The zero page is not counted. */
static long slot_referenced_kb(void)
{
    return sum_smaps(private_anon_in_ref_range).referenced;
}

static int outside_slot(unsigned long s, unsigned long e, char share, unsigned long inode)
{
    (void)share;
    (void)inode;
    return e <= slot_start || s >= guard_end;
}

/* Rss and Anonymous of the VMAs that lie outside the slot: the executor's own mappings. Only
 * mlockall(MCL_CURRENT) reaches them (it populates every VMA, and a page the warm-up left
 * unfaulted becomes resident, as one of the stack's did in about one start in four); do_call
 * measures them around it so that what it adds there moves the baselines instead of the slot's
 * figures. */
static struct smaps_sums outside_slot_rss(void)
{
    return sum_smaps(outside_slot);
}

static void reply_status(void)
{
    long pte, anon, file, shmem;
    read_status(&pte, &anon, &file, &shmem);
    out_str(" pte=");
    out_dec(pte - base_pte_kb);
    out_str(" anon=");
    out_dec(anon - base_anon_kb);
    out_str(" file=");
    out_dec(file - base_file_kb);
    out_str(" shmem=");
    out_dec(shmem - base_shmem_kb);
    if (want_ref) {
        out_str(" ref=");
        out_dec(slot_referenced_kb());
    }
    out_char('\n');
}

static void refuse(const char *why)
{
    out_str("? ");
    out_str(why);
    out_char('\n');
}

static void do_call(const struct call *c, unsigned long *a, int n)
{
    if (n != c->nargs) {
        refuse("wrong number of arguments");
        return;
    }

    for (int i = 0; i < 2; i++) {
        const struct range_arg *r = &c->ranges[i];
        if (r->addr < 0 || (r->cond_mask && !(a[r->cond_arg] & r->cond_mask)))
            continue;
        if (!range_ok(a[r->addr], a[r->len])) {
            refuse("a range leaves the slot");
            return;
        }
    }

    /* MCL_CURRENT (1) without MCL_ONFAULT (4) populates the executor's own mappings too */
    int populates_own = c->nr == SYS_mlockall && (a[0] & 5) == 1;
    struct smaps_sums own = { 0, 0, 0 };
    if (populates_own)
        own = outside_slot_rss();
    errno = 0;
    long rc = syscall(c->nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    int call_errno = errno;
    if (populates_own) {
        struct smaps_sums after = outside_slot_rss();
        base_anon_kb += after.anonymous - own.anonymous;
        base_file_kb += (after.rss - after.anonymous) - (own.rss - own.anonymous);
    }

    errno = call_errno;
    if (rc == -1 && errno != 0) {
        int e = errno;
        if (e != ENOMEM)
            want_ref = 0; /* the walk stopped early: pages past it keep their PG_referenced */
        out_str("! ");
        out_dec(e);
        reply_status();
        return;
    }

    if (c->result_len >= 0) {
        unsigned long p = (unsigned long)rc, len = page_align(a[c->result_len]);
        if (!(p >= slot_start && p <= slot_end && len <= slot_end - p)) {
            munmap((void *)p, len);
            out_str("O");
            reply_status();
            return;
        }
    }

    out_str("= ");
    out_hex((unsigned long)rc, 1);
    reply_status();
}

static void do_touch(unsigned long addr, unsigned long len, int write)
{
    if (addr < slot_start || addr > slot_end || len > slot_end - addr) {
        refuse("a touch leaves the slot");
        return;
    }

    volatile unsigned long va = addr;
    unsigned long end = addr + len;
    if (sigsetjmp(touch_env, 1) == 0) {
        touch_armed = 1;
        for (; va < end; va += PAGE) {
            if (write)
                *(volatile char *)va = 1;
            else
                (void)*(volatile char *)va;
        }

        touch_armed = 0;
        out_str("= 0x0");
    } else {
        out_str("S ");
        out_dec(fault_signo);
        out_char(' ');
        out_dec(fault_code);
        out_char(' ');
        out_hex(fault_addr, 1);
    }

    reply_status();
}

struct maps_ctx {
    int count;
    size_t count_at;
};

static void emit_vma(unsigned long s, unsigned long e, const char *perms, void *ctx)
{
    struct maps_ctx *m = ctx;
    if (e <= slot_start || s >= slot_end)
        return;
    /* A VMA that merged with a placeholder above the slot is shown up to the slot's end. */
    if (e > slot_end)
        e = slot_end;
    out_hex(s, 0);
    out_char(' ');
    out_hex(e, 0);
    out_char(' ');
    for (int i = 0; i < 4 && perms[i]; i++)
        out_char(perms[i]);
    out_char('\n');
    m->count++;
}

static void do_maps(void)
{
    /* The count goes first: build the lines after a placeholder, then move them. */
    size_t head = out_len;
    struct maps_ctx m = { 0, 0 };
    each_vma(emit_vma, &m);
    char count[24];
    int i = 0;
    unsigned long c = (unsigned long)m.count;
    char tmp[24];
    do {
        tmp[i++] = (char)('0' + c % 10);
        c /= 10;
    } while (c);
    int k = 0;
    while (i)
        count[k++] = tmp[--i];
    count[k++] = '\n';
    if (out_len + (size_t)k > sizeof out_buf)
        die("reply too long");
    memmove(out_buf + head + k, out_buf + head, out_len - head);
    memcpy(out_buf + head, count, (size_t)k);
    out_len += (size_t)k;
}

static int next_line(char **line)
{
    for (;;) {
        char *nl = memchr(in_buf + in_pos, '\n', in_len - in_pos);
        if (nl) {
            *nl = 0;
            *line = in_buf + in_pos;
            in_pos = (size_t)(nl - in_buf) + 1;
            return 1;
        }

        memmove(in_buf, in_buf + in_pos, in_len - in_pos);
        in_len -= in_pos;
        in_pos = 0;
        if (in_len == sizeof in_buf)
            die("request line too long");
        out_flush();
        ssize_t n = read(0, in_buf + in_len, sizeof in_buf - in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        in_len += (size_t)n;
    }
}

static void handle(char *line)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    for (char *p = strtok(line, " \t"); p && argc < MAX_ARGS + 2; p = strtok(NULL, " \t"))
        argv[argc++] = p;
    if (argc == 0)
        return;

    unsigned long a[MAX_ARGS] = { 0 };
    int n = argc - 1;
    if (n > MAX_ARGS) {
        refuse("too many arguments");
        return;
    }

    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        a[i] = strtoull(argv[i + 1], &end, 0);
        if (*end || errno) {
            refuse("an argument is not a number");
            return;
        }
    }

    if (!strcmp(argv[0], "read") || !strcmp(argv[0], "write")) {
        if (n != 2)
            refuse("wrong number of arguments");
        else
            do_touch(a[0], a[1], argv[0][0] == 'w');
        return;
    }

    if (!strcmp(argv[0], "mmapf")) {
        /* mmap's own checks, with the test file's descriptor and the offset last. */
        if (file_fd < 0) {
            refuse("no test file");
        } else if (n != 5) {
            refuse("wrong number of arguments");
        } else {
            a[5] = a[4];
            a[4] = (unsigned long)file_fd;
            do_call(&calls[0], a, 6);
        }
        return;
    }

    if (!strcmp(argv[0], "brk")) {
        if (n != 1) {
            refuse("wrong number of arguments");
        } else if (brk_start == 0) {
            refuse("the heap is not in the slot (prctl PR_SET_MM_MAP refused)");
        } else if (a[0] != 0 && (a[0] < slot_start || a[0] > slot_end)) {
            refuse("a range leaves the slot");
        } else {
            out_str("= ");
            out_hex((unsigned long)syscall(SYS_brk, a[0]), 1);
            reply_status();
        }
        return;
    }

    if (!strcmp(argv[0], "maps")) {
        do_maps();
        return;
    }

    if (!strcmp(argv[0], "reset")) {
        if (reset_slot() != 0) {
            out_str("! ");
            out_dec(errno);
        } else {
            out_str("= 0x0");
        }
        reply_status();
        return;
    }

    if (!strcmp(argv[0], "quit"))
        _exit(0);

    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        if (!strcmp(argv[0], calls[i].name)) {
            errno = 0;
            /* MADV_COLD (20) and MADV_PAGEOUT (21) over a range in the slot */
            want_ref = !strcmp(argv[0], "madvise") && n == 3 && (a[2] == 20 || a[2] == 21)
                && a[0] + page_align(a[1]) >= a[0];
            ref_start = a[0];
            ref_end = a[0] + page_align(a[1]);
            do_call(&calls[i], a, n);
            want_ref = 0;
            return;
        }
    }

    refuse("unknown request");
}

/* ---- start-up ---- */

struct layout {
    unsigned long stack_end;
    unsigned long highest_free_slot;
};

static void find_stack(unsigned long s, unsigned long e, const char *perms, void *ctx)
{
    struct layout *l = ctx;
    if (strstr(perms, "[stack]"))
        l->stack_end = e;
}

static unsigned long vma_starts[4096], vma_ends[4096];
static int vma_count;

static void collect(unsigned long s, unsigned long e, const char *perms, void *ctx)
{
    (void)perms;
    (void)ctx;
    if (vma_count < 4096) {
        vma_starts[vma_count] = s;
        vma_ends[vma_count] = e;
        vma_count++;
    }
}

static int any_vma_in(unsigned long s, unsigned long e)
{
    for (int i = 0; i < vma_count; i++)
        if (vma_starts[i] < e && s < vma_ends[i])
            return 1;
    return 0;
}

/* Touches every page of a mapping outside the slot: reads it, and writes back what it read when
 * the mapping is writable and private, so that its tables and anonymous pages all exist now. */
static void warm_vma(unsigned long s, unsigned long e, const char *perms, void *ctx)
{
    (void)ctx;
    if (e > TASK_SIZE_MAX || (s < slot_end && e > slot_start) || perms[0] != 'r')
        return;
    if (strstr(perms, "[stack]") || strstr(perms, "[vvar") || strstr(perms, "[vsyscall]"))
        return;
    int writable = perms[1] == 'w' && perms[3] == 'p';
    volatile unsigned long va = s;
    while (va < e) {
        if (sigsetjmp(touch_env, 1) == 0) {
            touch_armed = 1;
            for (; va < e; va += PAGE) {
                volatile char *p = (volatile char *)va;
                char c = *p;
                if (writable)
                    *p = c;
            }

            touch_armed = 0;
        } else {
            va += PAGE; /* past the end of a file: skip the page */
        }
    }
}

static void grow_stack(void)
{
    volatile char big[256 << 10];
    for (size_t i = 0; i < sizeof big; i += PAGE)
        big[i] = 0;
}

static void exercise_slot(void)
{
    /* One of each operation, a fault and a read of /proc, then an empty slot again. */
    char *p = mmap((void *)slot_start, 4 << 20, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED)
        die("cannot map in the slot");
    do_touch(slot_start, 4 << 20, 1);
    do_touch(slot_start, 4 << 20, 0);
    mprotect(p, PAGE, PROT_NONE);
    do_touch(slot_start, PAGE, 0);
    madvise(p, 2 << 20, MADV_DONTNEED);
    madvise(p + (2 << 20), 2 << 20, MADV_FREE);
    munmap(p, 4 << 20);
    if (file_fd >= 0) {
        /* The file's paths too: private and shared, read, written, past the end of the file. */
        char *f = mmap((void *)slot_start, 4 << 20, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_FIXED_NOREPLACE, file_fd, 0);
        char *g = mmap((void *)(slot_start + (4 << 20)), 12 << 20, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED_NOREPLACE, file_fd, 0);
        char *h = mmap((void *)(slot_start + (16 << 20)), 1 << 20, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (f == MAP_FAILED || g == MAP_FAILED || h == MAP_FAILED)
            die("cannot map the test file in the slot");
        do_touch(slot_start, 4 << 20, 0);
        do_touch(slot_start, 4 << 20, 1);
        do_touch(slot_start + (4 << 20), 12 << 20, 0);
        do_touch(slot_start + (4 << 20), 1 << 20, 1);
        do_touch(slot_start + (16 << 20), 1 << 20, 1);
        madvise(g, 1 << 20, MADV_REMOVE);
        madvise(h, 1 << 20, MADV_REMOVE);
        munmap((void *)slot_start, 17 << 20);
        create_file();
    }
    do_touch(slot_start, PAGE, 1);
    char *q = mmap(NULL, 2 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED || (unsigned long)q != slot_end - (2 << 20))
        die("a mapping placed by the kernel did not land at the top of the slot");
    munmap(q, 2 << 20);
    do_maps();
    ref_start = slot_start;
    ref_end = slot_end;
    (void)slot_referenced_kb();
    reset_slot();
    out_len = 0;
}

int main(int argc, char **argv)
{
    /* An unlimited stack rlimit selects the legacy bottom-up layout at exec: run again with 8 MiB. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur == RLIM_INFINITY) {
        rl.rlim_cur = 8 << 20;
        if (setrlimit(RLIMIT_STACK, &rl) == 0)
            execv("/proc/self/exe", argv);
        die("the stack rlimit is unlimited (legacy mmap layout) and cannot be lowered");
    }

    const char *thp_mode = getenv("PTLAB_EXECUTOR_THP");
    int collapse = thp_mode && !strcmp(thp_mode, "collapse");
    if (prctl(PR_SET_THP_DISABLE, 1, collapse ? 1UL << 1 : 0UL, 0, 0) != 0)
        die(collapse ? "prctl(PR_SET_THP_DISABLE, PR_THP_DISABLE_EXCEPT_ADVISED) failed (Linux 6.18 or later needed)"
                     : "prctl(PR_SET_THP_DISABLE) failed");

    /* One CPU: pages sit in per-CPU LRU batches until drained, and MADV_PAGEOUT drains only the
     * local CPU's (lru_add_drain), so a process that moved between CPUs would see pages skipped. */
    int cpu = sched_getcpu();
    if (cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            cpu = -1;
    }

    stack_t ss = { .ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0 };
    memset(alt_stack, 0, sizeof alt_stack);
    if (sigaltstack(&ss, NULL) != 0)
        die("sigaltstack failed");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || sigaction(SIGBUS, &sa, NULL) != 0)
        die("sigaction failed");

    memset(out_buf, 0, sizeof out_buf);
    memset(proc_buf, 0, sizeof proc_buf);
    memset(in_buf, 0, sizeof in_buf);
    status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    smaps_fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (status_fd < 0 || maps_fd < 0 || smaps_fd < 0)
        die("cannot open /proc/self/status, maps or smaps");

    struct layout l = { 0, 0 };
    each_vma(find_stack, &l);
    each_vma(collect, NULL);
    if (l.stack_end == 0)
        die("no [stack] in /proc/self/maps");
    if (!any_vma_in(PREFERRED_SLOT, PREFERRED_SLOT + SLOT_SIZE)) {
        slot_start = PREFERRED_SLOT;
    } else {
        for (unsigned long s = (TASK_SIZE_MAX & ~(SLOT_SIZE - 1)); s >= SLOT_SIZE; s -= SLOT_SIZE) {
            if (!any_vma_in(s, s + SLOT_SIZE)) {
                slot_start = s;
                break;
            }
        }
    }

    if (slot_start == 0)
        die("no empty 512 GiB slot");
    slot_end = slot_start + SLOT_SIZE;

    /* Fill every free gap above the slot, up to the stack's growth limit and its guard gap. */
    unsigned long limit = l.stack_end - (8UL << 20) - (1UL << 20);
    if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1UL << 34))
        limit = l.stack_end - page_align(rl.rlim_cur) - (1UL << 20);
    unsigned long cursor = slot_end;
    guard_end = slot_end;
    for (int i = 0; i <= vma_count && cursor < limit; i++) {
        unsigned long s = i < vma_count ? vma_starts[i] : limit;
        unsigned long e = i < vma_count ? vma_ends[i] : limit;
        if (e <= cursor)
            continue;
        if (s > limit)
            s = limit;
        if (s > cursor) {
            void *p = mmap((void *)cursor, s - cursor, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
            if (p != (void *)cursor)
                die("cannot fill a gap above the slot");
            if (cursor == slot_end)
                guard_end = s;
        }

        cursor = e;
    }

    long memtotal = 0;
    int mfd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (mfd >= 0) {
        ssize_t n = read(mfd, proc_buf, sizeof proc_buf - 1);
        if (n > 0) {
            proc_buf[n] = 0;
            memtotal = status_field(proc_buf, "MemTotal:");
        }
        close(mfd);
    }

    if (argc > 1) {
        if (snprintf(file_template, sizeof file_template, "%s/ptlab-fuzz-file-XXXXXX", argv[1]) >= (int)sizeof file_template)
            die("the test file's directory name is too long");
        create_file();
    }

    set_brk();
    for (int pass = 0; pass < 2; pass++) {
        grow_stack();
        each_vma(warm_vma, NULL);
        exercise_slot();
        long pte, anon, file, shmem;
        read_status(&pte, &anon, &file, &shmem);
    }

    /* MAP_GROWSDOWN mappings in the slot grow up to the model's RLIMIT_STACK (8 MiB); the
     * executor's own stack is grown already. */
    if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != (8UL << 20)) {
        rl.rlim_cur = 8UL << 20;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
            die("the stack rlimit's hard limit is below 8 MiB");
        if (setrlimit(RLIMIT_STACK, &rl) != 0)
            die("cannot set the stack rlimit to 8 MiB");
    }

    read_status(&base_pte_kb, &base_anon_kb, &base_file_kb, &base_shmem_kb);
    out_str("ptlab-executor 1 slot=");
    out_hex(slot_start, 1);
    out_str(" end=");
    out_hex(slot_end, 1);
    out_str(" memtotal=");
    out_dec(memtotal);
    out_str(collapse ? " thp=collapse cpu=" : " thp=off cpu=");
    out_dec(cpu);
    out_str(" filesize=");
    out_dec(file_fd >= 0 ? (long)FILE_SIZE : 0);
    out_str(" brk=");
    out_hex(brk_start, 1);
    out_char('\n');

    char *line;
    while (next_line(&line))
        handle(line);
    out_flush();
    return 0;
}
