using System.CommandLine;
using System.Globalization;
using PtLab.Reclaim;
using PtLab.Systematic;

namespace PtLab.Cli;

/// <summary>
/// <c>check --exhaustive</c>: every schedule of a scenario within a preemption bound (CHESS's
/// iterative context bounding), for one scenario and design or, with <c>--all</c>, for every
/// scenario and every design it tests, as a table of counts.
/// </summary>
internal sealed class CheckExhaustive
{
    private CheckExhaustive()
    {
    }

    public required Option<bool> Exhaustive { get; init; }

    public required Option<int> Preemptions { get; init; }

    public required Option<bool> All { get; init; }

    public required Option<string> Choices { get; init; }

    public required Option<double> BudgetSeconds { get; init; }

    /// <summary>Adds the options to the check command.</summary>
    public static CheckExhaustive AddTo(Command cmd)
    {
        var o = new CheckExhaustive
        {
            Exhaustive = new Option<bool>("--exhaustive")
            {
                Description = "Run every schedule with at most --preemptions preemptions (a preemption switches away from a CPU that could continue), depth first, instead of sampling seeds.",
            },
            Preemptions = new Option<int>("--preemptions") { Description = "The preemption bound of --exhaustive (0-4).", DefaultValueFactory = _ => 2 },
            All = new Option<bool>("--all") { Description = "With --exhaustive: every scenario under every design it tests, bounds 0 to --preemptions, as one table." },
            Choices = new Option<string>("--choices")
            {
                Description = "With --exhaustive: replay the one schedule these choices (as an exploration printed them, comma-separated) describe, and print its interleaving.",
                HelpName = "LIST",
            },
            BudgetSeconds = new Option<double>("--budget-seconds")
            {
                Description = "With --exhaustive: wall-time limit of one exploration (per scenario, design and bound with --all); one cut short is reported incomplete.",
                DefaultValueFactory = _ => 600,
            },
        };
        foreach (var opt in new Option[] { o.Exhaustive, o.Preemptions, o.All, o.Choices, o.BudgetSeconds })
        {
            cmd.Options.Add(opt);
        }

        return o;
    }

    /// <summary>Refuses the exhaustive options without <c>--exhaustive</c>, and sampling options with it.</summary>
    public bool Validate(ParseResult p, Option[] samplingOnly)
    {
        bool on = p.GetValue(Exhaustive);
        if (!on)
        {
            foreach (var opt in new Option[] { Preemptions, All, Choices, BudgetSeconds })
            {
                if (Cli.Given(p, opt))
                {
                    throw new UsageException($"{opt.Name} belongs to an exhaustive exploration: add --exhaustive");
                }
            }

            return false;
        }

        foreach (var opt in samplingOnly)
        {
            if (Cli.Given(p, opt))
            {
                throw new UsageException($"{opt.Name} samples schedules by seed; --exhaustive runs every schedule within --preemptions: drop one of them");
            }
        }

        int bound = p.GetValue(Preemptions);
        if (bound is < 0 or > 4)
        {
            throw new UsageException($"--preemptions must be between 0 and 4, got {bound}");
        }

        double budget = p.GetValue(BudgetSeconds);
        if (!(budget > 0))
        {
            throw new UsageException($"--budget-seconds must be above 0, got {budget.ToString(CultureInfo.InvariantCulture)}");
        }

        if (p.GetValue(All) && Cli.Given(p, Choices))
        {
            throw new UsageException("--choices replays one schedule of one scenario; --all explores them all: drop one of them");
        }

        return true;
    }

    /// <summary>Parses <c>--choices</c>.</summary>
    public IReadOnlyList<int>? ChoicesOf(ParseResult p)
    {
        if (p.GetValue(Choices) is not { } text)
        {
            return null;
        }

        var list = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int c))
            {
                throw new UsageException($"--choices: '{part}' is not a choice (a number of 0 or more)");
            }

            list.Add(c);
        }

        return list;
    }

    /// <summary>One scenario and design: every schedule within the bound.</summary>
    public int RunOne(ParseResult p, TextWriter stdout, ReportOptions output, SystematicScenario s, string design, Mutation m, string? note, bool everyStep)
    {
        int bound = p.GetValue(Preemptions);
        var e = ExhaustiveExplorer.Explore(s, design, bound, m, budget: TimeSpan.FromSeconds(p.GetValue(BudgetSeconds)), everyStep: everyStep);
        output.Write(
            p,
            stdout,
            () => ReportJson.Serialize(new
            {
                scenario = s.Name,
                design,
                mutation = Mutations.NameOf(m),
                preemptions = bound,
                schedules = e.Schedules,
                violations = e.Violations,
                complete = e.Complete,
                firstFailingSchedule = e.FirstFailingSchedule,
                firstViolation = e.FirstViolation,
                firstFailingChoices = e.FirstFailingChoices is { } c ? string.Join(',', c) : null,
                seconds = Math.Round(e.Elapsed.TotalSeconds, 3),
                maxChoices = e.MaxChoices,
                note,
            }),
            null,
            w =>
            {
                if (note is not null)
                {
                    w.WriteLine(note);
                }

                w.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"{s.Name} on {design} (exhaustive, at most {Human.Plural(bound, "preemption")}, mutation {Mutations.NameOf(m)}): {Human.Plural(e.Schedules, "schedule")}{(e.Complete ? "" : " (incomplete: the budget ran out)")}, {Human.Plural(e.Violations, "violation")}, {e.Elapsed.TotalSeconds:F1} s, {Human.Plural(e.TotalSteps / Math.Max(1, e.Schedules), "step")} each"));
                if (e.FirstFailingChoices is { } choices)
                {
                    w.WriteLine($"first failing schedule {e.FirstFailingSchedule}: {e.FirstViolation}");
                    w.WriteLine($"replay: ptlab check {s.Name} --design {design} --mutation {Mutations.NameOf(m)} --exhaustive --preemptions {bound} --choices {string.Join(',', choices)}");
                }
            });
        return e.Violations == 0 ? Cli.ExitOk : Cli.ExitFailure;
    }

    /// <summary>Replays one schedule by its choices.</summary>
    public int Replay(ParseResult p, TextWriter stdout, ReportOptions output, SystematicScenario s, string design, Mutation m, IReadOnlyList<int> choices, int keep, bool everyStep)
    {
        int bound = p.GetValue(Preemptions);
        ScheduleResult r;
        try
        {
            r = ExhaustiveExplorer.Replay(s, design, bound, choices, m, everyStep);
        }
        catch (InvalidOperationException e) when (e.Message.StartsWith("replay diverged", StringComparison.Ordinal))
        {
            throw new UsageException($"--choices {string.Join(',', choices)} does not describe a schedule of {s.Name} on {design}: {e.Message}");
        }

        output.Write(
            p,
            stdout,
            () => ReportJson.Serialize(new
            {
                scenario = s.Name,
                design,
                mutation = Mutations.NameOf(m),
                preemptions = bound,
                choices = string.Join(',', choices),
                steps = r.Steps,
                violation = r.Violation,
                trace = r.Scheduler.TraceLines().TakeLast(keep).ToArray(),
            }),
            null,
            w =>
            {
                w.WriteLine($"{s.Name} on {design}, choices {string.Join(',', choices)}, mutation {Mutations.NameOf(m)}: {Human.Plural(r.Steps, "step")}, {(r.Ok ? "no violation" : "VIOLATION")}");
                w.Write(r.Scheduler.FormatTrace(keep));
                if (!r.Ok)
                {
                    w.WriteLine($"violation: {r.Violation}");
                }
            });
        return r.Ok ? Cli.ExitOk : Cli.ExitFailure;
    }

    /// <summary>Every scenario under every design it tests (or the one given), bounds 0 to the bound.</summary>
    public int RunAll(ParseResult p, TextWriter stdout, ReportOptions output, string? onlyDesign, Mutation m)
    {
        int bound = p.GetValue(Preemptions);
        var budget = TimeSpan.FromSeconds(p.GetValue(BudgetSeconds));
        var rows = new List<(string Scenario, string Design, List<ExhaustiveResult> Bounds)>();
        foreach (var s in SystematicScenarios.All)
        {
            foreach (string d in Designs.Names)
            {
                if ((onlyDesign is not null && d != onlyDesign) || !Tests(s, d) || !Designs.Supports(d, m))
                {
                    continue;
                }

                var results = new List<ExhaustiveResult>();
                for (int k = 0; k <= bound; k++)
                {
                    var e = ExhaustiveExplorer.Explore(s, d, k, m, budget: budget);
                    results.Add(e);
                    if (!e.Complete)
                    {
                        break;
                    }
                }

                rows.Add((s.Name, d, results));
                if (output.IsHuman(p))
                {
                    var last = results[^1];
                    Console.Error.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"{s.Name} on {d}: bound {last.Bound}, {last.Schedules} schedules, {last.Violations} violations, {results.Sum(r => r.Elapsed.TotalSeconds):F1} s"));
                }
            }
        }

        long violations = rows.Sum(r => r.Bounds.Sum(b => b.Violations));
        output.Write(
            p,
            stdout,
            () => ReportJson.Serialize(new
            {
                preemptions = bound,
                mutation = Mutations.NameOf(m),
                rows = rows.Select(r => new
                {
                    scenario = r.Scenario,
                    design = r.Design,
                    bounds = r.Bounds.Select(b => new
                    {
                        preemptions = b.Bound,
                        schedules = b.Schedules,
                        violations = b.Violations,
                        complete = b.Complete,
                        seconds = Math.Round(b.Elapsed.TotalSeconds, 3),
                        firstViolation = b.FirstViolation,
                    }),
                }),
                violations,
            }),
            null,
            w =>
            {
                var header = new List<string> { "scenario", "design" };
                for (int k = 0; k <= bound; k++)
                {
                    header.Add($"<={k}: schedules");
                    header.Add("violations");
                    header.Add("s");
                }

                var table = new List<string[]> { header.ToArray() };
                foreach (var r in rows)
                {
                    var cells = new List<string> { r.Scenario, r.Design };
                    for (int k = 0; k <= bound; k++)
                    {
                        if (k < r.Bounds.Count)
                        {
                            var b = r.Bounds[k];
                            cells.Add(b.Complete ? Human.Count(b.Schedules) : $">{Human.Count(b.Schedules)} (cut)");
                            cells.Add(Human.Count(b.Violations));
                            cells.Add(b.Elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture));
                        }
                        else
                        {
                            cells.AddRange(["-", "-", "-"]);
                        }
                    }

                    table.Add([.. cells]);
                }

                int[] widths = [.. Enumerable.Range(0, header.Count).Select(c => table.Max(row => row[c].Length))];
                foreach (var row in table)
                {
                    w.WriteLine(string.Join("  ", row.Select((cell, c) => c < 2 ? cell.PadRight(widths[c]) : cell.PadLeft(widths[c]))).TrimEnd());
                }

                w.WriteLine($"{Human.Plural(violations, "violation")} in all; mutation {Mutations.NameOf(m)}");
                foreach (var r in rows)
                {
                    if (r.Bounds.FirstOrDefault(b => b.FirstViolation is not null) is { } bad)
                    {
                        w.WriteLine($"{r.Scenario} on {r.Design}, bound {bad.Bound}: {bad.FirstViolation}");
                    }
                }
            });
        return violations == 0 ? Cli.ExitOk : Cli.ExitFailure;
    }

    /// <summary>Whether <paramref name="s"/> tests <paramref name="design"/>: it goes through the design, or it is shown to catch a mutation the design has.</summary>
    public static bool Tests(SystematicScenario s, string design) =>
        s.UsesDesign || s.Catches.Any(m => Designs.Supports(design, m));
}
