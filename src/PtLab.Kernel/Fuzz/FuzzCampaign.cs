using System.Diagnostics;

namespace PtLab.Kernel.Fuzz;

/// <summary>What a fuzz run does.</summary>
/// <param name="Seed">The run's seed; sequence i draws from <see cref="FuzzCampaign.SequenceSeed"/>(Seed, i).</param>
/// <param name="Sequences">How many sequences.</param>
/// <param name="Ops">Operations per sequence (a difference stops a sequence early).</param>
/// <param name="Design">The model design compared with the host.</param>
/// <param name="Minimize">Shrink each differing sequence by delta debugging.</param>
/// <param name="First">The index of the first sequence (to rerun one sequence of a larger run).</param>
/// <param name="Collapse">Run in the collapse mode: MADV_COLLAPSE collapses on both sides (see <see cref="KernelExecutor.Start"/>).</param>
/// <param name="Rechecks">
/// How often a differing sequence is replayed before it counts as a finding (see
/// <see cref="FuzzCampaign.Recheck"/>); 0 counts every difference.
/// </param>
public sealed record FuzzCampaignOptions(int Seed, int Sequences, int Ops, string Design, bool Minimize = false, int First = 0, bool Collapse = false, int Rechecks = 3);

/// <summary>A difference found by a run.</summary>
/// <param name="Sequence">The sequence's index in the run.</param>
/// <param name="Found">The sequence as run, its last step the differing one.</param>
/// <param name="Minimized">The minimized sequence, when asked for.</param>
/// <param name="Replays">Replays the minimization took.</param>
public sealed record FuzzFinding(int Sequence, FuzzSequence Found, FuzzSequence? Minimized, int Replays);

/// <summary>A difference the host did not give again when the same operations were replayed.</summary>
/// <param name="Sequence">The sequence's index in the run.</param>
/// <param name="Found">The sequence as first run, its last step the differing one.</param>
/// <param name="AgreedOnReplay">The replay (1 for the first) on which kernel and model agreed after every operation.</param>
public sealed record FuzzTransient(int Sequence, FuzzSequence Found, int AgreedOnReplay);

/// <summary>What a run did and found.</summary>
public sealed class FuzzCampaignResult
{
    /// <summary>The options it ran with.</summary>
    public required FuzzCampaignOptions Options { get; init; }

    /// <summary>Sequences run.</summary>
    public int Sequences { get; set; }

    /// <summary>Operations run on both sides (minimization replays not counted).</summary>
    public long Operations { get; set; }

    /// <summary>The differences that every recheck gave again, one per differing sequence.</summary>
    public List<FuzzFinding> Findings { get; } = [];

    /// <summary>The differences that a recheck did not give again: the host's own timing, not the model.</summary>
    public List<FuzzTransient> Transients { get; } = [];

    /// <summary>Per operation kind (mmap by placement, madvise by advice), how often the kernel answered what.</summary>
    public SortedDictionary<string, SortedDictionary<string, long>> Coverage { get; } = new(StringComparer.Ordinal);

    /// <summary>Wall time of the whole run.</summary>
    public TimeSpan Wall { get; set; }

    /// <summary>Time spent waiting for the executor, pipe included.</summary>
    public TimeSpan KernelTime { get; set; }

    /// <summary>Time spent in the model.</summary>
    public TimeSpan ModelTime { get; set; }

    /// <summary>Executor restarts after an unclean reset.</summary>
    public int Restarts { get; set; }

    /// <summary>The slot the executor ran in.</summary>
    public ulong Slot { get; set; }

    /// <summary>The host's MemTotal, in kB.</summary>
    public long MemTotalKb { get; set; }

    /// <summary>The host's <c>read_ahead_kb</c> for the executor's test file.</summary>
    public int ReadAheadKb { get; set; }
}

/// <summary>Runs many generated sequences through a <see cref="KernelFuzzer"/> and collects what differs.</summary>
public static class FuzzCampaign
{
    /// <summary>The generator seed of sequence <paramref name="index"/> in a run seeded <paramref name="seed"/>.</summary>
    public static int SequenceSeed(int seed, int index) => unchecked((seed * 1_000_003) + index);

    /// <summary>Runs the sequences; <paramref name="progress"/> gets the operations done so far.</summary>
    public static FuzzCampaignResult Run(FuzzCampaignOptions options, Action<long>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var result = new FuzzCampaignResult { Options = options };
        var clock = Stopwatch.StartNew();
        using var fuzzer = new KernelFuzzer(options.Design, options.Collapse);
        result.Slot = fuzzer.Slot;
        result.MemTotalKb = fuzzer.MemTotalKb;
        result.ReadAheadKb = fuzzer.ReadAheadKb;
        for (int i = options.First; i < options.First + options.Sequences; i++)
        {
            long before = result.Operations;
            var seq = fuzzer.RunGenerated(SequenceSeed(options.Seed, i), options.Ops, done => progress?.Invoke(before + done));
            result.Sequences++;
            result.Operations += seq.Steps.Count;
            foreach (var step in seq.Steps)
            {
                Count(result.Coverage, step);
            }

            if (seq.Difference is not null)
            {
                int agreed = Recheck(seq, ops => fuzzer.Replay(ops, seq.Slot), options.Rechecks, n => Thread.Sleep(RecheckPause(n)));
                if (agreed > 0)
                {
                    result.Transients.Add(new FuzzTransient(i, seq, agreed));
                    continue;
                }

                FuzzSequence? min = null;
                int replays = 0;
                if (options.Minimize)
                {
                    (min, replays) = Minimizer.Minimize(fuzzer, seq);
                }

                result.Findings.Add(new FuzzFinding(i, seq, min, replays));
            }
        }

        result.Restarts = fuzzer.Restarts;
        result.KernelTime = fuzzer.KernelTime;
        result.ModelTime = fuzzer.ModelTime;
        result.Wall = clock.Elapsed;
        return result;
    }

    /// <summary>
    /// Replays the operations of <paramref name="found"/>, which ended in a difference, up to
    /// <paramref name="rechecks"/> times with <paramref name="replay"/>, and returns the number of
    /// the first replay on which kernel and model agree after every operation, or 0 when each
    /// replay differs again (or none was asked for). The model is deterministic: the same
    /// operations give it the same answers. A replay that agrees therefore shows that the host
    /// kernel gave the model's answers to the very operations it answered otherwise the first
    /// time, so the difference came from what else ran on the host between two operations (page
    /// cache reclaim by kswapd or DAMON, accessed bits aged by DAMON, another task's LRU drain),
    /// not from a rule the model lacks. <paramref name="pause"/>, given the replay's number, runs
    /// before each replay (see <see cref="RecheckPause"/>).
    /// </summary>
    public static int Recheck(FuzzSequence found, Func<IReadOnlyList<FuzzOp>, FuzzSequence> replay, int rechecks, Action<int>? pause = null)
    {
        ArgumentNullException.ThrowIfNull(found);
        ArgumentNullException.ThrowIfNull(replay);
        var ops = found.Ops;
        for (int n = 1; n <= rechecks; n++)
        {
            pause?.Invoke(n);
            var again = replay(ops);
            if (again.Difference is null && again.Steps.Count == ops.Count)
            {
                return n;
            }
        }

        return 0;
    }

    /// <summary>
    /// How long a run waits before recheck <paramref name="n"/>: none before the first, then 0.5 s
    /// and 2 s. What else runs on the host can stay on the same pages for a while (a DAMON worker
    /// keeps visiting the regions it found cold, and the folios it put back wait in its CPU's LRU
    /// batch, where MADV_PAGEOUT cannot isolate them), so back-to-back replays can all meet it.
    /// </summary>
    public static TimeSpan RecheckPause(int n) => n switch
    {
        <= 1 => TimeSpan.Zero,
        2 => TimeSpan.FromMilliseconds(500),
        _ => TimeSpan.FromSeconds(2),
    };

    /// <summary>The coverage key of an operation: its name, with mmap's placement and madvise's advice.</summary>
    public static string CoverageKey(FuzzOp op)
    {
        ArgumentNullException.ThrowIfNull(op);
        return op.Kind.Name switch
        {
            "mmap" when (op.Args[3] & 0x40000) != 0 => "mmap hugetlb",
            "mmap" when (op.Args[3] & 0xf) == 0x8 => "mmap droppable",
            "mmap" => "mmap " + ((op.Args[3] & 0x100000) != 0 ? "fixed-noreplace" : (op.Args[3] & 0x10) != 0 ? "fixed" : op.Args[0] != 0 ? "hint" : "none"),
            "mmapf" => "mmapf " + ((op.Args[3] & 0xf) switch { 1 => "shared", 2 => "private", 3 => "shared-validate", _ => "other" }),
            "madvise" => "madvise " + FuzzText.FormatArg(FuzzArg.Advice, op.Args[2], 0),
            "mremap" when op.Args[1] == 0 => "mremap old-len-0",
            "brk" => op.Args[0] == 0 ? "brk query" : "brk",
            "mremap" => "mremap " + (op.Args[3] switch
            {
                0 => "in-place",
                1 => "maymove",
                3 => "fixed",
                7 => "fixed-dontunmap",
                5 => "dontunmap",
                _ => "invalid",
            }),
            "mlock2" => op.Args[2] == 1 ? "mlock2 onfault" : "mlock2",
            "mlockall" => "mlockall " + op.Args[0].ToString("x", System.Globalization.CultureInfo.InvariantCulture),
            _ => op.Kind.Name,
        };
    }

    /// <summary>The coverage label of a kernel answer: ok, an errno name, or the signal and si_code.</summary>
    public static string ResultLabel(OpResult r) => r.Kind switch
    {
        OpResultKind.Value => "ok",
        OpResultKind.Error => LinuxErrno.Describe((int)r.Value).Name,
        OpResultKind.Signal => FuzzText.FormatResult(r with { Value = 0 }, 0).Split('@')[0],
        _ => "OOM",
    };

    private static void Count(SortedDictionary<string, SortedDictionary<string, long>> coverage, FuzzStep step)
    {
        string key = CoverageKey(step.Op);
        if (!coverage.TryGetValue(key, out var labels))
        {
            labels = new SortedDictionary<string, long>(StringComparer.Ordinal);
            coverage[key] = labels;
        }

        string label = ResultLabel(step.Kernel.Result);
        labels[label] = labels.GetValueOrDefault(label) + 1;
    }
}
