using System.CommandLine;
using System.Globalization;
using System.Text;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>
/// One design in <c>ptlab compare</c>: the figures of its first measured trial (tables, VmPTE and
/// counters do not depend on timing in single-CPU scenarios), and its timings over every trial:
/// <see cref="WallSeconds"/> and <see cref="MadviseLatencyNs"/> are medians.
/// </summary>
internal sealed record DesignRunReport(
    string Design, StatusReport Before, StatusReport After, CountersReport Counters, LatencyReport MadviseLatencyNs,
    double WallSeconds, IReadOnlyList<CheckpointReport> Checkpoints)
{
    /// <summary>Per-operation counts of the first trial, with --profile; absent otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public ProfileReport? Profile { get; init; }

    /// <summary>Wall time of the measured phase over the trials.</summary>
    public Spread WallSecondsSpread { get; init; } = new(WallSeconds, WallSeconds, WallSeconds);

    /// <summary>Per-trial madvise p50 over the trials.</summary>
    public Spread MadviseP50NsSpread { get; init; } = new(MadviseLatencyNs.P50, MadviseLatencyNs.P50, MadviseLatencyNs.P50);

    /// <summary>Per-trial madvise p99 over the trials.</summary>
    public Spread MadviseP99NsSpread { get; init; } = new(MadviseLatencyNs.P99, MadviseLatencyNs.P99, MadviseLatencyNs.P99);

    /// <summary>Whether every trial ended with the same tables and VmPTE as the first (false is possible with several CPUs).</summary>
    public bool TrialsAgree { get; init; } = true;

    /// <summary>Remarks on reading the figures (that reclaim never ran, for example).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>
    /// What a measured run of this design cost the host, machine built and torn down included: the
    /// medians of wall and CPU time over the trials, and the highest peak RSS of any trial (its process
    /// id is the first trial's). Absent
    /// where runs share the process at once (the demo's side-by-side runs).
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public PhaseUsage? Host { get; init; }

    /// <summary>The same per trial, in trial order.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<PhaseUsage>? HostPerTrial { get; init; }
}

/// <summary>The JSON of <c>ptlab compare</c> without <c>--kernel</c>.</summary>
internal sealed record CompareReport(string Scenario, IReadOnlyDictionary<string, object> Parameters, IReadOnlyList<DesignRunReport> Designs)
{
    /// <summary>Measured runs per design.</summary>
    public int Trials { get; init; } = 1;

    /// <summary>"process": every measured run in a process of its own; "shared": every run in this one.</summary>
    public string Isolation { get; init; } = "shared";

    /// <summary>What ran before the measured trials, unmeasured.</summary>
    public string WarmUp { get; init; } = "";

    /// <summary>The order the designs ran in, per trial.</summary>
    public IReadOnlyList<IReadOnlyList<string>> Orders { get; init; } = [];

    /// <summary>One sentence on what the designs did to the page tables, against <c>none</c>; empty without <c>none</c>.</summary>
    public string Summary { get; init; } = "";

    /// <summary>Per design, how its wall time compares with the baseline's over the trials (<see cref="Compare.Verdict"/>).</summary>
    public IReadOnlyList<string> TimingVerdicts { get; init; } = [];

    /// <summary>The bar chart written, or null.</summary>
    public string? Plot { get; init; }

    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary><c>ptlab compare</c>.</summary>
internal static partial class Compare
{
    /// <summary>The slot used when no host kernel can run: any empty 512 GiB slot does for the model.</summary>
    private const ulong ModelOnlySlot = 1UL << 40;

    private const ulong PgdSlot = 1UL << 39;

    internal const string Method =
        "Both sides map at the same address: the start of a 512 GiB slot (one PGD entry) that no other mapping of this " +
        "process uses, so the scenario's tables share nothing with the runtime's. /proc reports only VmPTE, the sum of all " +
        "levels; the kernel's PMD and PUD tables are inferred (a PMD table per 1 GiB touched, a PUD table per 512 GiB slot " +
        "touched, each gone once a munmap leaves no VMA in its span, as free_pgtables' floor/ceiling rule does) and the " +
        "kernel's PTE tables are VmPTE/4 kB less those. The same inference run on the model, whose levels are counted, " +
        "is the method check. Deltas are after minus before the scenario's first step; the runtime's own tables cancel.";

    public static Command Command(ScenarioDef def, TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(def.Name, def.Description);
        foreach (var a in def.Aliases)
        {
            cmd.Aliases.Add(a);
        }

        var designs = new Option<string>("--designs")
        {
            Description = "Comma-separated designs to run (default: every registered design: " + string.Join(",", Reclaim.Designs.Names) + ").",
        };
        var kernel = new Option<bool>("--kernel")
        {
            Description = "Also run the scenario on the host kernel, next to the model design that matches it (pt-reclaim on " +
                          "Linux 6.14+ with CONFIG_PT_RECLAIM=y, else none), at the same address, and print the difference.",
        };
        var trials = new Option<int>("--trials")
        {
            Description = "Measured runs per design, after one unmeasured warm-up of each; the designs' order rotates from trial to trial, and times are medians with their min-max" +
                          (def.DefaultTrials == 3 ? "." : $" (default {def.DefaultTrials} here: {def.DefaultTrialsWhy})."),
            DefaultValueFactory = _ => def.DefaultTrials,
        };
        var isolation = IsolatedRuns.IsolationOption("each design");
        var plot = new Option<string>("--plot")
        {
            Description = "Also draw VmPTE before and after per design as a bar chart into this PNG file.",
            HelpName = "FILE.png",
        };
        plot.Validators.Add(r =>
        {
            if (ReportOptions.WhyNotWritable(r.Tokens.Count > 0 ? r.Tokens[0].Value : null) is { } why)
            {
                r.AddError(why.Replace("--output", "--plot", StringComparison.Ordinal));
            }
        });
        var common = new Cli.ModelOptions();
        foreach (var o in def.Options)
        {
            cmd.Options.Add(o);
        }

        cmd.Options.Add(designs);
        cmd.Options.Add(trials);
        cmd.Options.Add(isolation);
        cmd.Options.Add(plot);
        cmd.Options.Add(kernel);
        var child = new IsolatedRunOptions();
        child.AddTo(cmd);
        common.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var args = common.Args(p, def);
            if (child.DesignToRun(p) is { } one)
            {
                return RunIsolated(def, p, common, args, child, one);
            }

            if (!p.GetValue(kernel))
            {
                var names = ParseDesigns(p.GetValue(designs));
                int n = p.GetValue(trials);
                if (n is < 1 or > 100)
                {
                    throw new UsageException($"--trials must be between 1 and 100, got {n}");
                }

                var scenario = def.Create(p, args);
                common.RefuseMeaningless(p, def, scenario, names);
                common.GuardHostMemory(p, def, scenario);
                return RunDesigns(def, scenario, names, n, p.GetValue(isolation) == "process", p.GetValue(plot), p, common, args, stdout, stderr);
            }

            if (p.GetValue(designs) is not null)
            {
                throw new UsageException("--designs: cannot be combined with --kernel, which runs the design that matches the host kernel");
            }

            if (Cli.Given(p, isolation))
            {
                throw new UsageException("--isolation: cannot be combined with --kernel, which runs one model design next to the kernel and times neither against another design");
            }

            if (args.At != 0)
            {
                throw new UsageException("--at: cannot be combined with --kernel, which places the mapping in an empty 512 GiB slot itself");
            }

            if (!def.KernelCapable)
            {
                throw new UsageException($"--kernel: the {def.Name} scenario runs on the model only");
            }

            return WithKernel(def, p, common, args, stdout, stderr);
        });
        return cmd;
    }

    internal static IReadOnlyList<string> ParseDesigns(string? text)
    {
        if (text is null)
        {
            return [.. Reclaim.Designs.Names];
        }

        var names = text.Split(',', StringSplitOptions.TrimEntries);
        foreach (var n in names)
        {
            if (Reclaim.Designs.Factory(n) is null)
            {
                throw new UsageException($"--designs: unknown design '{n}' (known: {string.Join(", ", Reclaim.Designs.Names)})");
            }
        }

        if (names.Distinct(StringComparer.Ordinal).Count() != names.Length)
        {
            throw new UsageException($"--designs: a design is listed twice in '{text}'");
        }

        return names;
    }

    private static int RunDesigns(
        ScenarioDef def, IScenario scenario, IReadOnlyList<string> names, int trials, bool isolated, string? plotFile, ParseResult p,
        Cli.ModelOptions common, ScenarioArgs args, TextWriter stdout, TextWriter stderr)
    {
        var parameters = new ReportParameters();
        var machines = names.ToDictionary(n => n, n =>
        {
            var m = common.Machine(p, args.Cpus, n, out var reported, def.DefaultRam(scenario));
            foreach (var (k, v) in reported.Values)
            {
                parameters.Add(k, v);
            }

            return m;
        });
        var warmUp = def.WarmUp(scenario);
        string warmUpRun = ReportParameters.Describe(new ReportParameters().AddScenario(warmUp.Parameters).Values);
        Dictionary<string, List<DesignRunReport>> results = [];
        List<IReadOnlyList<string>> orders = [];
        if (isolated)
        {
            var arguments = IsolatedRuns.Arguments(p);
            int done = 0;
            Cli.WithProgress(stderr, [$"{scenario.Name}: {Human.Plural(names.Count * trials, "run")}, a process each"], report =>
                (results, orders) = FairTrials.Run(names, trials, null, (n, _) =>
                {
                    var r = IsolatedRuns.Run(arguments, n);
                    report(0)?.Invoke((double)++done / (names.Count * trials));
                    return r;
                }));
        }
        else
        {
            (results, orders) = FairTrials.Run(
                names,
                trials,
                n => RunOnce(warmUp, machines[n], null),
                (n, _) => Measured(() => RunOnce(scenario, machines[n], stderr)));
        }

        var runs = names.Select(n => Combine(n, results[n])).ToList();
        parameters.AddScenario(scenario.Parameters);
        var report = new CompareReport(scenario.Name, parameters.Values, runs)
        {
            Trials = trials,
            Isolation = isolated ? "process" : "shared",
            WarmUp = isolated
                ? $"in each run's own process, unmeasured runs of its design until the JIT settles (3-8 rounds): {warmUpRun}"
                : $"one unmeasured run of each design: {warmUpRun}",
            Orders = orders,
            Summary = Demo.Summary(runs),
            TimingVerdicts = Verdicts(runs, trials),
        };
        if (!string.IsNullOrEmpty(plotFile))
        {
            Demo.Plot(plotFile, $"{scenario.Name}: VmPTE per design", runs);
            report = report with { Plot = plotFile };
        }

        return common.Report.Write(p, stdout, report.ToJson, () => Csv(report), w => WriteTable(report, w));
    }

    /// <summary>
    /// The child of one isolated run (<see cref="IsolatedRuns"/>): this design's warm-up, then its
    /// measured run, whose report goes into the file the parent named.
    /// </summary>
    private static int RunIsolated(ScenarioDef def, ParseResult p, Cli.ModelOptions common, ScenarioArgs args, IsolatedRunOptions child, string design)
    {
        var scenario = def.Create(p, args);
        var machine = common.Machine(p, args.Cpus, design, out _, def.DefaultRam(scenario));
        return child.Child(p, () => RunOnce(def.WarmUp(scenario), machine, null), () => Measured(() => RunOnce(scenario, machine, null)));
    }

    /// <summary>
    /// A run with what it cost the host (<see cref="DesignRunReport.Host"/>). The designs run one at a
    /// time, and each run's machine is unreachable once it returns, so <see cref="FairTrials.Quiesce"/>
    /// before the next gives its memory back to the host: the host-memory guard's estimate of one
    /// machine holds for the whole command, and each run's peak RSS is its own.
    /// </summary>
    internal static DesignRunReport Measured(Func<DesignRunReport> run)
    {
        var phase = ProcessPhase.Start();
        var r = run();
        var usage = phase.Stop();
        return r with { Host = usage, HostPerTrial = [usage] };
    }

    /// <summary>One run of <paramref name="scenario"/> on a fresh machine, with every madvise call timed.</summary>
    internal static DesignRunReport RunOnce(IScenario scenario, MachineOptions machine, TextWriter? progressTo, Action<double>? progress = null)
    {
        using var target = new ModelTarget(machine);
        var timer = new MadviseTimer(target);
        var r = Cli.ExplainingOutOfMemory(target, () => progressTo is null ? scenario.Run(timer, progress) : Cli.RunWithProgress(scenario, timer, progressTo));
        (r, string? idle) = BackgroundScan.WhenIdle(target, r);
        return new DesignRunReport(
            target.Mm.Design.Name, StatusReport.From(r.Before), StatusReport.From(r.After), CountersReport.From(target.Mm.Counters()),
            LatencyReport.From(timer.Recorder.Summary()), Math.Round(r.WallSeconds, 6), CheckpointReport.From(r))
        {
            Notes = [.. Cli.ReclaimNote(r, target), .. idle is null ? Array.Empty<string>() : [idle]],
            Profile = target.Machine.Sync.Profile is { } profile ? ProfileReport.From(profile, target.Mm.Counters()) : null,
        };
    }

    /// <summary>Each design's wall time against the baseline's (none, else the first design listed).</summary>
    private static List<string> Verdicts(IReadOnlyList<DesignRunReport> runs, int trials)
    {
        var baseline = runs.FirstOrDefault(d => d.Design == Reclaim.Designs.Baseline) ?? runs[0];
        return [.. runs.Where(d => d != baseline).Select(d => Verdict(d.Design, d.WallSecondsSpread, baseline.Design, baseline.WallSecondsSpread, trials))];
    }

    /// <summary>
    /// "pt-reclaim vs none: wall 0.52x the median; faster in every trial (ranges apart)", or, when the
    /// ranges overlap, that these trials show no difference.
    /// </summary>
    internal static string Verdict(string design, Spread wall, string baseline, Spread baseWall, int trials)
    {
        string ratio = baseWall.Median > 0 ? (wall.Median / baseWall.Median).ToString("0.00", CultureInfo.InvariantCulture) + "x" : "-";
        string how = trials < 2 ? "one trial, no spread to judge by (use --trials 3 or more)"
            : wall.Max < baseWall.Min ? $"faster: every trial below {baseline}'s fastest"
            : wall.Min > baseWall.Max ? $"slower: every trial above {baseline}'s slowest"
            : "min-max ranges overlap: no difference these trials can show";
        return $"{design} vs {baseline}: wall {ratio} the median; {how}";
    }

    /// <summary>The first trial's figures with the medians and ranges of every trial's timings.</summary>
    internal static DesignRunReport Combine(string name, IReadOnlyList<DesignRunReport> trials)
    {
        var first = trials[0];
        var wall = Spread.Of(trials.Select(t => t.WallSeconds)).Round(6);
        var p50 = Spread.Of(trials.Select(t => (double)t.MadviseLatencyNs.P50));
        var p99 = Spread.Of(trials.Select(t => (double)t.MadviseLatencyNs.P99));
        return first with
        {
            Design = name,
            WallSeconds = wall.Median,
            MadviseLatencyNs = first.MadviseLatencyNs with { P50 = (long)p50.Median, P99 = (long)p99.Median },
            WallSecondsSpread = wall,
            MadviseP50NsSpread = p50,
            MadviseP99NsSpread = p99,
            TrialsAgree = trials.All(t => t.After == first.After && t.Checkpoints.SequenceEqual(first.Checkpoints)),
            Host = trials.All(t => t.Host is not null)
                ? new PhaseUsage(
                    Math.Round(Spread.Of(trials.Select(t => t.Host!.WallSeconds)).Median, 3),
                    Math.Round(Spread.Of(trials.Select(t => t.Host!.CpuSeconds)).Median, 3),
                    trials.Max(t => t.Host!.PeakRssBytes),
                    first.Host!.PeakScope)
                { ProcessId = first.Host!.ProcessId }
                : null,
            HostPerTrial = trials.All(t => t.Host is not null) ? [.. trials.Select(t => t.Host!)] : null,
        };
    }

    private static string Csv(CompareReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"scenario,design,phase,{CsvColumns.StatusHeader},{CsvColumns.CountersHeader},{CsvColumns.MadviseLatencyHeader},wallSeconds,wallSecondsMin,wallSecondsMax,trials,hostWallSeconds,hostCpuSeconds,hostPeakRssBytes");
        foreach (var d in r.Designs)
        {
            var phases = new List<(string, StatusReport)> { ("before", d.Before) };
            phases.AddRange(d.Checkpoints.Select(c => (c.Label, c.Status)));
            phases.Add(("after", d.After));
            foreach (var (phase, s) in phases)
            {
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"{r.Scenario},{d.Design},{phase},{CsvColumns.Status(s)},{CsvColumns.Counters(d.Counters)},{CsvColumns.Latency(d.MadviseLatencyNs)},{CsvColumns.Number(d.WallSeconds)},{CsvColumns.Number(d.WallSecondsSpread.Min)},{CsvColumns.Number(d.WallSecondsSpread.Max)},{r.Trials},{CsvColumns.Number(d.Host?.WallSeconds ?? 0)},{CsvColumns.Number(d.Host?.CpuSeconds ?? 0)},{d.Host?.PeakRssBytes ?? 0}");
            }
        }

        return sb.ToString();
    }

    private static IAnsiConsole Plain(TextWriter writer) => PlainConsole.Create(writer, 160);

    private static string N(long v) => Human.Count(v);

    private static string Signed(long v) => Human.Signed(v);

    private static string AfterDelta(long before, long after) => $"{N(after)} ({Signed(after - before)})";

    /// <summary>A median with its range when there was more than one trial: 4.631 s (4.5-4.8).</summary>
    private static string Timed(Spread s, int trials, Func<double, string> f, Func<double, string> bare) =>
        trials > 1 ? $"{f(s.Median)} ({bare(s.Min)}-{bare(s.Max)})" : f(s.Median);

    private static void WriteTable(CompareReport r, TextWriter writer)
    {
        var console = Plain(writer);
        console.WriteLine($"{r.Scenario}, one fresh machine per design and trial ({ReportParameters.Describe(r.Parameters)})");
        console.WriteLine(r.Trials > 1
            ? $"{Human.Plural(r.Trials, "measured trial")} per design after a warm-up ({r.WarmUp}), the designs' order rotating per trial; times are medians (min-max); tables and counters are the first trial's"
            : $"one measured trial per design after a warm-up ({r.WarmUp}); use --trials N for medians over N");
        if (r.Isolation == "process")
        {
            console.WriteLine("every run in a process of its own, one at a time, so each design's code is compiled for it alone; host rows: the measured run in its process, machine built and torn down included (peak RSS: the highest of the trials)");
        }
        else if (r.Designs.All(d => d.Host is not null))
        {
            console.WriteLine("the designs run one at a time in this process, each machine released before the next, the compiled code shared (shaped by the design that ran first); host rows: this process per run, machine built and torn down included (peak RSS: the highest of the trials)");
        }

        var t = new Table().Border(TableBorder.Simple);
        t.AddColumn("after (delta from before: right after the mmap)");
        foreach (var d in r.Designs)
        {
            t.AddColumn(new TableColumn(d.Design).RightAligned());
        }

        void Row(string name, Func<DesignRunReport, string> cell) => t.AddRow([name, .. r.Designs.Select(cell)]);
        Row("PTE tables", d => AfterDelta(d.Before.Tables.Pte, d.After.Tables.Pte));
        Row("PMD tables", d => AfterDelta(d.Before.Tables.Pmd, d.After.Tables.Pmd));
        Row("PUD tables", d => AfterDelta(d.Before.Tables.Pud, d.After.Tables.Pud));
        Row("VmPTE kB", d => AfterDelta(d.Before.VmPteKb, d.After.VmPteKb));
        Row("VmRSS kB", d => AfterDelta(d.Before.VmRssKb, d.After.VmRssKb));
        foreach (var label in r.Designs[0].Checkpoints.Select(c => c.Label))
        {
            Row($"PTE tables @ {label}", d => N(d.Checkpoints.First(c => c.Label == label).Status.Tables.Pte));
        }

        Row("faults", d => N(d.Counters.Faults));
        Row("madvise calls", d => N(d.MadviseLatencyNs.Count));
        Row("madvise p50", d => d.MadviseLatencyNs.Count == 0 ? "-" : Timed(d.MadviseP50NsSpread, r.Trials, Human.Micros, v => (v / 1000).ToString("N1", CultureInfo.InvariantCulture)));
        Row("madvise p99", d => d.MadviseLatencyNs.Count == 0 ? "-" : Timed(d.MadviseP99NsSpread, r.Trials, Human.Micros, v => (v / 1000).ToString("N1", CultureInfo.InvariantCulture)));
        Row("grace periods", d => N(d.Counters.GracePeriods));
        Row("TLB flushes", d => N(d.Counters.TlbFlushes));
        if (r.Designs[0].Profile is not null)
        {
            foreach (var (name, _, _) in r.Designs[0].Profile!.Rows().Skip(1))
            {
                Row($"{name} per fault", d => d.Profile!.Rows().First(x => x.Name == name).PerFault.ToString("0.000", CultureInfo.InvariantCulture));
            }
        }

        Row("wall", d => Timed(d.WallSecondsSpread, r.Trials, Human.Seconds, v => v.ToString("0.000", CultureInfo.InvariantCulture)));
        if (r.Designs.All(d => d.Host is not null))
        {
            Row("host: wall per run", d => Human.Seconds(d.Host!.WallSeconds));
            Row("host: CPU per run", d => Human.Seconds(d.Host!.CpuSeconds));
            Row(r.Designs[0].Host!.PeakScope == "phase" ? "host: peak RSS" : "host: peak RSS (process)", d => Human.Bytes(d.Host!.PeakRssBytes));
        }

        console.Write(t);
        if (r.Summary.Length > 0)
        {
            console.WriteLine(r.Summary);
        }

        if (r.Plot is not null)
        {
            console.WriteLine($"plot: {r.Plot} (VmPTE before and after, per design)");
        }

        foreach (var v in r.TimingVerdicts)
        {
            console.WriteLine(v);
        }

        foreach (var note in r.Designs.SelectMany(d => d.Notes).Distinct())
        {
            writer.WriteLine(note);
        }

        foreach (var d in r.Designs.Where(d => !d.TrialsAgree))
        {
            console.WriteLine($"note: {d.Design}'s trials ended with different tables (several CPUs interleave differently); the table shows the first trial");
        }
    }
}
