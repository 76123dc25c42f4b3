using PtLab.Mm;
using PtLab.Traces;

namespace PtLab.Workloads.Replay;

/// <summary>One recorded <c>/proc/PID/status</c> sample and what the model showed at its time.</summary>
/// <param name="TimeNs">The sample's CLOCK_MONOTONIC time.</param>
/// <param name="Kind">status, status_exec, status_exit or status_attach.</param>
/// <param name="Kernel">The kernel's figures.</param>
/// <param name="Model">The model's figures at the same point of the event stream.</param>
/// <param name="InFlight">
/// The model's figures with the effects of the process's syscalls that were under way when the
/// sample was taken (entered before it, returned after it), or, for a sample read after the
/// process's last event and before its exec, the new address space's at the exec sample; null when
/// neither. Whether the sample saw such a call's effect depends on where inside the call it was
/// read, which the trace cannot tell: the two figures bracket what the kernel could show.
/// </param>
public sealed record ReplaySample(long TimeNs, TraceEventKind Kind, StatusFigures Kernel, MmStatus Model, MmStatus? InFlight = null)
{
    /// <summary>The model's figures to compare with the kernel's: of <see cref="Model"/> and <see cref="InFlight"/>, the one whose VmPTE is nearer.</summary>
    public MmStatus Compared =>
        InFlight is { } f && Math.Abs(f.VmPteKb - Kernel.VmPteKb) < Math.Abs(Model.VmPteKb - Kernel.VmPteKb) ? f : Model;
}

/// <summary>One recorded process as the model replayed it.</summary>
public sealed class ReplayProcessResult
{
    /// <summary>The recorded pid.</summary>
    public required int Pid { get; init; }

    /// <summary>The command (the exec's file name, or the task's comm).</summary>
    public required string Name { get; set; }

    /// <summary>Threads the process had over its life (the first one included).</summary>
    public int Threads { get; set; }

    /// <summary>Every sample of the process, in time order.</summary>
    public List<ReplaySample> Samples { get; } = [];

    /// <summary>The model's figures when the process's last thread exited (before its mm was torn down), or at the end of the trace.</summary>
    public MmStatus? Exit { get; set; }

    /// <summary>Whether the process exited within the trace.</summary>
    public bool Exited { get; set; }

    /// <summary>The most VmPTE its address space(s) held at any point, in kB.</summary>
    public long PeakVmPteKb { get; set; }

    /// <summary>The model's counters of the process's last address space (faults, tables, flushes, grace periods).</summary>
    public MmCounters Counters { get; set; }

    /// <summary>Accesses replayed (user and kernel faults).</summary>
    public long Faults { get; set; }

    /// <summary>madvise latencies in the model (ns).</summary>
    public LatencySummary Madvise { get; set; }
}

/// <summary>A replay of one trace under one design.</summary>
public sealed class ReplayResult
{
    /// <summary>The design.</summary>
    public required string Design { get; init; }

    /// <summary>The processes, by first appearance.</summary>
    public required IReadOnlyList<ReplayProcessResult> Processes { get; init; }

    /// <summary>Rows replayed.</summary>
    public long Events { get; init; }

    /// <summary>Host seconds the replay took.</summary>
    public double WallSeconds { get; init; }

    /// <summary>
    /// Where the replay and the recording went apart, by kind: a syscall whose result differs, a
    /// placement the model would have chosen differently, a fault the model answered with a signal.
    /// </summary>
    public required IReadOnlyDictionary<string, long> Divergences { get; init; }

    /// <summary>What the model cannot do yet, by kind, and how often the trace asked for it (replayed approximately or skipped, as the kind says).</summary>
    public required IReadOnlyDictionary<string, long> Unsupported { get; init; }

    /// <summary>RCU grace periods the machine completed.</summary>
    public long GracePeriods { get; init; }
}
