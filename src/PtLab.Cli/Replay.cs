using System.CommandLine;
using System.Globalization;
using System.Text;
using PtLab.Cli.Plotting;
using PtLab.Mm;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Cli;

/// <summary><c>ptlab replay FILE</c>: a recorded program's address-space history run on the model under each design.</summary>
internal static class Replay
{
    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(
            "replay",
            "Replay a trace (ptlab record, ptlab trace import) on the model under each design: every process at the addresses the kernel " +
            "gave it, faults as accesses, syscalls with their results compared. Prints per design and process VmPTE, tables per level, peak VmPTE, " +
            "VmRSS, faults, grace periods and madvise latency, and for the design that matches the recorded host the difference from the kernel's " +
            "figure at every /proc/PID/status sample.");
        var file = new Argument<string>("file") { Description = "The trace file." };
        var designs = new Option<string>("--designs")
        {
            Description = "Comma-separated designs to replay under (default: every registered design: " + string.Join(",", Reclaim.Designs.Names) + ").",
        };
        var ram = new Option<string>("--ram") { Description = "Simulated RAM of each design's machine (K/M/G/T suffixes).", DefaultValueFactory = _ => "64G" };
        var cpus = new Option<int?>("--cpus") { Description = "Simulated CPUs (default: the recorded host's; threads share them as they shared the host's)." };
        var plot = new Option<string?>("--plot") { Description = "Draw VmPTE over time to this file (.png or .svg): one line per design, the kernel's samples as points.", HelpName = "OUT.png|OUT.svg" };
        var force = new Option<bool>("--force") { Description = "Run even when the estimate of the host memory needed says it will not fit." };
        var coldFiles = new Option<bool>("--cold-files")
        {
            Description = "Ignore the page-cache residency the trace recorded, and its changes: every mapped file starts cold (nothing cached), as in traces before format 4.",
        };
        cmd.Arguments.Add(file);
        cmd.Options.Add(designs);
        cmd.Options.Add(ram);
        cmd.Options.Add(cpus);
        cmd.Options.Add(plot);
        cmd.Options.Add(force);
        cmd.Options.Add(coldFiles);
        var report = ReportOptions.AddTo(cmd);
        cmd.SetAction(p =>
        {
            string path = p.GetValue(file)!;
            var names = p.GetValue(designs) is { } d ? Compare.ParseDesigns(d) : [.. Reclaim.Designs.Names];
            ulong ramBytes = Cli.Size(p.GetValue(ram), "--ram");
            if (ramBytes < (16UL << 20))
            {
                throw new UsageException($"--ram must be at least 16M, got '{p.GetValue(ram)}'");
            }

            string? plotPath = p.GetValue(plot);
            if (plotPath is not null && !plotPath.EndsWith(".png", StringComparison.OrdinalIgnoreCase) && !plotPath.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
            {
                throw new UsageException($"--plot: '{plotPath}' must end in .png or .svg");
            }

            if (plotPath is not null && ReportOptions.WhyNotWritable(plotPath) is { } why)
            {
                throw new UsageException(why.Replace("--output", "--plot", StringComparison.Ordinal));
            }

            TraceMetadata metadata;
            List<List<string>> groups;
            try
            {
                using var reader = TraceReader.Open(path);
                metadata = reader.Metadata;
                groups = Groups(names, reader, (long)ramBytes, p.GetValue(force), pageCache: !p.GetValue(coldFiles));
            }
            catch (TraceFormatException e)
            {
                throw new UsageException(e.Message);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"cannot read trace '{path}': {e.Message}");
            }

            int cpuCount = p.GetValue(cpus) ?? HostCpus(metadata);
            if (cpuCount is < 1 or > 64)
            {
                throw new UsageException($"--cpus must be between 1 and 64, got {cpuCount}");
            }

            IReadOnlyList<ReplayResult> results = [];
            try
            {
                Cli.WithProgress(stderr, [$"replay {Path.GetFileName(path)} under {string.Join(", ", names)}"], progress =>
                    results = MultiDesignReplay.Run(
                        path, groups.Select(g => (IReadOnlyList<(string, Func<IPageTableReclaim>)>)[.. g.Select(n => (n, Cli.DesignFactory(n)))]).ToList(),
                        (long)ramBytes, cpuCount, progress(0), pageCacheState: !p.GetValue(coldFiles)));
            }
            catch (TraceFormatException e)
            {
                throw new UsageException(e.Message);
            }

            var r = ReplayReport.From(path, metadata, results, (long)ramBytes, cpuCount, coldFiles: p.GetValue(coldFiles));
            if (plotPath is not null)
            {
                Plot(plotPath, r);
            }

            return report.Write(p, stdout, r.ToJson, r.ToCsv, w => r.Write(w, plotPath));
        });
        return cmd;
    }

    private static int HostCpus(TraceMetadata m) =>
        m.Host.TryGetValue(HostFacts.Cpus, out var s) && int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? Math.Clamp(n, 1, 64) : 1;

    /// <summary>
    /// Designs run side by side when their machines fit in the host's memory together. A machine
    /// holds at most one page per replayed fault (bounded by --ram) and, per process, the tables the
    /// kernel held at its peak; a design that frees less than the kernel holds more, so the tables
    /// are counted four times over. The footer's bounds (faults at most the rows that are not
    /// samples, each process's peak) decide without reading the rows when everything fits by them:
    /// the exact figures, no larger, would decide the same. Otherwise the rows are counted. The
    /// page cache the trace records (its residency runs and the folios its changes add, unless
    /// <paramref name="pageCache"/> is false: --cold-files) is held too, a page each; one residency
    /// row can stand for a whole file, so a trace that may have such rows is always counted.
    /// </summary>
    private static List<List<string>> Groups(IReadOnlyList<string> names, TraceReader reader, long ram, bool force, bool pageCache = true)
    {
        if (force)
        {
            return [[.. names]];
        }

        long available = HostMemory.Available();
        var m = reader.Metadata;
        bool mayCache = pageCache && (m.PageCache != TraceMetadata.PageCacheNone || m.PageCacheChanges != TraceMetadata.PageCacheChangesNone);
        if (!mayCache && reader.FooterBounds() is { } bound && Together(bound.Faults, bound.PeakVmPteKb, 0, ram, available) >= names.Count &&
            HostMemory.Estimate(Footprint(bound.Faults, bound.PeakVmPteKb, 0), ram, 0, pageData: false).Bytes <= available)
        {
            return [[.. names]];
        }

        var summary = TraceSummary.Compute(reader);
        long faults = summary.Counts[(int)TraceEventKind.Fault] + summary.Counts[(int)TraceEventKind.KernelFault];
        long peak = summary.Processes.Sum(p => p.PeakVmPteKb);
        long cached = pageCache ? summary.CachedPages : 0;
        HostMemory.Check(Footprint(faults, peak, cached), ram, 0, pageData: false, available, force: false);
        int together = Together(faults, peak, cached, ram, available);
        return [.. names.Chunk(together).Select(c => c.ToList())];
    }

    /// <summary>What one machine of the replay holds: a page per fault and per cached page the trace records, and the tables of each process's peak four times over.</summary>
    internal static ScenarioFootprint Footprint(long faults, long peakVmPteKb, long cachedPages)
    {
        long tables = (4 * peakVmPteKb / 4) + 64;
        return new ScenarioFootprint(MappedBytes: (ulong)tables * (2UL << 20), ResidentBytes: ((ulong)faults + (ulong)cachedPages) * 4096);
    }

    private static int Together(long faults, long peakVmPteKb, long cachedPages, long ram, long available)
    {
        long one = HostMemory.Estimate(Footprint(faults, peakVmPteKb, cachedPages), ram, 0, pageData: false).Bytes;
        return (int)Math.Clamp((available - (128L << 20)) / Math.Max(1, one - (128L << 20)), 1, int.MaxValue);
    }

    private static void Plot(string path, ReplayReport r)
    {
        var main = r.PlotProcess();
        if (main is null)
        {
            throw new UsageException("--plot: the trace has no process to plot");
        }

        var lines = r.Designs.Select(d => d.Processes.FirstOrDefault(p => p.Pid == main.Value) is { } p
                ? new TimeSeries(d.Design, [.. p.Samples.Select(s => s.Seconds)], [.. p.Samples.Select(s => (double)s.Model.VmPteKb)])
                : null)
            .OfType<TimeSeries>().ToList();
        var kernelSamples = r.Designs.SelectMany(d => d.Processes).FirstOrDefault(p => p.Pid == main.Value)?.Samples ?? [];
        var points = new List<TimeSeries> { new("kernel (samples)", [.. kernelSamples.Select(s => s.Seconds)], [.. kernelSamples.Select(s => (double)s.Kernel.VmPteKb)]) };
        var proc = r.Designs[0].Processes.First(p => p.Pid == main.Value);
        TimeSeriesPlot.Save(path, $"VmPTE of pid {main.Value} ({Path.GetFileName(proc.Name)}) replayed from {Path.GetFileName(r.Trace)}", "VmPTE (kB)", lines, points, nested: true);
    }
}

/// <summary>The kernel's figures of a sample (kB), as the trace recorded them.</summary>
internal sealed record KernelFiguresReport(long VmSizeKb, long VmRssKb, long RssAnonKb, long RssFileKb, long RssShmemKb, long VmSwapKb, long VmPteKb)
{
    public static KernelFiguresReport From(StatusFigures f) => new(f.VmSizeKb, f.VmRssKb, f.RssAnonKb, f.RssFileKb, f.RssShmemKb, f.VmSwapKb, f.VmPteKb);
}

/// <summary>
/// One sample: the kernel's figures and the model's at the same point of the trace. Where syscalls
/// of the process were under way when the sample was read, the model's VmPTE could be anything from
/// <c>modelLowVmPteKb</c> to <c>modelHighVmPteKb</c> (null otherwise): <c>model</c> is the figure
/// nearest the kernel's, and the difference is 0 inside that span.
/// </summary>
internal sealed record ReplaySampleReport(long TimeNs, double Seconds, string Kind, StatusReport Model, KernelFiguresReport Kernel, long VmPteDifferenceKb, long? ModelLowVmPteKb, long? ModelHighVmPteKb);

/// <summary>One process under one design.</summary>
internal sealed record ReplayProcessReport(
    int Pid, string Name, int Threads, bool Exited, StatusReport Exit, KernelFiguresReport? KernelExit, long PeakVmPteKb, long KernelPeakVmPteKb,
    double MeanSampleVmPteKb, double KernelMeanSampleVmPteKb,
    long Faults, CountersReport Counters, LatencyReport MadviseLatencyNs, IReadOnlyList<ReplaySampleReport> Samples, long EmptyTablesAtAttach);

/// <summary>One design's replay.</summary>
internal sealed record ReplayDesignReport(
    string Design, long Events, double WallSeconds, double EventsPerSecond, long GracePeriods,
    IReadOnlyDictionary<string, long> Divergences, IReadOnlyDictionary<string, long> Unsupported, IReadOnlyList<ReplayProcessReport> Processes);

/// <summary>The matching design against the kernel, per process: exit and every sample.</summary>
internal sealed record FidelityReport(
    int Pid, string Name, long KernelExitVmPteKb, long ModelExitVmPteKb, long ExitDifferenceKb, double ExitDifferencePercent, bool ExitWithinTolerance,
    int Samples, int SamplesWithinTolerance, double WorstSampleDifferencePercent, long WorstSampleDifferenceKb);

/// <summary>The JSON of <c>ptlab replay</c>: the keys of run/compare where they mean the same (parameters, designs, counters, madviseLatencyNs, statuses).</summary>
internal sealed record ReplayReport
{
    public required string Trace { get; init; }

    public required IReadOnlyDictionary<string, object> Parameters { get; init; }

    public required IReadOnlyDictionary<string, string> HostFacts { get; init; }

    /// <summary>The design that matches the recorded host, or null when the trace does not say.</summary>
    public string? MatchingDesign { get; init; }

    public required IReadOnlyList<string> Warnings { get; init; }

    /// <summary>How the mapped files were modelled and on what basis (the recorded file system, or the assumption made), with how many files each.</summary>
    public required IReadOnlyDictionary<string, long> FileModels { get; init; }

    public required IReadOnlyList<ReplayDesignReport> Designs { get; init; }

    /// <summary>The matching design against the kernel; empty when it was not replayed.</summary>
    public required IReadOnlyList<FidelityReport> Fidelity { get; init; }

    /// <summary>The allowances: exit within 2% (or 8 kB under 400 kB), every sample within 5% (or 8 kB under 400 kB).</summary>
    public required string Tolerance { get; init; }

    public static ReplayReport From(string path, TraceMetadata m, IReadOnlyList<ReplayResult> results, long ram, int cpus, bool coldFiles = false)
    {
        long origin = results.SelectMany(r => r.Processes).SelectMany(p => p.Samples).Select(s => s.TimeNs).DefaultIfEmpty(0).Min();
        string? matching = m.Host.TryGetValue(PtLab.Traces.HostFacts.MatchingDesign, out var md) && Reclaim.Designs.Names.Contains(md) ? md : null;
        var designs = results.Select(r => Design(r, origin)).ToList();
        var warnings = new List<string>();
        if (m.Truncated)
        {
            warnings.Add("the trace is truncated: the recording stopped before the command ended; the last figures are not the program's last");
        }

        if (m.Incomplete || m.LostEvents > 0)
        {
            warnings.Add($"the trace is incomplete: perf lost {m.LostEvents:N0} events; tables made by lost faults are missing, so the model's figures are lower bounds");
        }

        if (m.Source == "import")
        {
            warnings.Add("the trace was imported from perf script text: it has no status samples or layouts, so nothing is compared with the kernel");
        }

        if (matching is null)
        {
            warnings.Add("the trace does not name the design matching its host, so no design is compared with the kernel");
        }

        if (coldFiles)
        {
            warnings.Add("--cold-files: the recorded page-cache residency is ignored, and its changes; every mapped file starts cold");
        }
        else
        {
            foreach (var w in new[] { TraceCommands.PageCacheWarning(m), TraceCommands.PageCacheChangesWarning(m), TraceCommands.FolioOrdersWarning(m) })
            {
                if (w is not null)
                {
                    warnings.Add(w);
                }
            }
        }

        if (TraceCommands.ProcessMadviseWarning(m, results.Select(r => r.Unsupported.GetValueOrDefault(TraceReplayer.UnrecordedRanges)).DefaultIfEmpty(0).Max()) is { } ranges)
        {
            warnings.Add(ranges);
        }

        var fidelity = matching is null ? [] : designs.FirstOrDefault(d => d.Design == matching)?.Processes.Where(p => p.KernelExit is not null).Select(FidelityOf).ToList() ?? [];
        return new ReplayReport
        {
            Trace = path,
            Parameters = new ReportParameters()
                .Add("ramBytes", (ulong)ram)
                .Add("pageData", "off")
                .Add("cpus", (long)cpus)
                .Add("designs", string.Join(",", results.Select(r => r.Design)))
                .Values,
            HostFacts = m.Host,
            MatchingDesign = matching,
            Warnings = warnings,
            FileModels = results.Count > 0 ? results[0].FileModels : new Dictionary<string, long>(),
            Designs = designs,
            Fidelity = fidelity,
            Tolerance = $"exit within {ReplayFidelity.ExitPercent}%, every sample within {ReplayFidelity.SamplePercent}% (within {ReplayFidelity.SmallAllowanceKb} kB below {ReplayFidelity.SmallKb} kB)",
        };
    }

    private static ReplayDesignReport Design(ReplayResult r, long origin) => new(
        r.Design, r.Events, Math.Round(r.WallSeconds, 6), r.WallSeconds > 0 ? Math.Round(r.Events / r.WallSeconds) : 0, r.GracePeriods,
        r.Divergences, r.Unsupported,
        [.. r.Processes.Select(p =>
        {
            var samples = p.Samples.Select(s => new ReplaySampleReport(
                s.TimeNs, Math.Round((s.TimeNs - origin) / 1e9, 6), TraceKinds.Name(s.Kind), StatusReport.From(s.Compared),
                KernelFiguresReport.From(s.Kernel), s.VmPteDifferenceKb,
                s.Lower is null && s.Upper is null ? null : Math.Min(s.Model.VmPteKb, s.Lower?.VmPteKb ?? s.Model.VmPteKb),
                s.Lower is null && s.Upper is null ? null : Math.Max(s.Model.VmPteKb, s.Upper?.VmPteKb ?? s.Model.VmPteKb))).ToList();
            var last = p.Samples.LastOrDefault(s => s.Kind == TraceEventKind.StatusExit) ?? (p.Exited ? null : p.Samples.LastOrDefault());
            return new ReplayProcessReport(
                p.Pid, p.Name, p.Threads, p.Exited, StatusReport.From(p.Exit ?? default), last is null ? null : KernelFiguresReport.From(last.Kernel),
                p.PeakVmPteKb, p.Samples.Select(s => s.Kernel.VmPteKb).DefaultIfEmpty(0).Max(),
                Math.Round(samples.Select(s => (double)s.Model.VmPteKb).DefaultIfEmpty(0).Average(), 1),
                Math.Round(samples.Select(s => (double)s.Kernel.VmPteKb).DefaultIfEmpty(0).Average(), 1), p.Faults,
                CountersReport.From(p.Counters), LatencyReport.From(p.Madvise), samples, p.EmptyTablesAtAttach);
        })]);

    private static FidelityReport FidelityOf(ReplayProcessReport p)
    {
        long kernel = p.KernelExit!.VmPteKb;
        // The exit figure is the model's at the process's last exit sample (its mm still whole).
        var exitSample = p.Samples.LastOrDefault(s => s.Kind == "status_exit");
        long model = exitSample is null ? p.Exit.VmPteKb : kernel + exitSample.VmPteDifferenceKb;
        var worst = p.Samples.OrderByDescending(s => Math.Abs(s.VmPteDifferenceKb)).FirstOrDefault();
        return new FidelityReport(
            p.Pid, p.Name, kernel, model, model - kernel, Math.Round(ReplayFidelity.Percent(kernel, model), 3),
            ReplayFidelity.Within(kernel, model, ReplayFidelity.ExitPercent),
            p.Samples.Count, p.Samples.Count(s => ReplayFidelity.Within(s.Kernel.VmPteKb, s.Kernel.VmPteKb + s.VmPteDifferenceKb, ReplayFidelity.SamplePercent)),
            worst is null ? 0 : Math.Round(ReplayFidelity.Percent(worst.Kernel.VmPteKb, worst.Kernel.VmPteKb + worst.VmPteDifferenceKb), 3), worst?.VmPteDifferenceKb ?? 0);
    }

    /// <summary>The process to plot: the one whose kernel VmPTE peaked highest (the root on a tie).</summary>
    public int? PlotProcess() =>
        Designs.SelectMany(d => d.Processes).OrderByDescending(p => p.KernelPeakVmPteKb).ThenByDescending(p => p.Samples.Count).Select(p => (int?)p.Pid).FirstOrDefault();

    public string ToJson() => ReportJson.Serialize(this);

    /// <summary>One row per design, process and sample.</summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"design,pid,name,timeNs,seconds,kind,{CsvColumns.StatusHeader},kernelVmPteKb,kernelVmRssKb,vmPteDifferenceKb");
        foreach (var d in Designs)
        {
            foreach (var p in d.Processes)
            {
                foreach (var s in p.Samples)
                {
                    sb.AppendLine(CultureInfo.InvariantCulture,
                        $"{d.Design},{p.Pid},{Csv(p.Name)},{s.TimeNs},{CsvColumns.Number(s.Seconds)},{s.Kind},{CsvColumns.Status(s.Model)},{s.Kernel.VmPteKb},{s.Kernel.VmRssKb},{s.VmPteDifferenceKb}");
                }
            }
        }

        return sb.ToString();
    }

    private static string Csv(string s) => s.Contains(',', StringComparison.Ordinal) || s.Contains('"', StringComparison.Ordinal) ? "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : s;

    public void Write(TextWriter w, string? plot)
    {
        foreach (var warning in Warnings)
        {
            w.WriteLine($"warning: {warning}");
        }

        w.WriteLine($"trace {Trace}: {ReportParameters.Describe(Parameters)}; host {string.Join(", ", HostFacts.Where(k => k.Key is "kernel_release" or "config_pt_reclaim" or "thp_enabled").Select(k => $"{k.Key}={k.Value}"))}");
        foreach (var (basis, files) in FileModels)
        {
            w.WriteLine($"mapped files: {files} {(files == 1 ? "file" : "files")}: {basis}");
        }

        w.WriteLine();
        w.WriteLine($"{"design",-15} {"pid",8} {"process",-16} {"exit VmPTE",12} {"kernel",10} {"peak VmPTE",12} {"mean",10} {"PTE/PMD/PUD",14} {"VmRSS",11} {"faults",10} {"GPs",6} {"madvise p50/p99",18}");
        foreach (var d in Designs)
        {
            foreach (var p in d.Processes)
            {
                var x = p.Exit;
                string kernel = p.KernelExit is null ? "-" : Human.Kb(p.KernelExit.VmPteKb);
                string lat = p.MadviseLatencyNs.Count == 0 ? "-" : $"{Human.Micros(p.MadviseLatencyNs.P50)}/{Human.Micros(p.MadviseLatencyNs.P99)}";
                w.WriteLine($"{d.Design,-15} {p.Pid,8} {Short(p.Name),-16} {Human.Kb(ExitVmPte(p)),12} {kernel,10} {Human.Kb(p.PeakVmPteKb),12} {Human.Kb((long)Math.Round(p.MeanSampleVmPteKb)),10} {$"{x.PteTables}/{x.PmdTables}/{x.PudTables}",14} {Human.Kb(x.VmRssKb),11} {Human.Count(p.Faults),10} {Human.Count(p.Counters.GracePeriods),6} {lat,18}");
            }
        }

        if (Fidelity.Count > 0)
        {
            w.WriteLine();
            w.WriteLine($"{MatchingDesign} (the recorded host's design) against the kernel; {Tolerance}:");
            foreach (var f in Fidelity)
            {
                w.WriteLine($"  pid {f.Pid,-8} {Short(f.Name),-16} exit {Human.Kb(f.ModelExitVmPteKb)} vs {Human.Kb(f.KernelExitVmPteKb)} ({Human.SignedKb(f.ExitDifferenceKb)}, {f.ExitDifferencePercent:+0.00;-0.00;0.00}%) {(f.ExitWithinTolerance ? "ok" : "OUT")}; " +
                            $"samples {f.SamplesWithinTolerance}/{f.Samples} within, worst {f.WorstSampleDifferencePercent:+0.0;-0.0;0.0}% ({Human.SignedKb(f.WorstSampleDifferenceKb)})");
            }
        }

        foreach (var d in Designs)
        {
            if (d.Divergences.Count + d.Unsupported.Count == 0)
            {
                continue;
            }

            w.WriteLine();
            w.WriteLine($"{d.Design}: {Human.Count(d.Events)} events in {Human.Seconds(d.WallSeconds)} ({Human.Count((long)d.EventsPerSecond)} events/s)");
            foreach (var (k, n) in d.Divergences)
            {
                w.WriteLine($"  divergence   {Human.Count(n),8}  {k}");
            }

            foreach (var (k, n) in d.Unsupported)
            {
                w.WriteLine($"  unsupported  {Human.Count(n),8}  {k}");
            }
        }

        if (plot is not null)
        {
            w.WriteLine();
            w.WriteLine($"plot: {plot}");
        }

        foreach (var warning in Warnings)
        {
            w.WriteLine($"warning: {warning}");
        }
    }

    private static long ExitVmPte(ReplayProcessReport p) =>
        p.Samples.LastOrDefault(s => s.Kind == "status_exit") is { } s ? s.Kernel.VmPteKb + s.VmPteDifferenceKb : p.Exit.VmPteKb;

    private static string Short(string name)
    {
        string n = Path.GetFileName(name);
        return n.Length <= 16 ? n : n[..15] + "…";
    }
}
