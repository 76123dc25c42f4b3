using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using PtLab.Kernel;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>One design's run in <c>ptlab compare</c>.</summary>
internal sealed record DesignRunReport(
    string Design, StatusReport Before, StatusReport After, CountersReport Counters, LatencyReport MadviseLatencyNs,
    double WallSeconds, IReadOnlyList<CheckpointReport> Checkpoints);

/// <summary>The JSON of <c>ptlab compare</c> without <c>--kernel</c>.</summary>
internal sealed record CompareReport(string Scenario, IReadOnlyDictionary<string, object> Parameters, IReadOnlyList<DesignRunReport> Designs)
{
    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary>Kernel and model deltas at one checkpoint of <c>ptlab compare --kernel</c>.</summary>
internal sealed record KernelCheckpointReport(string Label, StatusReport? Kernel, StatusReport Model, TablesReport? TableDifference);

/// <summary>The JSON of <c>ptlab compare --kernel</c>: deltas (after minus before) on each side, and model minus kernel per table level.</summary>
internal sealed record KernelCompareReport(
    string Scenario,
    IReadOnlyDictionary<string, object> Parameters,
    string Host,
    string ModelDesign,
    string Method,
    StatusReport? Kernel,
    StatusReport Model,
    TablesReport? TableDifference,
    IReadOnlyList<KernelCheckpointReport> Checkpoints,
    TablesReport MethodCheckInferred,
    TablesReport MethodCheckCounted,
    int KernelAttempts,
    IReadOnlyList<string> KernelRunsRepeated,
    double KernelWallSeconds,
    double ModelWallSeconds)
{
    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary><c>ptlab compare</c>.</summary>
internal static class Compare
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
        var common = new Cli.ModelOptions();
        foreach (var o in def.Options)
        {
            cmd.Options.Add(o);
        }

        cmd.Options.Add(designs);
        cmd.Options.Add(kernel);
        common.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var args = common.Args(p, def);
            if (!p.GetValue(kernel))
            {
                var names = ParseDesigns(p.GetValue(designs));
                var scenario = def.Create(p, args);
                return RunDesigns(scenario, names, p, common, args, stdout, stderr);
            }

            if (p.GetValue(designs) is not null)
            {
                throw new UsageException("--designs: cannot be combined with --kernel, which runs the design that matches the host kernel");
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
        IScenario scenario, IReadOnlyList<string> names, ParseResult p, Cli.ModelOptions common, ScenarioArgs args,
        TextWriter stdout, TextWriter stderr)
    {
        var runs = new List<DesignRunReport>();
        var parameters = new ReportParameters();
        foreach (var name in names)
        {
            var machine = common.Machine(p, args.Cpus, name, out var reported);
            using var target = new ModelTarget(machine);
            var timer = new MadviseTimer(target);
            var r = Cli.RunWithProgress(scenario, timer, stderr);
            parameters.AddScenario(r.Parameters);
            foreach (var (k, v) in reported.Values)
            {
                parameters.Add(k, v);
            }

            runs.Add(new DesignRunReport(
                name, StatusReport.From(r.Before), StatusReport.From(r.After), CountersReport.From(target.Mm.Counters()),
                LatencyReport.From(timer.Recorder.Summary()), Math.Round(r.WallSeconds, 6), CheckpointReport.From(r)));
        }

        var report = new CompareReport(scenario.Name, parameters.Values, runs);
        return common.Report.Write(p, stdout, report.ToJson, () => Csv(report), w => WriteTable(report, w));
    }

    private static string Csv(CompareReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"scenario,design,phase,{CsvColumns.StatusHeader},{CsvColumns.CountersHeader},{CsvColumns.MadviseLatencyHeader},wallSeconds");
        foreach (var d in r.Designs)
        {
            var phases = new List<(string, StatusReport)> { ("before", d.Before) };
            phases.AddRange(d.Checkpoints.Select(c => (c.Label, c.Status)));
            phases.Add(("after", d.After));
            foreach (var (phase, s) in phases)
            {
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"{r.Scenario},{d.Design},{phase},{CsvColumns.Status(s)},{CsvColumns.Counters(d.Counters)},{CsvColumns.Latency(d.MadviseLatencyNs)},{CsvColumns.Number(d.WallSeconds)}");
            }
        }

        return sb.ToString();
    }

    private static IAnsiConsole Plain(TextWriter writer) => PlainConsole.Create(writer, 160);

    private static string N(long v) => Human.Count(v);

    private static string Signed(long v) => Human.Signed(v);

    private static string AfterDelta(long before, long after) => $"{N(after)} ({Signed(after - before)})";

    private static string Us(long ns) => (ns / 1000.0).ToString("0.0", CultureInfo.InvariantCulture) + " µs";

    private static void WriteTable(CompareReport r, TextWriter writer)
    {
        var console = Plain(writer);
        console.WriteLine($"{r.Scenario}, one fresh machine per design ({ReportParameters.Describe(r.Parameters)})");
        var t = new Table().Border(TableBorder.Simple);
        t.AddColumn("after (delta)");
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
        Row("madvise p50", d => Us(d.MadviseLatencyNs.P50));
        Row("madvise p99", d => Us(d.MadviseLatencyNs.P99));
        Row("madvise calls", d => N(d.MadviseLatencyNs.Count));
        Row("grace periods", d => N(d.Counters.GracePeriods));
        Row("TLB flushes", d => N(d.Counters.TlbFlushes));
        Row("wall", d => d.WallSeconds.ToString("0.000", CultureInfo.InvariantCulture) + " s");
        console.Write(t);
    }

    private static int WithKernel(ScenarioDef def, ParseResult p, Cli.ModelOptions common, ScenarioArgs args, TextWriter stdout, TextWriter stderr)
    {
        var info = KernelInfo.Probe();
        string design = info.MatchingDesign;
        bool kernelRuns = info.IsLinuxX64 && KernelTarget.IsSupported;
        if (!kernelRuns)
        {
            stderr.WriteLine($"ptlab: {info}; running the model alone (design '{design}')");
        }

        ulong slot = kernelRuns ? KernelTarget.FindFreeRegion(PgdSlot, PgdSlot) : ModelOnlySlot;
        if (slot == 0)
        {
            throw new ScenarioException("no empty 512 GiB slot in this process's address space to place the mapping in");
        }

        var scenario = def.Create(p, args with { At = slot });
        var machine = common.Machine(p, args.Cpus, design, out var reported);
        ScenarioResult model;
        TablesReport inferredCheck, countedCheck;
        using (var target = new ModelTarget(machine))
        {
            var inference = new UpperTableInference(target);
            model = Cli.RunWithProgress(scenario, inference, stderr);
            // The inference's view of the model's upper tables, against the model's counted ones.
            var counted = target.Mm.Status().Tables;
            var (pmd, pud) = inference.UpperTables;
            inferredCheck = new TablesReport(0, pmd, pud);
            countedCheck = new TablesReport(0, counted.Pmd, counted.Pud);
        }

        ScenarioResult? kernel = null;
        int attempts = 0;
        var repeated = new List<string>();
        if (kernelRuns)
        {
            // The runtime shares the address space and can add a table of its own mid-run (JIT,
            // GC growth), or, on a pt-reclaim kernel, lose one when a GC decommits with
            // MADV_DONTNEED (the kernel target's hot path does not allocate, to avoid that). It
            // never touches the scenario's slot. A run that differs is repeated, up to three runs.
            for (attempts = 1; attempts <= 3; attempts++)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                using var k = new UpperTableInference(new KernelTarget());
                kernel = Cli.RunWithProgress(def.Create(p, args with { At = slot }), k, stderr);
                if (Same(model, kernel))
                {
                    break;
                }

                repeated.Add($"run {attempts}: " + Mismatches(model, kernel));
            }

            attempts = Math.Min(attempts, 3);
        }

        var parameters = reported.AddScenario(model.Parameters);

        var modelDelta = Delta(model.After, model.Before);
        var kernelDelta = kernel is null ? null : Delta(kernel.After, kernel.Before);
        var checkpoints = new List<KernelCheckpointReport>();
        foreach (var (label, status) in model.Checkpoints)
        {
            var m = Delta(status, model.Before);
            StatusReport? kd = null;
            if (kernel is not null)
            {
                kd = Delta(kernel.Checkpoints.First(c => c.Label == label).Status, kernel.Before);
            }

            checkpoints.Add(new KernelCheckpointReport(label, kd, m, kd is null ? null : m.Tables - kd.Tables));
        }

        var report = new KernelCompareReport(
            model.Scenario, parameters.Values, info.ToString(), design, Method, kernelDelta, modelDelta,
            kernelDelta is null ? null : modelDelta.Tables - kernelDelta.Tables, checkpoints, inferredCheck, countedCheck,
            attempts, repeated, kernel is null ? 0 : Math.Round(kernel.WallSeconds, 6), Math.Round(model.WallSeconds, 6));
        return common.Report.Write(p, stdout, report.ToJson, () => KernelCsv(report), w => WriteKernelTable(report, w));
    }

    private static StatusReport Delta(MmStatus after, MmStatus before) => StatusReport.From(after) - StatusReport.From(before);

    private static bool Same(ScenarioResult model, ScenarioResult kernel) =>
        model.After.VmPteKb - model.Before.VmPteKb == kernel.After.VmPteKb - kernel.Before.VmPteKb &&
        model.Checkpoints.All(m => m.Status.VmPteKb - model.Before.VmPteKb ==
                                   kernel.Checkpoints.First(k => k.Label == m.Label).Status.VmPteKb - kernel.Before.VmPteKb);

    private static string Mismatches(ScenarioResult model, ScenarioResult kernel)
    {
        var parts = new List<string>();
        foreach (var (label, m) in model.Checkpoints.Append(("after", model.After)))
        {
            var k = label == "after" ? kernel.After : kernel.Checkpoints.First(c => c.Label == label).Status;
            long d = (m.VmPteKb - model.Before.VmPteKb) - (k.VmPteKb - kernel.Before.VmPteKb);
            if (d != 0)
            {
                parts.Add($"{label} VmPTE model - kernel {Signed(d)} kB");
            }
        }

        return string.Join(", ", parts);
    }

    private static string KernelCsv(KernelCompareReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"scenario,checkpoint,side,{CsvColumns.StatusHeader}");
        var rows = r.Checkpoints.Select(c => (c.Label, c.Kernel, c.Model, c.TableDifference)).ToList();
        rows.Add(("after", r.Kernel, r.Model, r.TableDifference));
        foreach (var (label, k, m, d) in rows)
        {
            foreach (var (side, s) in new[] { ("kernel", k), ($"model:{r.ModelDesign}", m) })
            {
                if (s is not null)
                {
                    sb.AppendLine(CultureInfo.InvariantCulture, $"{r.Scenario},{label},{side},{CsvColumns.Status(s)}");
                }
            }

            if (d is not null)
            {
                sb.AppendLine(CultureInfo.InvariantCulture, $"{r.Scenario},{label},difference,,,,,,,{(d.Pte + d.Pmd + d.Pud) * 4},{d.Pte},{d.Pmd},{d.Pud}");
            }
        }

        return sb.ToString();
    }

    private static void WriteKernelTable(KernelCompareReport r, TextWriter writer)
    {
        var console = Plain(writer);
        console.WriteLine($"{r.Scenario}: host kernel vs model design '{r.ModelDesign}' ({ReportParameters.Describe(r.Parameters)})");
        console.WriteLine($"host: {r.Host}");
        if (r.Kernel is null)
        {
            console.WriteLine("the kernel side did not run (not Linux x86-64): model figures only");
        }

        var t = new Table().Border(TableBorder.Simple);
        t.AddColumn("delta (after - before)");
        t.AddColumn(new TableColumn("kernel").RightAligned());
        t.AddColumn(new TableColumn($"model:{r.ModelDesign}").RightAligned());
        t.AddColumn(new TableColumn("model - kernel").RightAligned());
        string K(Func<StatusReport, long> f) => r.Kernel is null ? "-" : Signed(f(r.Kernel));
        string D(Func<StatusReport, long> f) => r.Kernel is null ? "-" : Signed(f(r.Model) - f(r.Kernel));
        void Row(string name, Func<StatusReport, long> f) => t.AddRow(name, K(f), Signed(f(r.Model)), D(f));
        Row("VmPTE kB", s => s.VmPteKb);
        Row("PTE tables", s => s.Tables.Pte);
        Row("PMD tables (kernel inferred)", s => s.Tables.Pmd);
        Row("PUD tables (kernel inferred)", s => s.Tables.Pud);
        Row("VmRSS kB", s => s.VmRssKb);
        Row("VmSize kB", s => s.VmSizeKb);
        foreach (var c in r.Checkpoints)
        {
            t.AddRow(
                $"@ {c.Label}: VmPTE kB",
                c.Kernel is null ? "-" : Signed(c.Kernel.VmPteKb),
                Signed(c.Model.VmPteKb),
                c.Kernel is null ? "-" : Signed(c.Model.VmPteKb - c.Kernel.VmPteKb));
        }

        console.Write(t);
        if (r.TableDifference is { } d)
        {
            console.WriteLine($"table difference (model - kernel): pte {Signed(d.Pte)}, pmd {Signed(d.Pmd)}, pud {Signed(d.Pud)}" +
                              $"; kernel runs: {r.KernelAttempts}; wall: kernel {r.KernelWallSeconds:0.000} s, model {r.ModelWallSeconds:0.000} s");
        }

        foreach (var line in r.KernelRunsRepeated)
        {
            console.WriteLine($"repeated kernel {line}");
        }

        console.WriteLine($"method check: the inference applied to the model gives PMD {r.MethodCheckInferred.Pmd}, PUD {r.MethodCheckInferred.Pud}; " +
                          $"the model counts PMD {r.MethodCheckCounted.Pmd}, PUD {r.MethodCheckCounted.Pud}");
        console.WriteLine("method: " + r.Method);
    }
}
