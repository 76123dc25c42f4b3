/*
 * A child process for the host-kernel checks of calls that must not run inside the test runner's
 * own address space: brk (the C library's allocator owns the runner's break; this program never
 * calls malloc, so its heap is untouched until a request moves the break), mlockall and
 * munlockall (they act on every mapping), and MAP_GROWSDOWN stacks (a refused growth is a real
 * SIGSEGV). Mappings go in one empty 512 GiB slot (one PGD entry), as `ptlab compare --kernel`
 * does; it reports changes of VmPTE, RssAnon and VmLck over a baseline taken once its own memory
 * is settled, so every change belongs to what the requests did.
 *
 * No malloc and no stdio: every buffer is static, so the program's own mappings stay as they are.
 *
 * Start-up: picks the slot (0x7e0000000000 when free, else the highest free slot below it),
 * reads every readable page outside it and writes back every writable private one (so that a
 * later mlockall populates nothing outside the slot), then prints "slot 0xS".
 *
 * Requests, one per line, numbers in C notation:
 *   mmap A L PROT FLAGS | munmap A L | mprotect A L PROT | madvise A L ADVICE
 *   mremap A OLD NEW FLAGS NEWADDR | mlock A L | mlock2 A L FLAGS | munlock A L
 *   mlockall FLAGS | munlockall | brk A
 *   touch A L W       one load (W=0) or store (W=1) per page of [A, A + L)
 *   status            "pte=KB anon=KB lck=KB", over the baseline
 *   layout [A L]      "N", then N lines "START END FLAGS... rss=KB" for the VMAs that meet
 *                     [A, A + L), the slot when no range is given
 *   pagemap A N       "P V..." : the /proc/self/pagemap entries of the N (at most 512) pages from A
 *   quit
 * Replies: "= 0xVALUE", "! ERRNO", or for a touch that faulted "S SIGNO CODE 0xADDR".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SLOT (1UL << 39)
#define PREFERRED 0x7e0000000000UL

static char buf[1 << 22];
static char out[1 << 16];
static size_t olen;
static unsigned long slot;
static long base_pte, base_anon, base_lck;
static sigjmp_buf env;
static volatile int armed, fsig, fcode;
static volatile unsigned long faddr;
static char altstack[1 << 16];

static char *sink = out;
static size_t *sinklen = &olen;
static void emit(const char *s) { size_t n = strlen(s); memcpy(sink + *sinklen, s, n); *sinklen += n; }
static void emit_hex(unsigned long v)
{
    char t[24]; int i = 0;
    emit("0x");
    do { t[i++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (i) { char c[2] = { t[--i], 0 }; emit(c); }
}
static void emit_dec(long v)
{
    char t[24]; int i = 0; unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
    if (v < 0) emit("-");
    do { t[i++] = (char)('0' + u % 10); u /= 10; } while (u);
    while (i) { char c[2] = { t[--i], 0 }; emit(c); }
}
static void flush(void) { emit("\n"); (void)!write(1, out, olen); olen = 0; }

static size_t slurp(const char *path)
{
    int fd = open(path, O_RDONLY);
    size_t n = 0;
    ssize_t r;
    while (fd >= 0 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    if (fd >= 0)
        close(fd);
    buf[n] = 0;
    return n;
}

static long field(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtol(p + strlen(key), NULL, 10) : 0;
}

static void status(long *pte, long *anon, long *lck)
{
    slurp("/proc/self/status");
    *pte = field(buf, "\nVmPTE:");
    *anon = field(buf, "\nRssAnon:");
    *lck = field(buf, "\nVmLck:");
}

static void on_fault(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    if (!armed) { signal(sig, SIG_DFL); return; }
    fsig = sig; fcode = info->si_code; faddr = (unsigned long)info->si_addr; armed = 0;
    siglongjmp(env, 1);
}

/* Reads every readable page outside the slot and writes back every writable private one. */
static void settle(void)
{
    static char maps[1 << 20];
    size_t n = slurp("/proc/self/maps");
    memcpy(maps, buf, n + 1);
    for (char *p = maps; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        unsigned long s = strtoul(p, &p, 16), e = strtoul(p + 1, &p, 16);
        char r = p[1], w = p[2], priv = p[4];
        int special = strstr(p, "[vvar") || strstr(p, "[vsyscall]");
        if (!special && r == 'r' && (s < slot || s >= slot + SLOT)) {
            for (unsigned long a = s; a < e; a += 4096) {
                volatile char *c = (volatile char *)a;
                char v = *c;
                if (w == 'w' && priv == 'p')
                    *c = v;
            }
        }
        p = nl + 1;
    }
}

static int slot_free(unsigned long s)
{
    slurp("/proc/self/maps");
    for (char *p = buf; *p;) {
        unsigned long a = strtoul(p, &p, 16), b = strtoul(p + 1, &p, 16);
        if (a < s + SLOT && b > s)
            return 0;
        p = strchr(p, '\n');
        if (!p) break;
        p++;
    }
    return 1;
}

static void layout(unsigned long lo, unsigned long hi)
{
    static char smaps[1 << 22];
    static char lines[1 << 16];
    size_t n = slurp("/proc/self/smaps"), ln = 0;
    int count = 0;
    unsigned long s = 0, e = 0;
    long rss = 0;
    memcpy(smaps, buf, n + 1);
    for (char *p = smaps; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        if (!strncmp(p, "Rss:", 4)) {
            rss = strtol(p + 4, NULL, 10);
        } else if (!strncmp(p, "VmFlags:", 8)) {
            if (s < hi && e > lo) {
                sink = lines; sinklen = &ln;
                emit_hex(s); emit(" "); emit_hex(e); emit(p + 8); emit(" rss="); emit_dec(rss); emit("\n");
                sink = out; sinklen = &olen;
                count++;
            }
        } else {
            char *q;
            unsigned long a = strtoul(p, &q, 16);
            if (q != p && *q == '-') { s = a; e = strtoul(q + 1, NULL, 16); }
        }
        p = nl + 1;
    }
    emit_dec(count);
    flush();
    (void)!write(1, lines, ln);
}

int main(void)
{
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack };
    sigaltstack(&ss, NULL);
    struct sigaction sa = { .sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER };
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    for (slot = PREFERRED; slot >= SLOT && !slot_free(slot); slot -= SLOT)
        ;
    settle();
    settle();
    status(&base_pte, &base_anon, &base_lck);
    emit("slot "); emit_hex(slot); flush();

    static char line[512];
    size_t ll = 0;
    for (;;) {
        char c;
        if (read(0, &c, 1) != 1) return 0;
        if (c != '\n') { if (ll < sizeof line - 1) line[ll++] = c; continue; }
        line[ll] = 0; ll = 0;
        char cmd[32] = { 0 };
        unsigned long a[6] = { 0 };
        char *p = line;
        int i = 0;
        while (*p && *p != ' ' && i < 31) cmd[i++] = *p++;
        for (i = 0; i < 6 && *p; i++) a[i] = strtoul(p, &p, 0);
        long r = 0;
        errno = 0;
        if (!strcmp(cmd, "quit")) return 0;
        if (!strcmp(cmd, "status")) {
            long pte, anon, lck;
            status(&pte, &anon, &lck);
            emit("pte="); emit_dec(pte - base_pte); emit(" anon="); emit_dec(anon - base_anon);
            emit(" lck="); emit_dec(lck - base_lck); flush();
            continue;
        }
        if (!strcmp(cmd, "layout")) { layout(a[1] ? a[0] : slot, a[1] ? a[0] + a[1] : slot + SLOT); continue; }
        if (!strcmp(cmd, "pagemap")) {
            static uint64_t entries[512];
            unsigned long n = a[1] < 512 ? a[1] : 512;
            int fd = open("/proc/self/pagemap", O_RDONLY);
            ssize_t got = fd < 0 ? -1 : pread(fd, entries, n * 8, (off_t)(a[0] / 4096 * 8));
            if (fd >= 0)
                close(fd);
            if (got != (ssize_t)(n * 8)) { emit("! "); emit_dec(got < 0 ? errno : EIO); flush(); continue; }
            emit("P");
            for (unsigned long k = 0; k < n; k++) { emit(" "); emit_hex(entries[k]); }
            flush();
            continue;
        }
        if (!strcmp(cmd, "touch")) {
            if (sigsetjmp(env, 1)) {
                emit("S "); emit_dec(fsig); emit(" "); emit_dec(fcode); emit(" "); emit_hex(faddr); flush();
                continue;
            }
            armed = 1;
            for (unsigned long va = a[0]; va < a[0] + a[1]; va += 4096) {
                volatile char *q = (volatile char *)va;
                if (a[2]) *q = 1; else (void)*q;
            }
            armed = 0;
            emit("= 0x0"); flush();
            continue;
        }
        if (!strcmp(cmd, "mmap")) r = (long)mmap((void *)a[0], a[1], (int)a[2], (int)a[3], -1, 0);
        else if (!strcmp(cmd, "munmap")) r = munmap((void *)a[0], a[1]);
        else if (!strcmp(cmd, "mprotect")) r = mprotect((void *)a[0], a[1], (int)a[2]);
        else if (!strcmp(cmd, "madvise")) r = madvise((void *)a[0], a[1], (int)a[2]);
        else if (!strcmp(cmd, "mremap")) r = syscall(SYS_mremap, a[0], a[1], a[2], a[3], a[4]);
        else if (!strcmp(cmd, "mlock")) r = mlock((void *)a[0], a[1]);
        else if (!strcmp(cmd, "mlock2")) r = syscall(SYS_mlock2, a[0], a[1], a[2]);
        else if (!strcmp(cmd, "munlock")) r = munlock((void *)a[0], a[1]);
        else if (!strcmp(cmd, "mlockall")) r = mlockall((int)a[0]);
        else if (!strcmp(cmd, "munlockall")) r = munlockall();
        else if (!strcmp(cmd, "brk")) r = syscall(SYS_brk, a[0]);
        else { emit("? unknown request"); flush(); continue; }
        if (r == -1 && errno) { emit("! "); emit_dec(errno); }
        else { emit("= "); emit_hex((unsigned long)r); }
        flush();
    }
}
