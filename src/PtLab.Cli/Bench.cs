using System.CommandLine;
using System.Globalization;
using System.Text;
using PtLab.Reclaim;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>
/// One design and CPU count of <c>ptlab bench designs</c>. <see cref="FaultsPerSecond"/>, the
/// latencies and <see cref="RatioToNone"/> are medians over the trials; <see cref="Seconds"/>,
/// <see cref="Faults"/> and <see cref="Loops"/> are totals over them.
/// </summary>
internal sealed record BenchRowReport(
    string Design, int Cpus, double Seconds, long Faults, long Loops, double FaultsPerSecond, LatencyReport DontneedLatencyNs, BenchRatiosReport RatioToNone)
{
    /// <summary>Touch + DONTNEED rounds, all CPUs together: the name the table uses (<c>loops</c> is kept for compatibility).</summary>
    public long Rounds => Loops;

    /// <summary>Measured runs.</summary>
    public int Trials { get; init; } = 1;

    /// <summary>Faults per second over the trials.</summary>
    public Spread FaultsPerSecondSpread { get; init; } = new(FaultsPerSecond, FaultsPerSecond, FaultsPerSecond);

    /// <summary>The per-trial ratios to <c>none</c> (each against none's run of the same trial) over the trials.</summary>
    public BenchRatioSpreadsReport RatioToNoneSpread { get; init; } = new(new(0, 0, 0), new(0, 0, 0), new(0, 0, 0));
}

/// <summary>Figure / the same figure for <c>none</c>: faults/s is better higher, the latencies lower.</summary>
internal sealed record BenchRatiosReport(double FaultsPerSecond, double P50, double P99);

/// <summary>The per-trial ratios to <c>none</c>, median and range.</summary>
internal sealed record BenchRatioSpreadsReport(Spread FaultsPerSecond, Spread P50, Spread P99);

/// <summary>The JSON of <c>ptlab bench designs</c>.</summary>
internal sealed record BenchReport(string Benchmark, double SecondsPerRun, string Loop, IReadOnlyList<BenchRowReport> Results)
{
    /// <summary>Measured runs per design and CPU count.</summary>
    public int Trials { get; init; } = 1;

    /// <summary>Unmeasured seconds each design ran first, per CPU count (in each run's own process with --isolation process).</summary>
    public double WarmUpSeconds { get; init; }

    /// <summary>"process": every measured run in a process of its own; "shared": every run in this one.</summary>
    public string Isolation { get; init; } = "shared";

    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary><c>ptlab bench designs</c>.</summary>
internal static class Bench
{
    private const string Loop = "each CPU: write one byte per page of its own 2 MiB-aligned 2 MiB, then MADV_DONTNEED it; page data off";

    public static Command Command(TextWriter stdout)
    {
        var cmd = new Command(
            "designs",
            "Fault throughput and MADV_DONTNEED latency per design and CPU count: " + Loop + ", on a fresh machine per run. " +
            "Every design first runs unmeasured (warm-up), then --trials times, the designs' order rotating from trial to trial; " +
            "figures are medians with their min-max, and each is also a ratio to none's run in the same trial. A benchmark, not a test.");
        var cpus = new Option<string>("--cpus") { Description = "Comma-separated CPU counts (1-64).", DefaultValueFactory = _ => "1,2" };
        var seconds = new Option<double>("--seconds")
        {
            Description = "Measured seconds per design and CPU count, split evenly over the trials (0 < S <= 600).",
            DefaultValueFactory = _ => 2.0,
        };
        var trials = new Option<int>("--trials") { Description = "Measured runs per design and CPU count (1-100).", DefaultValueFactory = _ => 3 };
        var designs = new Option<string>("--designs") { Description = "Comma-separated designs (default: all registered); none always runs as the baseline." };
        var isolation = IsolatedRuns.IsolationOption("each design and CPU count");
        var child = new IsolatedRunOptions();
        var childCpus = new Option<int>(IsolatedRuns.CpusOption) { Hidden = true, Description = "Internal: the CPU count " + IsolatedRuns.DesignOption + " runs on." };
        cmd.Options.Add(cpus);
        cmd.Options.Add(seconds);
        cmd.Options.Add(trials);
        cmd.Options.Add(designs);
        cmd.Options.Add(isolation);
        child.AddTo(cmd);
        cmd.Options.Add(childCpus);
        var output = ReportOptions.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var counts = ParseCpus(p.GetValue(cpus));
            double s = p.GetValue(seconds);
            if (!(s > 0 && s <= 600))
            {
                throw new UsageException($"--seconds must be above 0 and at most 600, got {s.ToString(CultureInfo.InvariantCulture)}");
            }

            int n = p.GetValue(trials);
            if (n is < 1 or > 100)
            {
                throw new UsageException($"--trials must be between 1 and 100, got {n}");
            }

            var names = Compare.ParseDesigns(p.GetValue(designs)).ToList();
            if (!names.Contains(Designs.Baseline))
            {
                names.Insert(0, Designs.Baseline);
            }

            double warmUp = Math.Min(0.25, s);
            if (child.DesignToRun(p) is { } one)
            {
                int c = p.GetValue(childCpus);
                return child.Child(
                    p,
                    () => DesignBenchmark.Run(one, c, TimeSpan.FromSeconds(warmUp)),
                    () => DesignBenchmark.Run(one, c, TimeSpan.FromSeconds(s / n)));
            }

            bool isolated = p.GetValue(isolation) == "process";
            var arguments = IsolatedRuns.Arguments(p);
            var rows = new List<BenchRowReport>();
            foreach (int c in counts)
            {
                var (results, _) = isolated
                    ? FairTrials.Run(
                        names, n, null, (d, _) => IsolatedRuns.Run<DesignBenchmarkResult>(arguments, d, [IsolatedRuns.CpusOption, c.ToString(CultureInfo.InvariantCulture)]))
                    : FairTrials.Run(
                        names,
                        n,
                        d => DesignBenchmark.Run(d, c, TimeSpan.FromSeconds(warmUp)),
                        (d, _) => DesignBenchmark.Run(d, c, TimeSpan.FromSeconds(s / n)));
                rows.AddRange(names.Select(d => Row(results[d], results[Designs.Baseline])));
            }

            var report = new BenchReport("designs", s, Loop, rows) { Trials = n, WarmUpSeconds = warmUp, Isolation = isolated ? "process" : "shared" };
            return output.Write(p, stdout, report.ToJson, () => Csv(report), w => WriteTable(report, w));
        });
        return cmd;
    }

    /// <summary>One design's trials, each against none's run of the same trial.</summary>
    private static BenchRowReport Row(IReadOnlyList<DesignBenchmarkResult> trials, IReadOnlyList<DesignBenchmarkResult> none)
    {
        var fps = Spread.Of(trials.Select(t => t.FaultsPerSecond)).Round(0);
        var p50 = Spread.Of(trials.Select(t => (double)t.DontNeedLatencyNs.P50));
        var p99 = Spread.Of(trials.Select(t => (double)t.DontNeedLatencyNs.P99));
        var ratios = new BenchRatioSpreadsReport(
            Spread.Of(trials.Select((t, i) => Ratio(t.FaultsPerSecond, none[i].FaultsPerSecond))),
            Spread.Of(trials.Select((t, i) => Ratio(t.DontNeedLatencyNs.P50, none[i].DontNeedLatencyNs.P50))),
            Spread.Of(trials.Select((t, i) => Ratio(t.DontNeedLatencyNs.P99, none[i].DontNeedLatencyNs.P99))));
        var first = trials[0];
        return new BenchRowReport(
            first.Design, first.Cpus, Math.Round(trials.Sum(t => t.Seconds), 6), trials.Sum(t => t.Faults), trials.Sum(t => t.Loops), fps.Median,
            new LatencyReport((long)p50.Median, (long)p99.Median, trials.Sum(t => t.DontNeedLatencyNs.Count)),
            new BenchRatiosReport(Math.Round(ratios.FaultsPerSecond.Median, 3), Math.Round(ratios.P50.Median, 3), Math.Round(ratios.P99.Median, 3)))
        {
            Trials = trials.Count,
            FaultsPerSecondSpread = fps,
            RatioToNoneSpread = new BenchRatioSpreadsReport(ratios.FaultsPerSecond.Round(3), ratios.P50.Round(3), ratios.P99.Round(3)),
        };
    }

    private static double Ratio(double a, double b) => b > 0 ? a / b : 0;

    private static List<int> ParseCpus(string? text)
    {
        var counts = new List<int>();
        foreach (var part in (text ?? "").Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n is < 1 or > 64)
            {
                throw new UsageException($"--cpus must be a comma-separated list of CPU counts from 1 to 64, got '{text}'");
            }

            counts.Add(n);
        }

        return counts;
    }

    private static string Csv(BenchReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine("design,cpus,trials,seconds,faults,rounds,faultsPerSecond,faultsPerSecondMin,faultsPerSecondMax,dontneedP50Ns,dontneedP99Ns,dontneedCount,faultsPerSecondRatio,faultsPerSecondRatioMin,faultsPerSecondRatioMax,p50Ratio,p99Ratio");
        foreach (var x in r.Results)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{x.Design},{x.Cpus},{x.Trials},{x.Seconds},{x.Faults},{x.Rounds},{x.FaultsPerSecond},{x.FaultsPerSecondSpread.Min},{x.FaultsPerSecondSpread.Max},{x.DontneedLatencyNs.P50},{x.DontneedLatencyNs.P99},{x.DontneedLatencyNs.Count},{x.RatioToNone.FaultsPerSecond},{x.RatioToNoneSpread.FaultsPerSecond.Min},{x.RatioToNoneSpread.FaultsPerSecond.Max},{x.RatioToNone.P50},{x.RatioToNone.P99}");
        }

        return sb.ToString();
    }

    private static void WriteTable(BenchReport r, TextWriter writer)
    {
        var console = PlainConsole.Create(writer, 160);
        console.WriteLine($"bench designs: {r.Loop}.");
        string where = r.Isolation == "process" ? " in each run's own process" : ", all in this process";
        console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{Human.Plural(r.Trials, "trial")} of {r.SecondsPerRun / r.Trials:0.###} s per design and CPU count, after a {r.WarmUpSeconds:0.##} s warm-up of each{where}; the designs' order rotates per trial."));
        console.WriteLine("Figures are medians (min-max over the trials); a ratio compares each trial with none's run in the same trial.");
        var t = new Table().Border(TableBorder.Simple);
        foreach (var h in new[] { "design", "cpus", "faults/s", "faults/s x none\n(higher is better)", "DONTNEED p50", "p50 x none\n(lower is better)", "DONTNEED p99", "p99 x none\n(lower is better)", "rounds" })
        {
            t.AddColumn(new TableColumn(h).RightAligned());
        }

        static string F(double v, string fmt) => v.ToString(fmt, CultureInfo.InvariantCulture);
        string S(Spread s, string fmt) => r.Trials > 1 ? $"{F(s.Median, fmt)} ({F(s.Min, fmt)}-{F(s.Max, fmt)})" : F(s.Median, fmt);
        foreach (var x in r.Results)
        {
            t.AddRow(
                x.Design, F(x.Cpus, "0"), S(x.FaultsPerSecondSpread, "N0"), S(x.RatioToNoneSpread.FaultsPerSecond, "0.00"),
                Human.Micros(x.DontneedLatencyNs.P50), S(x.RatioToNoneSpread.P50, "0.00"),
                Human.Micros(x.DontneedLatencyNs.P99), S(x.RatioToNoneSpread.P99, "0.00"), Human.Count(x.Rounds));
        }

        console.Write(t);
    }
}
