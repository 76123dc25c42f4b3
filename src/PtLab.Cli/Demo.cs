using System.CommandLine;
using PtLab.Mm;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>
/// <c>ptlab demo</c>, also what <c>ptlab</c> alone runs: the seed cover letter's experiment on every
/// design, the before/after figures per design, one sentence on what the designs freed, and a plot.
/// </summary>
internal static class Demo
{
    public const string DefaultPlot = "ptlab-demo.png";

    private const ulong Chunk = 2UL << 20;

    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(
            "demo",
            "The seed's experiment on every design (what 'ptlab' alone runs): mmap --size of anonymous memory, then for each 2 MiB " +
            "write every page and MADV_DONTNEED it, with page data off; prints VmPTE and the tables per level before and after for " +
            "each design, one line on what the designs freed, and a bar chart of VmPTE per design.");
        var size = new Option<string>("--size") { Description = "Bytes to map: a multiple of 2M (the cover letter's 50G by default).", DefaultValueFactory = _ => "50G" };
        var plot = new Option<string>("--plot")
        {
            Description = "Where to write the bar chart (PNG).",
            DefaultValueFactory = _ => DefaultPlot,
            HelpName = "FILE.png",
        };
        var noPlot = new Option<bool>("--no-plot") { Description = "Draw no chart." };
        cmd.Options.Add(size);
        cmd.Options.Add(plot);
        cmd.Options.Add(noPlot);
        var output = ReportOptions.AddTo(cmd, "table", "json");
        cmd.SetAction(p =>
        {
            ulong s = Cli.Size(p.GetValue(size), "--size");
            if (s == 0 || s % Chunk != 0)
            {
                throw new UsageException($"--size must be a positive multiple of 2M, got '{p.GetValue(size)}'");
            }

            ScenarioCatalog.CheckMappingSize(s, "--size", p.GetValue(size));
            string? plotFile = p.GetValue(noPlot) ? null : p.GetValue(plot);
            if (plotFile is not null && ReportOptions.WhyNotWritable(plotFile) is { } why)
            {
                throw new UsageException(why.Replace("--output", "--plot", StringComparison.Ordinal));
            }

            var report = Run(new CoverLetterScenario(s, Chunk, Advice.DontNeed), plotFile, stderr);
            return output.Write(p, stdout, report.ToJson, null, w => WriteTable(report, w));
        });
        return cmd;
    }

    private static CompareReport Run(CoverLetterScenario scenario, string? plotFile, TextWriter stderr)
    {
        // The figures do not depend on timing, so the designs run side by side, one per host CPU.
        var names = Reclaim.Designs.Names.ToList();
        var machine = new MachineOptions { RamBytes = 24L << 30, PageData = false, Cpus = 1, Design = Cli.DesignFactory(names[0]) };
        var runs = new DesignRunReport[names.Count];
        Cli.WithProgress(stderr, names.Select(n => $"{scenario.Name} on model:{n}").ToList(), report =>
            Parallel.For(
                0,
                names.Count,
                new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
                i => runs[i] = Compare.RunOnce(scenario, machine with { Design = Cli.DesignFactory(names[i]) }, null, report(i))));
        var parameters = new ReportParameters()
            .Add("ramBytes", (ulong)machine.RamBytes).Add("pageData", "off").Add("cpus", 1L).AddScenario(scenario.Parameters);
        var report = new CompareReport(scenario.Name, parameters.Values, [.. runs])
        {
            Trials = 1,
            WarmUp = "none",
            Orders = [[.. runs.Select(r => r.Design)]],
            Summary = Summary([.. runs]),
        };
        if (plotFile is not null)
        {
            Plot(plotFile, $"VmPTE per design: mmap {Human.Bytes(scenario.Size)}, then touch + DONTNEED each 2 MiB", runs);
            report = report with { Plot = plotFile };
        }

        return report;
    }

    private static void WriteTable(CompareReport r, TextWriter writer)
    {
        var console = PlainConsole.Create(writer, 120);
        ulong size = r.Parameters.TryGetValue("sizeBytes", out var v) && v is ulong b ? b : 0;
        writer.WriteLine("The seed's experiment (RFC \"Try to free user PTE page table pages\", Apr 2022):");
        writer.WriteLine($"mmap {Human.Bytes(size)} of anonymous memory, then {Human.Count((long)(size / Chunk))} times write every page of 2 MiB and");
        writer.WriteLine("MADV_DONTNEED it; a fresh simulated machine per design, page data off.");
        writer.WriteLine("before: right after the mmap; after: after the loop.");
        var t = new Table().Border(TableBorder.Simple);
        t.AddColumn("design");
        foreach (var h in new[] { "VmPTE before", "VmPTE after", "PTE tables", "PMD tables", "PUD tables", "tables freed", "VmRSS after" })
        {
            t.AddColumn(new TableColumn(h).RightAligned());
        }

        static string Arrow(long before, long after) => $"{Human.Count(before)} → {Human.Count(after)}";
        foreach (var d in r.Designs)
        {
            t.AddRow(
                d.Design, Human.Kb(d.Before.VmPteKb), Human.Kb(d.After.VmPteKb), Arrow(d.Before.PteTables, d.After.PteTables),
                Arrow(d.Before.PmdTables, d.After.PmdTables), Arrow(d.Before.PudTables, d.After.PudTables),
                Human.Count(d.Counters.TablesFreed), Human.Kb(d.After.VmRssKb));
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

        writer.WriteLine();
        writer.WriteLine("next: ptlab compare cover-letter       the same with timings: medians over repeated trials");
        writer.WriteLine($"      ptlab run SCENARIO [--design D]  one design; scenarios: {string.Join(", ", ScenarioCatalog.Names)}");
        writer.WriteLine("      ptlab --help                     every command");
    }

    /// <summary>
    /// What the designs did to the PTE tables that <c>none</c> keeps, in one sentence: "pte-ref,
    /// atomic and pt-reclaim free all 25,600 PTE tables: VmPTE 102,608 → 208 kB, −99.8%". Empty
    /// when <c>none</c> did not run.
    /// </summary>
    public static string Summary(IReadOnlyList<DesignRunReport> runs)
    {
        var none = runs.FirstOrDefault(d => d.Design == Reclaim.Designs.Baseline);
        if (none is null)
        {
            return "";
        }

        long kept = none.After.PteTables - none.Before.PteTables;
        if (kept <= 0)
        {
            return $"{none.Design} keeps no PTE table here ({Human.Plural(none.After.PteTables, "PTE table")} before and after), so there is nothing for a design to free";
        }

        string tables = Human.Plural(kept, "PTE table");
        var parts = new List<string>();
        foreach (var g in runs.Where(d => d.Design != Reclaim.Designs.Baseline).GroupBy(d => (d.After.PteTables, d.After.VmPteKb))
                     .OrderBy(g => g.Key.PteTables))
        {
            long freed = none.After.PteTables - g.Key.PteTables;
            string who = Human.List([.. g.Select(d => d.Design)]);
            bool one = g.Count() == 1;
            string what = freed >= kept ? $"{(one ? "frees" : "free")} all {tables}"
                : freed > 0 ? $"{(one ? "frees" : "free")} {Human.Count(freed)} of the {tables}"
                : $"{(one ? "frees" : "free")} none of the {tables}";
            double change = none.After.VmPteKb == 0 ? 0 : (double)(g.Key.VmPteKb - none.After.VmPteKb) / none.After.VmPteKb;
            parts.Add($"{who} {what}: VmPTE {Human.Count(none.After.VmPteKb)} → {Human.Kb(g.Key.VmPteKb)}, {Human.Percent(change)}");
        }

        return parts.Count == 0 ? $"{none.Design} keeps {tables}: VmPTE {Human.Kb(none.After.VmPteKb)}" : string.Join("; ", parts);
    }

    /// <summary>VmPTE before and after per design, as a grouped bar chart.</summary>
    public static void Plot(string file, string title, IReadOnlyList<DesignRunReport> runs) =>
        BarPlot.Save(
            file,
            title,
            "VmPTE (kB)",
            [.. runs.Select(r => r.Design)],
            [
                new BarSeries("before (right after the mmap)", [.. runs.Select(r => (double)r.Before.VmPteKb)]),
                new BarSeries("after", [.. runs.Select(r => (double)r.After.VmPteKb)]),
            ],
            v => Human.Kb((long)v));
}
