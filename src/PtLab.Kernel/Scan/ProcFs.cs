using System.Runtime.InteropServices;
using System.Text;

namespace PtLab.Kernel.Scan;

/// <summary>Why a process could not be scanned.</summary>
public enum ScanFailure
{
    /// <summary>No process has this pid (ENOENT at the first open).</summary>
    NoSuchProcess,

    /// <summary>A kernel thread: it has no user address space.</summary>
    KernelThread,

    /// <summary>The process exists but has no address space any more (a zombie).</summary>
    NoAddressSpace,

    /// <summary>EACCES/EPERM: the caller may not read the target's page tables.</summary>
    PermissionDenied,

    /// <summary>The process exited or exec'd while it was being scanned (ESRCH, ENOENT or an early EOF).</summary>
    Vanished,

    /// <summary>A /proc file did not have the expected shape.</summary>
    Malformed,

    /// <summary>The kernel refused a request the scanner needs (an errno PtLab does not expect).</summary>
    Failed,
}

/// <summary>A process that could not be scanned: the pid, the file and a one-line reason.</summary>
public sealed class ScanException(ScanFailure kind, int pid, string file, string reason)
    : Exception($"pid {pid}: {file}: {reason}")
{
    /// <summary>Why.</summary>
    public ScanFailure Kind { get; } = kind;

    /// <summary>The target.</summary>
    public int Pid { get; } = pid;

    /// <summary>The /proc file being read.</summary>
    public string File { get; } = file;

    /// <summary>The reason alone, without pid and file.</summary>
    public string Reason { get; } = reason;
}

/// <summary>Reads <c>/proc/PID/*</c> with errno-exact failures (the .NET file API folds ESRCH and EACCES into generic exceptions).</summary>
internal static unsafe class ProcFs
{
    private const int EPERM = 1;
    private const int ENOENT = 2;
    private const int ESRCH = 3;
    private const int EINTR = 4;
    private const int EACCES = 13;

    /// <summary>The root of procfs; tests point it elsewhere only through <see cref="ProcessScanner"/>'s options.</summary>
    public const string Root = "/proc";

    /// <summary>Who may read a process's page tables, for EACCES messages.</summary>
    public const string AccessRule =
        "reading another process's maps and page tables needs PTRACE_MODE_READ: the same uid as the target (and a dumpable target), or CAP_SYS_PTRACE (root)";

    /// <summary>Opens a /proc file read-only; throws <see cref="ScanException"/> naming the pid, file and errno.</summary>
    public static int Open(int pid, string path, bool firstOpen)
    {
        int fd = LibC.Open(path, LibC.OpenReadOnly);
        if (fd < 0)
        {
            throw Failure(pid, path, Marshal.GetLastPInvokeError(), firstOpen);
        }

        return fd;
    }

    /// <summary>Reads a whole /proc text file.</summary>
    public static string ReadText(int pid, string path, bool firstOpen = false)
    {
        int fd = Open(pid, path, firstOpen);
        try
        {
            var bytes = new List<byte>(16384);
            byte* buf = stackalloc byte[16384];
            while (true)
            {
                nint n = LibC.Read(fd, buf, 16384);
                if (n < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == EINTR)
                    {
                        continue;
                    }

                    throw Failure(pid, path, e, firstOpen: false);
                }

                if (n == 0)
                {
                    break;
                }

                bytes.AddRange(new ReadOnlySpan<byte>(buf, (int)n));
            }

            return Encoding.UTF8.GetString(CollectionsMarshal.AsSpan(bytes));
        }
        finally
        {
            LibC.Close(fd);
        }
    }

    /// <summary>The exception for <paramref name="errno"/> from an open or read of <paramref name="path"/>.</summary>
    public static ScanException Failure(int pid, string path, int errno, bool firstOpen)
    {
        var e = LinuxErrno.Describe(errno);
        return errno switch
        {
            ENOENT when firstOpen => new ScanException(ScanFailure.NoSuchProcess, pid, path, $"no such process ({e.Name})"),
            ENOENT or ESRCH => new ScanException(ScanFailure.Vanished, pid, path, $"the process exited or exec'd during the scan ({e.Name})"),
            EACCES or EPERM => new ScanException(ScanFailure.PermissionDenied, pid, path, $"permission denied ({e.Name}): {AccessRule}"),
            _ => new ScanException(ScanFailure.Failed, pid, path, $"{e.Name}: {e.Message}"),
        };
    }

    /// <summary>The pids under /proc, ascending.</summary>
    public static List<int> Pids()
    {
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories(Root))
        {
            if (int.TryParse(Path.GetFileName(dir.AsSpan()), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid))
            {
                pids.Add(pid);
            }
        }

        pids.Sort();
        return pids;
    }
}
