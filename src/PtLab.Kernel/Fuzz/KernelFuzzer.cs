namespace PtLab.Kernel.Fuzz;

/// <summary>One operation run on both sides.</summary>
/// <param name="Op">The operation.</param>
/// <param name="Kernel">What the host kernel reported after it.</param>
/// <param name="Model">What the model reported after it.</param>
public sealed record FuzzStep(FuzzOp Op, OpOutcome Kernel, OpOutcome Model)
{
    /// <summary>What differs: "result", "VmPTE", "RssAnon", "layout"; empty when both agree.</summary>
    public IReadOnlyList<string> Differences { get; } = Kernel.DifferencesFrom(Model);
}

/// <summary>A sequence run on both sides, up to its end or its first difference.</summary>
/// <param name="Steps">Every operation run, the differing one last.</param>
/// <param name="Slot">The slot the addresses are in.</param>
public sealed record FuzzSequence(IReadOnlyList<FuzzStep> Steps, ulong Slot)
{
    /// <summary>The step that differed, or null when the sequence agreed throughout.</summary>
    public FuzzStep? Difference => Steps.Count > 0 && Steps[^1].Differences.Count > 0 ? Steps[^1] : null;

    /// <summary>The operations run.</summary>
    public IReadOnlyList<FuzzOp> Ops => [.. Steps.Select(s => s.Op)];
}

/// <summary>
/// Differential fuzzing of the model against the host kernel: each operation runs on the executor
/// (<see cref="KernelExecutor"/>) and on a fresh model address space (<see cref="ModelSide"/>), and
/// after every operation the result, VmPTE, RssAnon and the VMA layout in the slot are compared.
/// The first difference stops the sequence.
/// </summary>
public sealed class KernelFuzzer : IDisposable
{
    private KernelExecutor _executor;

    /// <summary>Starts an executor; <paramref name="design"/> is the model design compared with the host.</summary>
    /// <param name="design">The model design compared with the host.</param>
    /// <param name="collapse">Run the executor and the model in the collapse mode (MADV_COLLAPSE collapses; see <see cref="KernelExecutor.Start"/>).</param>
    public KernelFuzzer(string design, bool collapse = false)
    {
        Design = design ?? throw new ArgumentNullException(nameof(design));
        if (PtLab.Reclaim.Designs.Factory(design) is null)
        {
            throw new ArgumentException($"unknown design '{design}'", nameof(design));
        }

        Collapse = collapse;
        _executor = KernelExecutor.Start(collapse: collapse);
    }

    /// <summary>Whether MADV_COLLAPSE collapses on both sides (and is drawn more often, MADV_HUGEPAGE never).</summary>
    public bool Collapse { get; }

    /// <summary>The model design.</summary>
    public string Design { get; }

    /// <summary>The slot the executor runs in now.</summary>
    public ulong Slot => _executor.SlotStart;

    /// <summary>The host's MemTotal, in kB.</summary>
    public long MemTotalKb => _executor.MemTotalKb;

    /// <summary>The host's <c>read_ahead_kb</c> where the executor's test file lives (the model file's read-around window).</summary>
    public int ReadAheadKb => _executor.FileDirectory is { } dir ? ReadAhead.KbFor(dir) ?? 128 : 128;

    /// <summary>Whether this host maps the shared zero page on an anonymous read fault (measured; true where unknown).</summary>
    public bool ZeroPage => ZeroPageProbe.SmallZeroPage ?? true;

    /// <summary>Whether this host gives execute-only mappings a protection key that denies data access (measured; false where unknown).</summary>
    public static bool ExecOnlyPkey => ExecOnlyPkeyProbe.ExecOnlyPkey;

    /// <summary>Times the executor was started again because a reset left something behind.</summary>
    public int Restarts { get; private set; }

    /// <summary>Whether the executor's heap is in the slot, so that <c>brk</c> can be run on both sides.</summary>
    public bool BrkAvailable => _executor.BrkStart != 0;

    /// <summary>
    /// Runs <paramref name="count"/> generated operations from <paramref name="seed"/>, stopping at
    /// the first difference. The same seed draws the same operations relative to the slot.
    /// </summary>
    public FuzzSequence RunGenerated(int seed, int count, Action<int>? progress = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        using var model = Begin();
        var host = KernelInfo.Probe();
        var gen = new OpGenerator(new Random(seed), Slot)
        {
            AllowLocked = Environment.IsPrivilegedProcess,
            AllowBrk = BrkAvailable,
            Collapse = Collapse,
            AllowGuard = host.HasGuardRegions,
            AllowMseal = host.HasMseal && seed % 4 == 0,
            AllowKsm = s_ksmIdle.Value,
            AllowDroppable = host.HasDroppable,
            AllowHugetlb = host.HugetlbPoolsEmpty,
        };
        var steps = new List<FuzzStep>(count);
        for (int i = 0; i < count; i++)
        {
            gen.Layout = model.Layout();
            var st = model.Mm.Status();
            gen.AnonKb = st.RssAnonKb + st.RssShmemKb;
            gen.Brk = model.Mm.CurrentBrk;
            var step = RunOne(gen.Next(), model);
            steps.Add(step);
            progress?.Invoke(i + 1);
            if (step.Differences.Count > 0)
            {
                break;
            }
        }

        return new FuzzSequence(steps, Slot);
    }

    /// <summary>
    /// Replays <paramref name="ops"/>, whose addresses are in the slot at <paramref name="opsSlot"/>
    /// (moved to the executor's slot when it differs), stopping at the first difference.
    /// </summary>
    public FuzzSequence Replay(IEnumerable<FuzzOp> ops, ulong opsSlot)
    {
        ArgumentNullException.ThrowIfNull(ops);
        using var model = Begin();
        var steps = new List<FuzzStep>();
        foreach (var op in ops)
        {
            var step = RunOne(op.Rebase(opsSlot, Slot), model);
            steps.Add(step);
            if (step.Differences.Count > 0)
            {
                break;
            }
        }

        return new FuzzSequence(steps, Slot);
    }

    /// <summary>Stops the executor.</summary>
    public void Dispose() => _executor.Dispose();

    /// <summary>Time spent waiting for the executor (the kernel side, pipe included).</summary>
    public TimeSpan KernelTime => Elapsed(_kernelTicks);

    /// <summary>Time spent in the model (operations and layout snapshots).</summary>
    public TimeSpan ModelTime => Elapsed(_modelTicks);

    // Stopwatch ticks are nanoseconds on Linux: multiplying them by TicksPerSecond first overflowed
    // a long after about 15 minutes and printed a negative time.
    private static TimeSpan Elapsed(long stopwatchTicks) => TimeSpan.FromSeconds((double)stopwatchTicks / System.Diagnostics.Stopwatch.Frequency);

    private long _kernelTicks;
    private long _modelTicks;

    private FuzzStep RunOne(FuzzOp op, ModelSide model)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        var kernel = _executor.Run(op);
        long t1 = System.Diagnostics.Stopwatch.GetTimestamp();
        var m = model.Run(op);
        long t2 = System.Diagnostics.Stopwatch.GetTimestamp();
        _kernelTicks += t1 - t0;
        _modelTicks += t2 - t1;
        return new(op, kernel, m);
    }

    // The host has KSM and ksmd does not run (see OpGenerator.AllowKsm).
    private static readonly Lazy<bool> s_ksmIdle = new(() =>
    {
        try
        {
            return File.ReadAllText("/sys/kernel/mm/ksm/run").Trim() == "0";
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    });

    /// <summary>An empty slot on the executor (started again if a reset leaves anything) and a fresh model.</summary>
    private ModelSide Begin()
    {
        var left = _executor.Reset();
        if (left.PteKb != 0 || left.AnonKb != 0 || left.FileKb != 0 || left.ShmemKb != 0 || left.Layout is not { Count: 0 })
        {
            _executor.Dispose();
            _executor = KernelExecutor.Start(collapse: Collapse);
            Restarts++;
        }

        if (_executor.FileSize != FuzzText.FileSize)
        {
            throw new FuzzHarnessException($"the executor's test file is {_executor.FileSize} bytes, the model's {FuzzText.FileSize}");
        }

        if (_executor.BrkStart != 0 && _executor.BrkStart != _executor.SlotStart + FuzzText.BrkOffset)
        {
            throw new FuzzHarnessException($"the executor's heap starts at 0x{_executor.BrkStart:x}, the model's at 0x{_executor.SlotStart + FuzzText.BrkOffset:x}");
        }

        return new ModelSide(Design, _executor.MemTotalKb, _executor.SlotStart, ReadAheadKb, BrkAvailable, Collapse, ZeroPage, ExecOnlyPkey);
    }
}
