using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace PtLab.Kernel.Scan;

/// <summary>
/// Stops a process with SIGSTOP for a consistent scan and resumes it with SIGCONT when disposed, and
/// also when ptlab is interrupted (SIGINT, SIGTERM, SIGHUP, SIGQUIT) or exits, so a target is never
/// left stopped by ptlab. A process that was already stopped is left stopped. Only SIGKILL of ptlab
/// itself can skip the resume.
/// </summary>
public sealed class Freezer : IDisposable
{
    private const int SIGCONT = 18;
    private const int SIGSTOP = 19;

    private readonly int _pid;
    private readonly bool _wasStopped;
    private readonly List<PosixSignalRegistration> _signals = [];
    private int _resumed;

    private Freezer(int pid, bool wasStopped)
    {
        _pid = pid;
        _wasStopped = wasStopped;
    }

    /// <summary>Whether the target is held stopped by this freezer now.</summary>
    public bool Holding => !_wasStopped && Volatile.Read(ref _resumed) == 0;

    /// <summary>
    /// Stops <paramref name="pid"/> and waits until every thread is stopped (at most <paramref name="timeout"/>).
    /// Throws <see cref="ScanException"/> when the process cannot be stopped or does not stop in time (it is resumed first).
    /// </summary>
    public static Freezer Freeze(int pid, TimeSpan timeout)
    {
        if (pid == Environment.ProcessId)
        {
            throw new ScanException(ScanFailure.Failed, pid, "--freeze", "ptlab cannot stop itself");
        }

        string stat = $"{ProcFs.Root}/{pid.ToString(CultureInfo.InvariantCulture)}/stat";
        bool wasStopped = AllThreadsStopped(pid);
        var f = new Freezer(pid, wasStopped);
        if (wasStopped)
        {
            return f;
        }

        // Handlers first, so that an interrupt between the stop and the registration cannot strand the target.
        foreach (var sig in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT })
        {
            f._signals.Add(PosixSignalRegistration.Create(sig, _ => f.Resume()));
        }

        AppDomain.CurrentDomain.ProcessExit += f.OnExit;
        if (LibC.Kill(pid, SIGSTOP) != 0)
        {
            int e = Marshal.GetLastPInvokeError();
            f.Dispose();
            throw ProcFs.Failure(pid, $"kill(SIGSTOP) for {stat}", e, firstOpen: true);
        }

        var sw = Stopwatch.StartNew();
        while (!AllThreadsStopped(pid))
        {
            if (sw.Elapsed > timeout)
            {
                f.Dispose();
                throw new ScanException(ScanFailure.Failed, pid, stat, $"the process did not stop within {timeout.TotalSeconds:0.#} s (a thread in uninterruptible sleep?); it was resumed");
            }

            Thread.Sleep(1);
        }

        return f;
    }

    /// <summary>Sends SIGCONT once, unless the process was stopped before the freeze.</summary>
    public void Resume()
    {
        if (_wasStopped || Interlocked.Exchange(ref _resumed, 1) != 0)
        {
            return;
        }

        LibC.Kill(_pid, SIGCONT); // ESRCH: it exited meanwhile, nothing to resume
    }

    /// <summary>Resumes the target and drops the signal handlers.</summary>
    public void Dispose()
    {
        Resume();
        AppDomain.CurrentDomain.ProcessExit -= OnExit;
        foreach (var s in _signals)
        {
            s.Dispose();
        }

        _signals.Clear();
    }

    private void OnExit(object? sender, EventArgs e) => Resume();

    /// <summary>Whether every thread of <paramref name="pid"/> is stopped (state T or t); false when it has gone.</summary>
    internal static bool AllThreadsStopped(int pid)
    {
        string tasks = $"{ProcFs.Root}/{pid.ToString(CultureInfo.InvariantCulture)}/task";
        try
        {
            bool any = false;
            foreach (var t in Directory.EnumerateDirectories(tasks))
            {
                string s = File.ReadAllText(t + "/stat");
                int close = s.LastIndexOf(')');
                if (close < 0 || close + 2 >= s.Length)
                {
                    return false;
                }

                char state = s[close + 2];
                if (state is not ('T' or 't'))
                {
                    return false;
                }

                any = true;
            }

            return any;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
