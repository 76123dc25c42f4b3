using PtLab.Mm;
using PtLab.Traces;

namespace PtLab.Workloads.Replay;

/// <summary>One recorded <c>/proc/PID/status</c> sample and what the model showed at its time.</summary>
/// <param name="TimeNs">The sample's CLOCK_MONOTONIC time.</param>
/// <param name="Kind">status, status_exec, status_exit or status_attach.</param>
/// <param name="Kernel">The kernel's figures.</param>
/// <param name="Model">The model's figures at the same point of the event stream.</param>
/// <param name="Lower">
/// With syscalls of the process under way when the sample was read (entered before it, returned
/// after it), the model's figures with the effects of those that lowered VmPTE; for a sample an
/// exec may have overtaken, the new address space's. Null when none was under way.
/// </param>
/// <param name="Upper">Likewise with the effects of those that raised VmPTE.</param>
/// <remarks>
/// How far each call under way had got when the sample was read the trace cannot tell (a zap
/// frees tables as it goes): the kernel could show anything from <see cref="Lower"/> to
/// <see cref="Upper"/>, with <see cref="Model"/> between them.
/// </remarks>
public sealed record ReplaySample(long TimeNs, TraceEventKind Kind, StatusFigures Kernel, MmStatus Model, MmStatus? Lower = null, MmStatus? Upper = null)
{
    /// <summary>The model's figures nearest the kernel's VmPTE: <see cref="Model"/>, or an end of the span calls under way allow.</summary>
    public MmStatus Compared
    {
        get
        {
            var best = Model;
            foreach (var c in new[] { Lower, Upper })
            {
                if (c is { } f && Math.Abs(f.VmPteKb - Kernel.VmPteKb) < Math.Abs(best.VmPteKb - Kernel.VmPteKb))
                {
                    best = f;
                }
            }

            return best;
        }
    }

    /// <summary>The model's VmPTE less the kernel's: 0 when the kernel's lies within the span calls under way allow, else the distance to its nearer end.</summary>
    public long VmPteDifferenceKb
    {
        get
        {
            long lo = Math.Min(Model.VmPteKb, Lower?.VmPteKb ?? Model.VmPteKb), hi = Math.Max(Model.VmPteKb, Upper?.VmPteKb ?? Model.VmPteKb);
            long k = Kernel.VmPteKb;
            return k < lo ? lo - k : k > hi ? hi - k : 0;
        }
    }
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

    /// <summary>
    /// An attached recording: the empty PTE tables the process had at the attach. The replay made
    /// them, except under a design that frees a table with its last entry (one that counts each
    /// table's entries), under which the process would not have had them.
    /// </summary>
    public long EmptyTablesAtAttach { get; set; }
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

    /// <summary>How the mapped files were modelled (shmem or regular, large folios or not) and on what basis, with how many files each (<see cref="FileModel"/>).</summary>
    public IReadOnlyDictionary<string, long> FileModels { get; init; } = new Dictionary<string, long>();

    /// <summary>RCU grace periods the machine completed.</summary>
    public long GracePeriods { get; init; }

    /// <summary>
    /// Replayed faults whose page the model already mapped with the access's permission (mapped by
    /// the model's fault-around where the kernel's mapped less, say): the access is resolved by the
    /// TLB or the page walk, as the kernel's handle_mm_fault finds a present, permitted entry and
    /// only marks it young (and dirty for a write); the model takes no fault for it.
    /// </summary>
    public long FaultsAlreadyMapped { get; init; }
}
