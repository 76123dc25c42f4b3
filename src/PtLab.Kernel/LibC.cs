using System.Runtime.InteropServices;

namespace PtLab.Kernel;

/// <summary>
/// The libc entry points the kernel target calls. Constant values are Linux x86-64's, which PtLab's
/// <see cref="PtLab.Mm.Prot"/>, <see cref="PtLab.Mm.MapFlags"/> and <see cref="PtLab.Mm.Advice"/>
/// already carry, so arguments pass through unchanged.
/// </summary>
internal static unsafe partial class LibC
{
    private const string Library = "libc";

    /// <summary><c>MAP_FAILED</c>.</summary>
    public const nint MapFailed = -1;

    /// <summary><c>sizeof(struct utsname)</c> on Linux: six fields of 65 bytes.</summary>
    public const int UtsnameSize = 6 * UtsFieldLength;

    /// <summary><c>__NEW_UTS_LEN + 1</c>.</summary>
    public const int UtsFieldLength = 65;

    [LibraryImport(Library, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport(Library, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(nint addr, nuint length);

    [LibraryImport(Library, EntryPoint = "mprotect", SetLastError = true)]
    public static partial int Mprotect(nint addr, nuint length, int prot);

    [LibraryImport(Library, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(nint addr, nuint length, int advice);

    /// <summary>glibc's <c>mremap</c> is variadic; the fifth argument is read only with MREMAP_FIXED or MREMAP_DONTUNMAP, and x86-64 passes it in a register either way.</summary>
    [LibraryImport(Library, EntryPoint = "mremap", SetLastError = true)]
    public static partial nint Mremap(nint addr, nuint oldLength, nuint newLength, int flags, nint newAddr);

    [LibraryImport(Library, EntryPoint = "mlock", SetLastError = true)]
    public static partial int Mlock(nint addr, nuint length);

    [LibraryImport(Library, EntryPoint = "mlock2", SetLastError = true)]
    public static partial int Mlock2(nint addr, nuint length, int flags);

    [LibraryImport(Library, EntryPoint = "munlock", SetLastError = true)]
    public static partial int Munlock(nint addr, nuint length);

    /// <summary><c>sizeof(struct statfs)</c> on x86-64; <c>f_type</c> is its first field.</summary>
    public const int StatfsSize = 120;

    [LibraryImport(Library, EntryPoint = "statfs", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Statfs(string path, byte* buf);

    /// <summary><c>POSIX_FADV_DONTNEED</c>.</summary>
    public const int FadviseDontNeed = 4;

    [LibraryImport(Library, EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int Fdatasync(int fd);

    /// <summary>Returns the error number itself (0 on success), as POSIX specifies.</summary>
    [LibraryImport(Library, EntryPoint = "posix_fadvise")]
    public static partial int PosixFadvise(int fd, long offset, long length, int advice);

    [LibraryImport(Library, EntryPoint = "geteuid")]
    public static partial uint Geteuid();

    public const int SIGINT = 2;

    [LibraryImport(Library, EntryPoint = "uname", SetLastError = true)]
    public static partial int Uname(byte* buf);

    /// <summary><c>O_RDONLY | O_CLOEXEC</c>.</summary>
    public const int OpenReadOnly = 0x80000;

    [LibraryImport(Library, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport(Library, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Library, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nuint count);

    [LibraryImport(Library, EntryPoint = "pread", SetLastError = true)]
    public static partial nint Pread(int fd, byte* buf, nuint count, long offset);

    [LibraryImport(Library, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Library, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport(Library, EntryPoint = "getpid")]
    public static partial int Getpid();

    private const int ClockThreadCpuTimeId = 3;

    [LibraryImport(Library, EntryPoint = "clock_gettime")]
    private static partial int ClockGettime(int clock, long* timespec);

    /// <summary>The calling thread's CPU time in ns (<c>clock_gettime(CLOCK_THREAD_CPUTIME_ID)</c>).</summary>
    public static long ThreadCpuNanoseconds()
    {
        long* ts = stackalloc long[2];
        if (ClockGettime(ClockThreadCpuTimeId, ts) != 0)
        {
            throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        }

        return (ts[0] * 1_000_000_000L) + ts[1];
    }
}
