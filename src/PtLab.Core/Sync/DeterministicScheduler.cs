using System.Globalization;
using System.Text;

namespace PtLab.Sync;

/// <summary>One step of a recorded interleaving: the CPU that ran, and where it stopped.</summary>
/// <param name="Cpu">The simulated CPU.</param>
/// <param name="Kind">The scheduling point it reached, or null for a note the scenario wrote.</param>
/// <param name="Subject">The primitive (or table frame) the point is about, or the note's text.</param>
public readonly record struct ScheduleStep(int Cpu, SchedulingPointKind? Kind, object? Subject);

/// <summary>Why a schedule ended without running every CPU to completion.</summary>
public sealed class ScheduleAbortedException(string reason) : Exception(reason);

/// <summary>
/// A deterministic scheduler for simulated CPUs. Each CPU runs on its own thread, but only one runs
/// at a time: at every scheduling point the running thread asks the strategy which CPU runs next and,
/// if it is another, hands over and blocks on its own semaphore until chosen again. A wait-kind point
/// (a spin on a lock, a grace period) always switches away when another CPU can run. Threads the
/// scheduler did not start (set-up and checks on the test's own thread) pass through untouched.
/// </summary>
/// <remarks>
/// The schedule is a pure function of the strategy's seed as long as the code under test is
/// deterministic between scheduling points, so a seed replays one interleaving exactly.
/// </remarks>
public sealed class DeterministicScheduler : ISchedulingPoint
{
    private readonly ISchedulingStrategy _strategy;
    private readonly List<ScheduleStep> _trace = [];
    private Thread[] _threads = [];
    private SemaphoreSlim[] _go = [];
    private bool[] _done = [];
    private bool[] _enabled = [];
    private Exception?[] _errors = [];
    private CountdownEvent? _finished;
    private volatile bool _abort;
    private string? _violation;
    private int _consecutiveWaits;
    private int _runLength;
    private int _lastCpu = -1;
    private long _steps;

    /// <summary>Creates a scheduler driven by <paramref name="strategy"/>.</summary>
    /// <param name="strategy">Chooses the next CPU at each point.</param>
    /// <param name="maxSteps">Scheduling points after which the schedule is cut off as a livelock.</param>
    public DeterministicScheduler(ISchedulingStrategy strategy, long maxSteps = 50_000)
    {
        _strategy = strategy;
        MaxSteps = maxSteps;
    }

    /// <summary>The step bound of one schedule.</summary>
    public long MaxSteps { get; }

    /// <summary>
    /// Checked at every scheduling point while only the current CPU runs (so a read-only scan sees
    /// a stable state); returns the broken invariant, or null.
    /// </summary>
    public Func<string?>? StepInvariant { get; set; }

    /// <summary>How long one schedule may take before it is declared stuck outside the scheduler's control.</summary>
    public TimeSpan HangTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Consecutive wait points with no other progress that count as a deadlock.</summary>
    public int DeadlockWaits { get; init; } = 400;

    /// <summary>
    /// Consecutive points one CPU may run without a wait before it is preempted as if it had
    /// waited: a timer tick for retry loops that spin without a wait point (the kernel's
    /// <c>cond_resched</c>), so a strategy that favours that CPU cannot starve the one it waits for.
    /// </summary>
    public int PreemptAfter { get; init; } = 1000;

    /// <summary>Times the last run preempted a CPU under <see cref="PreemptAfter"/>.</summary>
    public int ForcedPreemptions { get; private set; }

    /// <summary>Scheduling points the last run went through.</summary>
    public long Steps => _steps;

    /// <summary>The interleaving of the last run.</summary>
    public IReadOnlyList<ScheduleStep> Trace => _trace;

    /// <summary>The first violation of the last run (an exception, a deadlock, a livelock), or null.</summary>
    public string? Violation => _violation;

    /// <summary>The exception behind <see cref="Violation"/>, when a CPU threw one.</summary>
    public Exception? FailureException { get; private set; }

    /// <summary>Writes a note into the trace, for readable replays; does not switch.</summary>
    public void Note(string text)
    {
        int me = CurrentCpu();
        if (me >= 0)
        {
            _trace.Add(new ScheduleStep(me, null, text));
        }
    }

    /// <summary>
    /// Runs one program per CPU to completion under the strategy. Returns true when every CPU
    /// finished without a violation; otherwise <see cref="Violation"/> says what went wrong.
    /// </summary>
    public bool Run(IReadOnlyList<Action> programs)
    {
        int n = programs.Count;
        _threads = new Thread[n];
        _go = new SemaphoreSlim[n];
        _done = new bool[n];
        _enabled = new bool[n];
        _errors = new Exception?[n];
        _finished = new CountdownEvent(n);
        _trace.Clear();
        _steps = 0;
        _runLength = 0;
        _lastCpu = -1;
        ForcedPreemptions = 0;
        _violation = null;
        FailureException = null;
        _abort = false;
        _strategy.Start(n);
        for (int i = 0; i < n; i++)
        {
            int id = i;
            _go[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => CpuThread(id, programs[id]), 256 * 1024) { IsBackground = true, Name = $"sched-cpu{id}" };
        }

        foreach (var t in _threads)
        {
            t.Start();
        }

        Array.Fill(_enabled, true);
        int first = _strategy.Next(-1, _enabled, waiting: false, step: 0);
        _go[first].Release();
        if (!_finished.Wait(HangTimeout))
        {
            Fail($"the schedule did not finish within {HangTimeout.TotalSeconds} s: a CPU blocked outside the scheduler's control", null);
            AbortAll();
            _finished.Wait(TimeSpan.FromSeconds(5));
        }

        foreach (var g in _go)
        {
            g.Dispose();
        }

        _finished.Dispose();
        return _violation is null;
    }

    /// <inheritdoc/>
    public void Reached(SchedulingPointKind kind, object? subject)
    {
        int me = CurrentCpu();
        if (me < 0)
        {
            return;
        }

        if (_abort)
        {
            throw new ScheduleAbortedException("schedule aborted");
        }

        _trace.Add(new ScheduleStep(me, kind, subject));
        if (StepInvariant?.Invoke() is { } broken)
        {
            Fail($"after step {_steps}: {broken}", null);
            AbortAll();
            throw new ScheduleAbortedException("invariant broken");
        }
        if (++_steps > MaxSteps)
        {
            Fail($"step limit {MaxSteps} reached: a livelock, or a schedule too long for its bound", null);
            AbortAll();
            throw new ScheduleAbortedException("step limit");
        }

        bool waiting = kind == SchedulingPointKind.Wait;
        _runLength = me == _lastCpu ? _runLength + 1 : 0;
        _lastCpu = me;
        if (!waiting && _runLength >= PreemptAfter)
        {
            waiting = true;
            _runLength = 0;
            ForcedPreemptions++;
            _trace.Add(new ScheduleStep(me, null, $"preempted after {PreemptAfter} points without a wait"));
        }

        if (kind == SchedulingPointKind.Wait)
        {
            if (++_consecutiveWaits > DeadlockWaits)
            {
                Fail($"deadlock: {_consecutiveWaits} wait points in a row and no CPU made progress", null);
                AbortAll();
                throw new ScheduleAbortedException("deadlock");
            }
        }
        else
        {
            _consecutiveWaits = 0;
        }

        int next = _strategy.Next(me, _enabled, waiting, _steps);
        if (next != me)
        {
            SwitchTo(me, next);
        }
    }

    private void SwitchTo(int me, int next)
    {
        _go[next].Release();
        _go[me].Wait();
        if (_abort)
        {
            throw new ScheduleAbortedException("schedule aborted");
        }
    }

    private int CurrentCpu()
    {
        var t = Thread.CurrentThread;
        var threads = _threads;
        for (int i = 0; i < threads.Length; i++)
        {
            if (ReferenceEquals(threads[i], t))
            {
                return i;
            }
        }

        return -1;
    }

    private void CpuThread(int id, Action program)
    {
        _go[id].Wait();
        try
        {
            if (!_abort)
            {
                program();
            }
        }
        catch (ScheduleAbortedException)
        {
        }
        catch (Exception e)
        {
            _errors[id] = e;
            Fail($"CPU {id}: {e.GetType().Name}: {FirstLine(e.Message)}", e);
            AbortAll();
        }

        _done[id] = true;
        _enabled[id] = false;
        if (!_abort)
        {
            int next = Array.IndexOf(_enabled, true);
            if (next >= 0)
            {
                next = _strategy.Next(id, _enabled, waiting: true, _steps);
                _go[next].Release();
            }
        }

        _finished!.Signal();
    }

    private void Fail(string reason, Exception? e)
    {
        if (Interlocked.CompareExchange(ref _violation, reason, null) is null)
        {
            FailureException = e;
        }
    }

    private void AbortAll()
    {
        _abort = true;
        for (int i = 0; i < _go.Length; i++)
        {
            if (!_done[i])
            {
                _go[i].Release();
            }
        }
    }

    private static string FirstLine(string s)
    {
        int nl = s.IndexOf('\n', StringComparison.Ordinal);
        return nl < 0 ? s : s[..nl];
    }

    /// <summary>The last <paramref name="count"/> steps of the trace, one per line.</summary>
    public string FormatTrace(int count)
    {
        var names = new Dictionary<object, string>(ReferenceEqualityComparer.Instance);
        var perType = new Dictionary<string, int>();
        string Name(object? s)
        {
            switch (s)
            {
                case null: return "";
                case string text: return text;
                case LockClass lc: return lc.Name;
                case long pfn: return $"table {pfn:x}";
            }

            if (!names.TryGetValue(s, out var name))
            {
                string type = s.GetType().Name;
                perType[type] = perType.GetValueOrDefault(type) + 1;
                name = $"{type}#{perType[type]}";
                names[s] = name;
            }

            return name;
        }

        // Name subjects in order of first appearance over the whole trace, so names are stable.
        // Only scheduling points are numbered, from 1, so the last number is the step count and a
        // violation "after step N" points at line N; notes (what the program is doing) are not steps.
        var lines = new List<string>(_trace.Count);
        long step = 0;
        for (int i = 0; i < _trace.Count; i++)
        {
            var st = _trace[i];
            lines.Add(st.Kind is { } k
                ? string.Create(CultureInfo.InvariantCulture, $"{++step,6}  cpu{st.Cpu}  {k,-14} {Name(st.Subject)}")
                : string.Create(CultureInfo.InvariantCulture, $"{"",6}  cpu{st.Cpu}  -- {Name(st.Subject)}"));
        }

        var sb = new StringBuilder();
        for (int i = Math.Max(0, lines.Count - count); i < lines.Count; i++)
        {
            sb.AppendLine(lines[i]);
        }

        return sb.ToString();
    }

    /// <summary>The whole trace as text lines (to compare two replays).</summary>
    public IReadOnlyList<string> TraceLines() => FormatTrace(int.MaxValue).Split('\n', StringSplitOptions.RemoveEmptyEntries);
}
