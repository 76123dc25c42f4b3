using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using PtLab.Cli.Plotting;
using PtLab.Kernel;
using PtLab.Kernel.Scan;
using PtLab.Reclaim;

namespace PtLab.Cli;

/// <summary><c>ptlab scan</c>: the page tables of live processes, exactly, and what each design would free.</summary>
internal static class Scan
{
    private static readonly TimeSpan s_freezeTimeout = TimeSpan.FromSeconds(5);

    public static Option<string> MethodOption()
    {
        var o = new Option<string>("--method")
        {
            Description = $"auto: PAGEMAP_SCAN (exact, Linux 6.7+) where the kernel has it, else the estimate; {ScanMethods.PagemapScan}; " +
                          $"{ScanMethods.PagemapEstimate}: pagemap entries and VmPTE, with lower and upper bounds.",
            DefaultValueFactory = _ => "auto",
        };
        o.AcceptOnlyFromAmong("auto", ScanMethods.PagemapScan, ScanMethods.PagemapEstimate);
        return o;
    }

    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var pids = new Argument<string[]>("PID") { Description = "Processes to scan.", Arity = ArgumentArity.ZeroOrMore };
        var all = new Option<bool>("--all") { Description = "Scan every process of the host, ranked by bytes of empty PTE tables; kernel threads skipped." };
        var top = new Option<int>("--top") { Description = "With --all: rows shown in the table.", DefaultValueFactory = _ => 20 };
        var minVmPte = new Option<string>("--min-vmpte") { Description = "With --all: skip processes whose VmPTE is below this size (K/M/G suffixes).", DefaultValueFactory = _ => "0" };
        var freeze = new Option<bool>("--freeze") { Description = "Stop the process (SIGSTOP) while it is scanned, for a consistent count; it is always resumed (SIGCONT), on errors and Ctrl-C too." };
        var vmas = new Option<bool>("--vmas") { Description = "Per-VMA figures: range, permissions, name, tables, empty tables, populated entries; a table shared by two VMAs is marked." };
        var watch = new Option<string?>("--watch") { Description = "Sample one process every INTERVAL (e.g. 1s, 500ms) and print a time series (CSV, or JSON lines with --format json) until it exits, Ctrl-C or SIGTERM (either one still writes --output and --plot)." };
        var samples = new Option<int?>("--samples") { Description = "With --watch: stop after this many samples." };
        var plot = new Option<string?>("--plot") { Description = "With --watch: write a plot of the series to OUT.png or OUT.svg at the end." };
        var method = MethodOption();
        var cmd = new Command(
            "scan",
            "Count the page tables of live processes exactly (PAGEMAP_SCAN, read-only): VmPTE, PTE tables, empty and zero-page-only tables, " +
            "THP deposits, PMD+PUD tables, and what each reclaim design would free now. Rules: " +
            string.Join("; ", FreeNowRules.All.Select(r => $"{r.Design}: {r.Rule}")) + ".")
        {
            pids, all, top, minVmPte, freeze, vmas, watch, samples, plot, method,
        };
        var output = ReportOptions.AddTo(cmd, "table", "json", "csv", "prometheus");
        cmd.SetAction(p =>
        {
            string[] pidArgs = p.GetValue(pids) ?? [];
            bool isAll = p.GetValue(all);
            string fmt = output.FormatOf(p);
            if (isAll && pidArgs.Length > 0)
            {
                throw new UsageException("--all: cannot be combined with PIDs");
            }

            if (!isAll && pidArgs.Length == 0)
            {
                throw new UsageException("scan: give one or more PIDs, or --all");
            }

            if (!isAll && (p.GetResult(top) is { Implicit: false } || p.GetResult(minVmPte) is { Implicit: false }))
            {
                throw new UsageException("--top and --min-vmpte apply to --all only");
            }

            if (isAll && p.GetValue(freeze))
            {
                throw new UsageException("--freeze: cannot be combined with --all (it would stop every process of the host in turn); freeze one PID at a time");
            }

            if (p.GetValue(top) < 1)
            {
                throw new UsageException($"--top must be at least 1, got {p.GetValue(top)}");
            }

            var selected = isAll ? [] : ParsePids(pidArgs, "PID");
            var options = new ScanOptions { Vmas = p.GetValue(vmas), Method = p.GetValue(method)!, Frozen = p.GetValue(freeze) };
            if (p.GetValue(watch) is { } every)
            {
                if (isAll || selected.Count != 1)
                {
                    throw new UsageException("--watch: give exactly one PID");
                }

                if (fmt is "prometheus")
                {
                    throw new UsageException("--watch: --format prometheus is for a single scan; use json or csv");
                }

                string? plotPath = p.GetValue(plot);
                if (plotPath is not null && !(plotPath.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || plotPath.EndsWith(".svg", StringComparison.OrdinalIgnoreCase)))
                {
                    throw new UsageException($"--plot: '{plotPath}' must end in .png or .svg");
                }

                int? n = p.GetValue(samples);
                if (n is < 1)
                {
                    throw new UsageException($"--samples must be at least 1, got {n}");
                }

                return Watch(selected[0], ParseInterval(every, "--watch"), n, plotPath, p.GetValue(output.Output), fmt, options, stdout, stderr);
            }

            if (p.GetValue(plot) is not null || p.GetValue(samples) is not null)
            {
                throw new UsageException("--plot and --samples apply to --watch only");
            }

            var report = isAll ? All(p.GetValue(minVmPte), options) : Pids(selected, options, stderr, out _);
            int code = report.Failures.Any(f => f.Kind is "no-such-process" or "kernel-thread") && !isAll ? Cli.ExitUsage
                : report.Failures.Count > 0 && !isAll ? Cli.ExitFailure : Cli.ExitOk;
            output.Write(p, stdout, report.ToJson, () => ScanOutput.Csv(report, options.Vmas), w =>
            {
                if (fmt == "prometheus")
                {
                    var metrics = new ScanMetrics();
                    metrics.Update(ToHostScan(report), int.MaxValue);
                    w.Write(metrics.Text());
                }
                else if (isAll)
                {
                    ScanOutput.WriteRanking(report, p.GetValue(top), w);
                }
                else
                {
                    ScanOutput.WriteDetail(report, w);
                }
            });
            return code;
        });
        return cmd;
    }

    /// <summary>Positive integers, each naming the argument when it is not one.</summary>
    public static List<int> ParsePids(IEnumerable<string> args, string what)
    {
        var list = new List<int>();
        foreach (string a in args)
        {
            if (!int.TryParse(a, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || pid < 1)
            {
                throw new UsageException($"{what}: '{a}' is not a process id (a positive integer)");
            }

            list.Add(pid);
        }

        return list;
    }

    /// <summary>An interval: a number with ms, s, m or h (a bare number is seconds).</summary>
    public static TimeSpan ParseInterval(string? text, string option)
    {
        string t = (text ?? "").Trim();
        (string num, double scale) = t.EndsWith("ms", StringComparison.Ordinal) ? (t[..^2], 0.001)
            : t.EndsWith('s') ? (t[..^1], 1.0)
            : t.EndsWith('m') ? (t[..^1], 60.0)
            : t.EndsWith('h') ? (t[..^1], 3600.0)
            : (t, 1.0);
        if (!double.TryParse(num, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double v) || v * scale < 0.01 || v * scale > 86400)
        {
            throw new UsageException($"{option}: '{text}' is not an interval from 10ms to 24h (for example 500ms, 15s, 1m)");
        }

        return TimeSpan.FromSeconds(v * scale);
    }

    private static string KernelText() => KernelInfo.Probe().Release;

    private static ScanReport All(string? minVmPte, ScanOptions options)
    {
        long minKb = (long)(Cli.Size(minVmPte, "--min-vmpte") / 1024);
        var host = HostScanner.ScanAll(minKb, options.Method);
        return new ScanReport(
            KernelText(), host.Processes, [.. host.Skipped.Select(ScanFailureReport.From)], host.KernelThreads, host.BelowMinVmPte, RuleReport.All(), host.WallSeconds);
    }

    /// <summary>Scans each pid; each failure is one line on stderr, and the others are still scanned.</summary>
    internal static ScanReport Pids(IReadOnlyList<int> pids, ScanOptions options, TextWriter stderr, out List<ScanException> errors)
    {
        var sw = Stopwatch.StartNew();
        var scans = new List<ProcessScan>();
        errors = [];
        foreach (int pid in pids)
        {
            try
            {
                scans.Add(ScanOne(pid, options));
            }
            catch (ScanException e)
            {
                stderr.WriteLine($"ptlab: {e.Message}");
                errors.Add(e);
            }
        }

        return new ScanReport(KernelText(), scans, [.. errors.Select(ScanFailureReport.From)], 0, 0, RuleReport.All(), Math.Round(sw.Elapsed.TotalSeconds, 6));
    }

    private static ProcessScan ScanOne(int pid, ScanOptions options)
    {
        if (!options.Frozen)
        {
            return ProcessScanner.Scan(pid, options);
        }

        using var freezer = Freezer.Freeze(pid, s_freezeTimeout);
        return ProcessScanner.Scan(pid, freezer.Stopped ? options : options with { Frozen = false }); // interrupted before the stop
    }

    private static HostScan ToHostScan(ScanReport r) => new()
    {
        Processes = r.Processes,
        KernelThreads = r.KernelThreadsSkipped,
        BelowMinVmPte = r.BelowMinVmPte,
        Skipped = [.. r.Failures.Select(f => new ScanSkip(f.Pid, f.Comm, Enum.GetValues<ScanFailure>().First(k => ScanFailureReport.KindName(k) == f.Kind), f.Message))],
        WallSeconds = r.WallSeconds,
    };

    private static int Watch(int pid, TimeSpan every, int? samples, string? plotPath, string? jsonPath, string format, ScanOptions options, TextWriter stdout, TextWriter stderr)
    {
        // Registered for the whole watch, before the first freeze: a SIGINT or SIGTERM at any point of
        // a sample (the freezer's own handlers come and go with each sample) ends the loop after it.
        using var stop = new StopSignals();
        var series = new List<WatchSample>();
        var sw = Stopwatch.StartNew();
        bool json = format == "json";
        if (!json)
        {
            stdout.WriteLine("seconds,pid,vmPteKb,tables,pteTables,emptyPteTables,zeroPageTables,thpDeposits,exact");
        }

        int code = Cli.ExitOk;
        while (!stop.IsStopRequested && (samples is null || series.Count < samples))
        {
            double t = sw.Elapsed.TotalSeconds;
            ProcessScan s;
            try
            {
                s = ScanOne(pid, options);
            }
            catch (ScanException e)
            {
                bool gone = e.Kind is ScanFailure.Vanished or ScanFailure.NoAddressSpace || (e.Kind == ScanFailure.NoSuchProcess && series.Count > 0);
                stderr.WriteLine(gone && series.Count > 0 ? $"ptlab: pid {pid} exited after {series.Count} samples" : $"ptlab: {e.Message}");
                code = gone && series.Count > 0 ? Cli.ExitOk : e.Kind is ScanFailure.NoSuchProcess or ScanFailure.KernelThread ? Cli.ExitUsage : Cli.ExitFailure;
                break;
            }

            var sample = new WatchSample(Math.Round(t, 3), pid, s.VmPteKb, s.VmPteKb / 4, s.PteTables, s.EmptyPteTables, s.ZeroPageTables, s.ThpDeposits ?? 0, s.Exact);
            series.Add(sample);
            if (json)
            {
                stdout.WriteLine(JsonSerializer.Serialize(sample, ScanJson.Lines.WatchSample));
            }
            else
            {
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{sample.Seconds:0.###},{pid},{sample.VmPteKb},{sample.Tables},{sample.PteTables},{sample.EmptyPteTables},{sample.ZeroPageTables},{sample.ThpDeposits},{(sample.Exact ? "true" : "false")}"));
            }

            stdout.Flush();
            if (samples is null || series.Count < samples)
            {
                stop.Token.WaitHandle.WaitOne(every);
            }
        }

        if (!string.IsNullOrEmpty(jsonPath))
        {
            File.WriteAllText(jsonPath, JsonSerializer.Serialize(series, ScanJson.Default.ListWatchSample) + Environment.NewLine);
        }

        if (plotPath is not null && series.Count > 0)
        {
            double[] x = [.. series.Select(s => s.Seconds)];
            TimeSeriesPlot.Save(
                plotPath,
                $"page tables of pid {pid} ({(series[0].Exact ? "PAGEMAP_SCAN" : "estimate")})",
                "tables (4 KiB each)",
                [
                    new TimeSeries("all tables (VmPTE / 4 kB)", x, [.. series.Select(s => (double)s.Tables)]),
                    new TimeSeries("PTE tables", x, [.. series.Select(s => (double)s.PteTables)]),
                    new TimeSeries("empty PTE tables", x, [.. series.Select(s => (double)s.EmptyPteTables)]),
                ]);
            stderr.WriteLine($"ptlab: wrote {plotPath}");
        }

        return code;
    }
}
