using System.CommandLine;
using System.Globalization;
using System.Text;
using PtLab.Kernel;
using PtLab.Mm;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

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
    /// <summary>
    /// The figures compared: the kernel side measures VmPTE exactly and its tables per level are
    /// derived from it; its RSS counters are those of the scenario's slot alone (smaps of its VMAs).
    /// </summary>
    public IReadOnlyList<string> Compared { get; } = ["vmPteKb", "pteTables", "pmdTables", "pudTables", "vmRssKb", "rssAnonKb", "rssFileKb", "rssShmemKb"];

    /// <summary>The kernel's table counts that are inferred rather than read (see <see cref="Method"/>).</summary>
    public IReadOnlyList<string> KernelInferred { get; } = ["pteTables", "pmdTables", "pudTables"];

    /// <summary>Why VmSize is shown but not compared.</summary>
    public string Informational { get; } = Compare.InformationalNote;

    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary><c>ptlab compare --kernel</c>: the model against the host kernel.</summary>
internal static partial class Compare
{
    internal const string InformationalNote =
        "VmSize is shown, not compared: on the kernel side it is this process's, and includes the runtime's own " +
        "mappings (heap growth, JIT code), which a run cannot keep still. The kernel's RSS counters are the scenario's " +
        "slot's alone (smaps of its VMAs), so they are compared.";

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
        common.RefuseMeaningless(p, def, scenario, [design]);
        common.GuardHostMemory(p, def, scenario, onKernel: kernelRuns);
        // The model runs in the host's transparent huge page mode, as the kernel side does.
        var machine = common.Machine(p, args.Cpus, design, out var reported) with { Thp = info.Thp ?? PtLab.Mm.ThpSettings.Default, ZeroPage = info.ModelZeroPage };
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
                // RSS is the slot's own (smaps of its VMAs); the runtime's heap moves the
                // process's counters. VmPTE cannot be split by range and stays the process's.
                using var k = new UpperTableInference(new KernelTarget { RssScope = (slot, slot + PgdSlot) });
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
        void Info(string name, Func<StatusReport, long> f) => t.AddRow(name, K(f), Signed(f(r.Model)), "not compared");
        Row("VmPTE kB", s => s.VmPteKb);
        Row("PTE tables (kernel: VmPTE/4 kB less PMD, PUD)", s => s.Tables.Pte);
        Row("PMD tables (kernel: inferred)", s => s.Tables.Pmd);
        Row("PUD tables (kernel: inferred)", s => s.Tables.Pud);
        foreach (var c in r.Checkpoints)
        {
            t.AddRow(
                $"@ {c.Label}: VmPTE kB",
                c.Kernel is null ? "-" : Signed(c.Kernel.VmPteKb),
                Signed(c.Model.VmPteKb),
                c.Kernel is null ? "-" : Signed(c.Model.VmPteKb - c.Kernel.VmPteKb));
        }

        Row("VmRSS kB (kernel: the slot's VMAs)", s => s.VmRssKb);
        Row("RssAnon kB (kernel: the slot's VMAs)", s => s.RssAnonKb);
        Row("RssFile kB (kernel: the slot's VMAs)", s => s.RssFileKb);
        Row("RssShmem kB (kernel: the slot's VMAs)", s => s.RssShmemKb);
        Info("VmSize kB (kernel: with the runtime's mappings)", s => s.VmSizeKb);
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
        writer.WriteLine(r.Informational);
        console.WriteLine("method: " + r.Method);
    }
}
