using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using PtLab.Reclaim;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>One design and CPU count of <c>ptlab bench designs</c>, with its ratios to <c>none</c> at the same CPU count.</summary>
internal sealed record BenchRowReport(
    string Design, int Cpus, double Seconds, long Faults, long Loops, double FaultsPerSecond, LatencyReport DontneedLatencyNs, BenchRatiosReport RatioToNone)
{
    /// <summary>Touch + DONTNEED rounds, all CPUs together: the name the table uses (<c>loops</c> is kept for compatibility).</summary>
    public long Rounds => Loops;
}

/// <summary>Figure / the same figure for <c>none</c>.</summary>
internal sealed record BenchRatiosReport(double FaultsPerSecond, double P50, double P99);

/// <summary>The JSON of <c>ptlab bench designs</c>.</summary>
internal sealed record BenchReport(string Benchmark, double SecondsPerRun, string Loop, IReadOnlyList<BenchRowReport> Results)
{
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
            "Fault throughput and MADV_DONTNEED latency per design and CPU count: " + Loop + ", on a fresh machine per run, " +
            "for --seconds. Each figure is also given as a ratio to the none design measured in the same invocation. A benchmark, not a test.");
        var cpus = new Option<string>("--cpus") { Description = "Comma-separated CPU counts (1-64).", DefaultValueFactory = _ => "1,2" };
        var seconds = new Option<double>("--seconds") { Description = "Seconds per design and CPU count (0 < S <= 600).", DefaultValueFactory = _ => 2.0 };
        var designs = new Option<string>("--designs") { Description = "Comma-separated designs (default: all registered); none always runs as the baseline." };
        cmd.Options.Add(cpus);
        cmd.Options.Add(seconds);
        cmd.Options.Add(designs);
        var output = ReportOptions.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var counts = ParseCpus(p.GetValue(cpus));
            double s = p.GetValue(seconds);
            if (!(s > 0 && s <= 600))
            {
                throw new UsageException($"--seconds must be above 0 and at most 600, got {s.ToString(CultureInfo.InvariantCulture)}");
            }

            var names = Compare.ParseDesigns(p.GetValue(designs)).ToList();
            if (!names.Contains(Designs.Baseline))
            {
                names.Insert(0, Designs.Baseline);
            }

            var rows = new List<BenchRowReport>();
            foreach (int n in counts)
            {
                var results = names.Select(d => DesignBenchmark.Run(d, n, TimeSpan.FromSeconds(s))).ToList();
                var none = results.Single(r => r.Design == Designs.Baseline);
                foreach (var r in results)
                {
                    rows.Add(new BenchRowReport(
                        r.Design, r.Cpus, Math.Round(r.Seconds, 6), r.Faults, r.Loops, Math.Round(r.FaultsPerSecond),
                        LatencyReport.From(r.DontNeedLatencyNs),
                        new BenchRatiosReport(
                            Ratio(r.FaultsPerSecond, none.FaultsPerSecond),
                            Ratio(r.DontNeedLatencyNs.P50, none.DontNeedLatencyNs.P50),
                            Ratio(r.DontNeedLatencyNs.P99, none.DontNeedLatencyNs.P99))));
                }
            }

            var report = new BenchReport("designs", s, Loop, rows);
            return output.Write(p, stdout, report.ToJson, () => Csv(report), w => WriteTable(report, w));
        });
        return cmd;
    }

    private static double Ratio(double a, double b) => b > 0 ? Math.Round(a / b, 3) : 0;

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
        sb.AppendLine("design,cpus,seconds,faults,rounds,faultsPerSecond,dontneedP50Ns,dontneedP99Ns,dontneedCount,faultsPerSecondRatio,p50Ratio,p99Ratio");
        foreach (var x in r.Results)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{x.Design},{x.Cpus},{x.Seconds},{x.Faults},{x.Loops},{x.FaultsPerSecond},{x.DontneedLatencyNs.P50},{x.DontneedLatencyNs.P99},{x.DontneedLatencyNs.Count},{x.RatioToNone.FaultsPerSecond},{x.RatioToNone.P50},{x.RatioToNone.P99}");
        }

        return sb.ToString();
    }

    private static void WriteTable(BenchReport r, TextWriter writer)
    {
        var console = PlainConsole.Create(writer, 140);
        console.WriteLine($"bench designs: {r.Loop}; {r.SecondsPerRun.ToString(CultureInfo.InvariantCulture)} s per run; ratios are to none at the same CPU count");
        var t = new Table().Border(TableBorder.Simple);
        foreach (var h in new[] { "design", "cpus", "faults/s", "x none", "DONTNEED p50", "x none", "DONTNEED p99", "x none", "rounds" })
        {
            t.AddColumn(new TableColumn(h).RightAligned());
        }

        static string F(double v, string fmt) => v.ToString(fmt, CultureInfo.InvariantCulture);
        foreach (var x in r.Results)
        {
            t.AddRow(
                x.Design, F(x.Cpus, "0"), F(x.FaultsPerSecond, "N0"), F(x.RatioToNone.FaultsPerSecond, "0.000"),
                F(x.DontneedLatencyNs.P50 / 1000.0, "0.0") + " µs", F(x.RatioToNone.P50, "0.000"),
                F(x.DontneedLatencyNs.P99 / 1000.0, "0.0") + " µs", F(x.RatioToNone.P99, "0.000"), F(x.Loops, "N0"));
        }

        console.Write(t);
    }
}
