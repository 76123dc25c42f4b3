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
    private readonly Lock _gate = new();
    private bool _stopSent;
    private bool _resumed;

    private Freezer(int pid, bool wasStopped)
    {
        _pid = pid;
        _wasStopped = wasStopped;
    }

    /// <summary>Whether the target is held stopped by this freezer now.</summary>
    public bool Holding
    {
        get
        {
            lock (_gate)
            {
                return !_wasStopped && _stopSent && !_resumed;
            }
        }
    }

    /// <summary>
    /// Stops <paramref name="pid"/> and waits until every thread is stopped (at most <paramref name="timeout"/>).
    /// Throws <see cref="ScanException"/> when the process cannot be stopped or does not stop in time (it is resumed first).
    /// </summary>
    public static Freezer Freeze(int pid, TimeSpan timeout) => Freeze(pid, timeout, beforeStop: null);

    /// <summary>
    /// <see cref="Freeze(int, TimeSpan)"/>, with <paramref name="beforeStop"/> called after the signal
    /// handlers are registered and before SIGSTOP is sent: the window in which an interrupt resumes a
    /// process that is not stopped yet (tests use it to deliver that interrupt deterministically).
    /// </summary>
    internal static Freezer Freeze(int pid, TimeSpan timeout, Action<Freezer>? beforeStop)
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
        beforeStop?.Invoke(f);

        // The handlers run on another thread, at any time: the stop and the resume are decided under
        // one lock, so that an interrupt that came before the stop prevents it (a resume that ran
        // first would otherwise be followed by a stop nobody undoes), and one that comes after it
        // sends SIGCONT exactly once.
        lock (f._gate)
        {
            if (f._resumed)
            {
                f.Dispose();
                return f; // interrupted before the stop: the process runs on, and Holding says so
            }

            if (LibC.Kill(pid, SIGSTOP) != 0)
            {
                int e = Marshal.GetLastPInvokeError();
                f._resumed = true; // nothing was stopped: nothing to resume
                f.Dispose();
                throw ProcFs.Failure(pid, $"kill(SIGSTOP) for {stat}", e, firstOpen: true);
            }

            f._stopSent = true;
        }

        var sw = Stopwatch.StartNew();
        while (f.Holding && !AllThreadsStopped(pid))
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

    /// <summary>
    /// Whether the target is stopped now, by this freezer or since before it (false when an interrupt
    /// resumed it, or came before the stop and prevented it).
    /// </summary>
    public bool Stopped => _wasStopped || Holding;

    /// <summary>
    /// Sends SIGCONT once if this freezer stopped the process; one that comes before the stop prevents
    /// the stop. A process that was stopped before the freeze is left stopped.
    /// </summary>
    public void Resume()
    {
        if (_wasStopped)
        {
            return;
        }

        lock (_gate)
        {
            if (_resumed)
            {
                return;
            }

            _resumed = true;
            if (_stopSent)
            {
                LibC.Kill(_pid, SIGCONT); // ESRCH: it exited meanwhile, nothing to resume
            }
        }
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
