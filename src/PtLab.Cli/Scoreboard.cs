using System.CommandLine;
using System.Globalization;
using System.Text;
using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>One scenario of the scoreboard: every design's figures, and which design did best.</summary>
/// <param name="Label">The scenario as the scoreboard ran it (name and the option that sets it apart).</param>
/// <param name="Compare">The scenario's figures, with the keys of <c>ptlab compare</c>.</param>
/// <param name="Best">The best design: fewest PTE tables left, then least wall time.</param>
/// <param name="Verdict">One sentence on why.</param>
internal sealed record ScoreboardScenario(string Label, CompareReport Compare, string Best, string Verdict);

/// <summary>The JSON of <c>ptlab compare --scenarios</c>.</summary>
internal sealed record ScoreboardReport(IReadOnlyList<string> Designs, int Trials, IReadOnlyList<ScoreboardScenario> Scenarios)
{
    /// <summary>Designs that left no more PTE tables than any other design on every scenario.</summary>
    public IReadOnlyList<string> FewestTablesEverywhere { get; init; } = [];

    /// <summary>The folder the per-scenario plots went to, or null.</summary>
    public string? PlotDirectory { get; init; }

    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary>
/// <c>ptlab compare --scenarios all</c>: every scenario under every design, each run on a fresh
/// machine with page data off and the sizes below (small enough for the whole board to run in
/// minutes), in one table with the best design per scenario marked.
/// </summary>
internal static class Scoreboard
{
    /// <summary>The scoreboard's scenarios, by label, with the sizes it runs them at.</summary>
    private static readonly (string Label, Func<IScenario> Create, long RamBytes, int Cpus)[] s_board =
    [
        ("cover-letter", () => new CoverLetterScenario(2UL << 30, 2UL << 20, Advice.DontNeed), 24L << 30, 1),
        ("halves --calls 2", () => new HalvesScenario(2, 512UL << 20), 24L << 30, 1),
        ("halves --calls 512", () => new HalvesScenario(512, 128UL << 20), 24L << 30, 1),
        ("zeropage", () => new ZeroPageScenario(128UL << 20), 24L << 30, 1),
        ("munmap-holes", () => new MunmapHolesScenario(2UL << 30), 24L << 30, 1),
        ("mixed", () => new MixedScenario(2, 5000, 1, 16UL << 20), 24L << 30, 2),
        ("per-page-dontneed", () => new PerPageDontNeedScenario(128UL << 20), 24L << 30, 1),
        ("madvfree-pressure", () => new MadvFreePressureScenario(128UL << 20), 32L << 20, 1),
        ("zeropage-fill", () => new ZeroPageFillScenario(128UL << 20), 24L << 30, 1),
        ("reuse", () => new ReuseScenario(64UL << 20, 4), 24L << 30, 1),
        ("sparse-release", () => new SparseReleaseScenario(4UL << 30), 24L << 30, 1),
    ];

    /// <summary>Adds --scenarios (and the options that go with it) to the compare command.</summary>
    public static void AddTo(Command compare, TextWriter stdout, TextWriter stderr)
    {
        var scenarios = new Option<string>("--scenarios")
        {
            Description = "Run the scoreboard: all, or a comma-separated list of: " + string.Join(", ", s_board.Select(b => b.Label.Split(' ')[0]).Distinct()) +
                          ". Every scenario under every design (--designs), at the scoreboard's sizes, page data off, in one table.",
        };
        var designs = new Option<string>("--designs")
        {
            Description = "Comma-separated designs, or all (the default): " + string.Join(",", Reclaim.Designs.Names) + ".",
        };
        var trials = new Option<int>("--trials") { Description = "Measured runs per design and scenario (times are medians).", DefaultValueFactory = _ => 1 };
        var plot = new Option<string>("--plot") { Description = "Write one bar chart per scenario (VmPTE per design) into this folder.", HelpName = "DIR" };
        var freePmd = new Option<bool>("--free-pmd") { Description = "The designs that can (occupancy, pt-reclaim) also free each PMD table a MADV_DONTNEED leaves empty." };
        var isolation = IsolatedRuns.IsolationOption("each design and scenario");
        var child = new IsolatedRunOptions();
        compare.Options.Add(scenarios);
        compare.Options.Add(designs);
        compare.Options.Add(trials);
        compare.Options.Add(plot);
        compare.Options.Add(freePmd);
        compare.Options.Add(isolation);
        child.AddTo(compare, scenario: true);
        var report = ReportOptions.AddTo(compare);
        compare.SetAction(p =>
        {
            var options = new Reclaim.DesignOptions { FreePmd = p.GetValue(freePmd) };
            if (child.DesignToRun(p) is { } one)
            {
                return RunIsolated(p, child, one, options);
            }

            if (p.GetValue(scenarios) is not { } which)
            {
                throw new UsageException(
                    $"compare: give a scenario ({string.Join(", ", ScenarioCatalog.Names)}), or --scenarios all for the scoreboard");
            }

            var names = p.GetValue(designs) is null or "all" ? [.. Reclaim.Designs.Names] : Compare.ParseDesigns(p.GetValue(designs));
            int n = p.GetValue(trials);
            if (n is < 1 or > 100)
            {
                throw new UsageException($"--trials must be between 1 and 100, got {n}");
            }

            var board = Select(which);
            string? dir = p.GetValue(plot);
            if (dir is not null)
            {
                Directory.CreateDirectory(dir);
            }

            var arguments = p.GetValue(isolation) == "process" ? IsolatedRuns.Arguments(p) : null;
            var r = Run(board, names, n, dir, stderr, options, arguments);
            return report.Write(p, stdout, r.ToJson, () => Csv(r), w => WriteTable(r, w));
        });
    }

    private static List<(string Label, Func<IScenario> Create, long RamBytes, int Cpus)> Select(string which)
    {
        if (which == "all")
        {
            return [.. s_board];
        }

        var picked = new List<(string, Func<IScenario>, long, int)>();
        foreach (var name in which.Split(',', StringSplitOptions.TrimEntries))
        {
            var rows = s_board.Where(b => b.Label.Split(' ')[0] == name).ToList();
            if (rows.Count == 0)
            {
                throw new UsageException($"--scenarios: unknown scenario '{name}' (known: all, {string.Join(", ", s_board.Select(b => b.Label.Split(' ')[0]).Distinct())})");
            }

            picked.AddRange(rows);
        }

        return picked;
    }

    /// <summary>A fresh machine for one run of a scoreboard scenario.</summary>
    private static MachineOptions Machine(long ram, int cpus, string design, Reclaim.DesignOptions options) => new()
    {
        RamBytes = ram,
        PageData = false,
        Cpus = cpus,
        Scheduler = cpus > 1 ? new PtLab.Sync.PanicOnFailure() : null,
        Design = Cli.DesignFactory(design, options),
    };

    /// <summary>The catalogue's small copy of a scenario, which warms the JIT and the heap for a design first.</summary>
    private static IScenario WarmUp(IScenario scenario) =>
        ScenarioCatalog.All().First(d => d.Name == scenario.Name || d.Aliases.Contains(scenario.Name)).WarmUp(scenario);

    /// <summary>The child of one isolated run: one design on one of the board's scenarios, named by its label.</summary>
    private static int RunIsolated(ParseResult p, IsolatedRunOptions child, string design, Reclaim.DesignOptions options)
    {
        string label = p.GetValue(child.Scenario) ?? throw new UsageException($"{IsolatedRuns.DesignOption}: needs {IsolatedRuns.ScenarioOption} LABEL");
        var (_, create, ram, cpus) = s_board.FirstOrDefault(b => b.Label == label);
        if (create is null)
        {
            throw new UsageException($"{IsolatedRuns.ScenarioOption}: no scoreboard scenario is labelled '{label}'");
        }

        var scenario = create();
        return child.Child(
            p,
            () => Compare.RunOnce(WarmUp(scenario), Machine(ram, cpus, design, options), null),
            () => Compare.Measured(() => Compare.RunOnce(scenario, Machine(ram, cpus, design, options), null)));
    }

    /// <summary>
    /// Runs the board: each scenario under every design, each measured run in a process of its own
    /// when <paramref name="arguments"/> (this command's) are given, else in this process.
    /// </summary>
    private static ScoreboardReport Run(
        IReadOnlyList<(string Label, Func<IScenario> Create, long RamBytes, int Cpus)> board, IReadOnlyList<string> names, int trials, string? dir, TextWriter stderr,
        Reclaim.DesignOptions options, IReadOnlyList<string>? arguments)
    {
        var scenarios = new List<ScoreboardScenario>();
        foreach (var (label, create, ram, cpus) in board)
        {
            var scenario = create();
            stderr.WriteLine($"scoreboard: {label} on {string.Join(", ", names)}" + (arguments is null ? "" : ", each run in a process of its own"));
            var warmUp = WarmUp(scenario);
            var (results, orders) = arguments is null
                ? FairTrials.Run(
                    names, trials, n => Compare.RunOnce(warmUp, Machine(ram, cpus, n, options), null), (n, _) => Compare.RunOnce(scenario, Machine(ram, cpus, n, options), null))
                : FairTrials.Run(names, trials, null, (n, _) => IsolatedRuns.Run(arguments, n, label));
            var runs = names.Select(n => Compare.Combine(n, results[n])).ToList();
            var parameters = new ReportParameters().Add("ramBytes", ram).Add("pageData", "off").Add("cpus", (long)cpus).AddScenario(scenario.Parameters);
            if (options.FreePmd)
            {
                parameters.Add("freePmd", "on");
            }

            var compare = new CompareReport(scenario.Name, parameters.Values, runs)
            {
                Trials = trials,
                Isolation = arguments is null ? "shared" : "process",
                Orders = orders,
                Summary = Demo.Summary(runs),
            };
            if (dir is not null)
            {
                string file = Path.Combine(dir, label.Replace(" --", "-", StringComparison.Ordinal).Replace(' ', '-') + ".png");
                Demo.Plot(file, $"{label}: VmPTE per design", runs);
                compare = compare with { Plot = file };
            }

            var best = runs.OrderBy(r => r.After.Tables.Pte).ThenBy(r => r.WallSeconds).First();
            int tied = runs.Count(r => r.After.Tables.Pte == best.After.Tables.Pte);
            string verdict = tied == runs.Count
                ? $"every design leaves {Human.Count(best.After.Tables.Pte)} PTE tables; fastest: {best.Design} ({Human.Seconds(best.WallSeconds)})"
                : tied > 1
                    ? $"{Human.Plural(tied, "design")} leave the fewest PTE tables ({Human.Count(best.After.Tables.Pte)}); fastest of them: {best.Design} ({Human.Seconds(best.WallSeconds)})"
                    : $"only {best.Design} leaves as few as {Human.Count(best.After.Tables.Pte)} PTE tables";
            scenarios.Add(new ScoreboardScenario(label, compare, best.Design, verdict));
        }

        var fewest = names.Where(n => scenarios.All(s =>
            s.Compare.Designs.First(d => d.Design == n).After.Tables.Pte == s.Compare.Designs.Min(d => d.After.Tables.Pte))).ToList();
        return new ScoreboardReport(names, trials, scenarios) { FewestTablesEverywhere = fewest, PlotDirectory = dir };
    }

    private static double FaultsPerSecond(DesignRunReport d) => d.WallSeconds > 0 ? d.Counters.Faults / d.WallSeconds : 0;

    private static string Csv(ScoreboardReport r)
    {
        var sb = new StringBuilder();
        sb.AppendLine("scenario,design,best,pteTables,pmdTables,vmPteKb,faultsPerSecond,madviseP50Ns,madviseP99Ns,gracePeriods,tlbFlushes,wallSeconds");
        foreach (var s in r.Scenarios)
        {
            foreach (var d in s.Compare.Designs)
            {
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"{s.Label},{d.Design},{(d.Design == s.Best ? 1 : 0)},{d.After.Tables.Pte},{d.After.Tables.Pmd},{d.After.VmPteKb},{FaultsPerSecond(d):0},{d.MadviseLatencyNs.P50},{d.MadviseLatencyNs.P99},{d.Counters.GracePeriods},{d.Counters.TlbFlushes},{d.WallSeconds:0.######}");
            }
        }

        return sb.ToString();
    }

    private static void WriteTable(ScoreboardReport r, TextWriter writer)
    {
        var console = PlainConsole.Create(writer, 200);
        console.WriteLine($"scoreboard: {Human.Plural(r.Scenarios.Count, "scenario")} x {Human.Plural(r.Designs.Count, "design")}, a fresh machine per run" + (r.Scenarios.All(s => s.Compare.Isolation == "process") ? " in a process of its own" : "") + ", page data off, " +
                          (r.Trials > 1 ? $"{r.Trials} trials (times are medians)" : "one trial each") + "; * marks the best design per scenario (fewest PTE tables left, then least wall time)");
        var t = new Table().Border(TableBorder.Simple);
        foreach (var h in new[] { "scenario", "design", "PTE tables left", "PMD tables left", "VmPTE kB", "faults/s", "madvise p50", "madvise p99", "grace periods", "TLB flushes", "wall" })
        {
            t.AddColumn(h == "scenario" || h == "design" ? new TableColumn(h) : new TableColumn(h).RightAligned());
        }

        foreach (var s in r.Scenarios)
        {
            bool first = true;
            foreach (var d in s.Compare.Designs)
            {
                t.AddRow(
                    first ? s.Label : "",
                    (d.Design == s.Best ? "* " : "  ") + d.Design,
                    Human.Count(d.After.Tables.Pte),
                    Human.Count(d.After.Tables.Pmd),
                    Human.Count(d.After.VmPteKb),
                    Human.Count((long)FaultsPerSecond(d)),
                    d.MadviseLatencyNs.Count == 0 ? "-" : Human.Micros(d.MadviseLatencyNs.P50),
                    d.MadviseLatencyNs.Count == 0 ? "-" : Human.Micros(d.MadviseLatencyNs.P99),
                    Human.Count(d.Counters.GracePeriods),
                    Human.Count(d.Counters.TlbFlushes),
                    Human.Seconds(d.WallSeconds));
                first = false;
            }
        }

        console.Write(t);
        foreach (var s in r.Scenarios)
        {
            console.WriteLine($"{s.Label}: {s.Verdict}");
        }

        console.WriteLine(r.FewestTablesEverywhere.Count > 0
            ? $"fewest PTE tables on every scenario: {string.Join(", ", r.FewestTablesEverywhere)}"
            : "no design leaves the fewest PTE tables on every scenario");
        if (r.PlotDirectory is not null)
        {
            console.WriteLine($"plots: {r.PlotDirectory} (one per scenario, VmPTE per design)");
        }
    }
}
