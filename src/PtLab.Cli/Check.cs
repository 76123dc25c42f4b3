using System.CommandLine;
using System.Globalization;
using PtLab.Reclaim;
using PtLab.Sync;
using PtLab.Systematic;

namespace PtLab.Cli;

/// <summary>The <c>check</c> and <c>soak</c> commands: the systematic tester and the real-thread soak.</summary>
internal static class Check
{
    public static Command CheckCommand(TextWriter stdout)
    {
        var cmd = new Command("check", "Explore interleavings of a small race under the deterministic scheduler and check the invariants after each.");
        var scenario = new Argument<string>("scenario")
        {
            Description = "One of: " + string.Join(", ", SystematicScenarios.Names) + " (none with --exhaustive --all).",
            Arity = ArgumentArity.ZeroOrOne,
        };
        scenario.AcceptOnlyFromAmong([.. SystematicScenarios.Names]);
        var design = DesignOption();
        var schedules = new Option<int>("--schedules") { Description = "Schedules to explore.", DefaultValueFactory = _ => 1000 };
        var strategy = new Option<string>("--strategy") { Description = "random (random walk) or pct (probabilistic concurrency testing).", DefaultValueFactory = _ => "random" };
        strategy.AcceptOnlyFromAmong([.. SchedulingStrategies.Names]);
        var seed = new Option<int?>("--seed") { Description = "Replay the one schedule of this seed and print its interleaving." };
        var baseSeed = new Option<int>("--base-seed") { Description = "First seed of an exploration (schedule i uses base + i).", DefaultValueFactory = _ => 0 };
        var mutation = new Option<string>("--mutation")
        {
            Description = "Break the protocol on purpose, to see the tester catch it: " +
                          string.Join(", ", Mutations.Names.Where(n => n != Mutations.NameOf(Mutation.None)).Select(n => $"{n} (caught by {CaughtBy(Mutations.Parse(n)!.Value)})")) + ".",
            DefaultValueFactory = _ => Mutations.NameOf(Mutation.None),
        };
        mutation.AcceptOnlyFromAmong([.. Mutations.Names]);
        var last = new Option<int>("--last") { Description = "Steps of the interleaving to print on replay (with --seed; at least 1).", DefaultValueFactory = _ => 60 };
        var everyStep = new Option<bool>("--every-step")
        {
            Description = "Also check, at every scheduling point, that no TLB maps a free frame and no entry maps a free frame or table.",
        };
        cmd.Arguments.Add(scenario);
        foreach (var o in new Option[] { design, schedules, strategy, seed, baseSeed, mutation, last, everyStep })
        {
            cmd.Options.Add(o);
        }

        var exhaustive = CheckExhaustive.AddTo(cmd);
        var output = ReportOptions.AddTo(cmd, "text", "json");

        cmd.SetAction(p =>
        {
            string d = p.GetValue(design)!;
            var m = Mutations.Parse(p.GetValue(mutation)!)!.Value;
            if (!Designs.Supports(d, m))
            {
                throw new UsageException($"--mutation {Mutations.NameOf(m)} does not apply to design {d}");
            }

            bool isExhaustive = exhaustive.Validate(p, [schedules, strategy, seed, baseSeed]);
            if (isExhaustive && p.GetValue(exhaustive.All))
            {
                if (p.GetValue(scenario) is { } named)
                {
                    throw new UsageException($"--all explores every scenario: drop the scenario '{named}' or --all");
                }

                return exhaustive.RunAll(p, stdout, output, Cli.Given(p, design) ? d : null, m);
            }

            if (p.GetValue(scenario) is not { } scenarioName)
            {
                throw new UsageException("check needs a scenario (or --exhaustive --all): one of " + string.Join(", ", SystematicScenarios.Names));
            }

            var s = SystematicScenarios.Find(scenarioName)!;
            RefuseADesignTheScenarioDoesNotTest(s, d);
            if (isExhaustive)
            {
                if (exhaustive.ChoicesOf(p) is { } choices)
                {
                    return exhaustive.Replay(p, stdout, output, s, d, m, choices, p.GetValue(last), p.GetValue(everyStep));
                }

                if (Cli.Given(p, last))
                {
                    throw new UsageException("--last sets how many steps a replay prints: it needs --seed, or --choices with --exhaustive");
                }

                return exhaustive.RunOne(p, stdout, output, s, d, m, CatchNote(s, m), p.GetValue(everyStep));
            }

            int n = p.GetValue(schedules);
            if (n < 1)
            {
                throw new UsageException($"--schedules must be at least 1, got {n}");
            }

            bool replay = p.GetValue(seed) is not null;
            if (replay && Cli.Given(p, baseSeed))
            {
                throw new UsageException("--base-seed starts an exploration and --seed replays one schedule: give one of them");
            }

            if (replay && Cli.Given(p, schedules))
            {
                throw new UsageException("--schedules counts an exploration's schedules; --seed replays exactly one: drop one of them");
            }

            if (!replay && Cli.Given(p, last))
            {
                throw new UsageException("--last sets how many steps a replay prints: it needs --seed");
            }

            if (p.GetValue(last) < 1)
            {
                throw new UsageException($"--last must be at least 1, got {p.GetValue(last)}");
            }

            string? note = CatchNote(s, m);

            string strat = p.GetValue(strategy)!;
            if (p.GetValue(seed) is { } one)
            {
                var r = SystematicTester.RunOne(s, d, strat, one, m, everyStep: p.GetValue(everyStep));
                int keep = p.GetValue(last);
                output.Write(
                    p,
                    stdout,
                    () => ReportJson.Serialize(new
                    {
                        scenario = s.Name,
                        design = d,
                        strategy = strat,
                        mutation = Mutations.NameOf(m),
                        seed = one,
                        steps = r.Steps,
                        violation = r.Violation,
                        note,
                        trace = r.Scheduler.TraceLines().TakeLast(keep).ToArray(),
                    }),
                    null,
                    w =>
                    {
                        WriteNote(w, note);
                        w.WriteLine($"{s.Name} on {d}, {strat} seed {one}, mutation {Mutations.NameOf(m)}: {Human.Plural(r.Steps, "step")}, {(r.Ok ? "no violation" : "VIOLATION")}");
                        w.Write(r.Scheduler.FormatTrace(keep));
                        if (!r.Ok)
                        {
                            w.WriteLine($"violation: {r.Violation}");
                        }
                    });
                return r.Ok ? Cli.ExitOk : Cli.ExitFailure;
            }

            var e = SystematicTester.Explore(s, d, strat, n, p.GetValue(baseSeed), m, everyStep: p.GetValue(everyStep));
            output.Write(
                p,
                stdout,
                () => ReportJson.Serialize(new
                {
                    schedules = e.Schedules,
                    violations = e.Violations,
                    firstFailingSeed = e.FirstFailingSeed,
                    firstViolation = e.FirstViolation,
                    scenario = s.Name,
                    design = d,
                    strategy = strat,
                    mutation = Mutations.NameOf(m),
                    seconds = Math.Round(e.Elapsed.TotalSeconds, 3),
                    schedulesPerSecond = Math.Round(e.SchedulesPerSecond, 1),
                    note,
                }),
                null,
                w =>
                {
                    WriteNote(w, note);
                    w.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"{s.Name} on {d} ({strat}, mutation {Mutations.NameOf(m)}): {Human.Plural(e.Schedules, "schedule")}, {Human.Plural(e.Violations, "violation")}, {e.SchedulesPerSecond:N0} schedules/s, {Human.Plural(e.TotalSteps / Math.Max(1, e.Schedules), "step")} each"));
                    if (e.FirstFailingSeed is { } f)
                    {
                        w.WriteLine($"first failing seed {f}: {e.FirstViolation}");
                        w.WriteLine($"replay: ptlab check {s.Name} --design {d} --strategy {strat} --mutation {Mutations.NameOf(m)} --seed {f}");
                    }
                });
            return e.Violations == 0 ? Cli.ExitOk : Cli.ExitFailure;
        });
        return cmd;
    }

    public static Command SoakCommand(TextWriter stdout)
    {
        var cmd = new Command("soak", "Run random operations on real threads against one address space, checking the invariants between rounds.");
        var design = DesignOption();
        var cpus = new Option<int>("--cpus") { Description = "Simulated CPUs, one thread each (1-64).", DefaultValueFactory = _ => 2 };
        var minutes = new Option<double>("--minutes") { Description = "How long to run (fractions allowed).", DefaultValueFactory = _ => 1 };
        var seed = new Option<int>("--seed") { Description = "Seed of the per-CPU operation streams.", DefaultValueFactory = _ => 1 };
        foreach (var o in new Option[] { design, cpus, minutes, seed })
        {
            cmd.Options.Add(o);
        }

        var output = ReportOptions.AddTo(cmd, "text", "json");

        cmd.SetAction(p =>
        {
            int n = p.GetValue(cpus);
            if (n is < 1 or > 64)
            {
                throw new UsageException($"--cpus must be between 1 and 64, got {n}");
            }

            double min = p.GetValue(minutes);
            if (!(min > 0) || min > 24 * 60)
            {
                throw new UsageException($"--minutes must be above 0 and at most a day, got {min.ToString(CultureInfo.InvariantCulture)}");
            }

            var r = Soak.Run(p.GetValue(design)!, n, TimeSpan.FromMinutes(min), p.GetValue(seed));
            output.Write(
                p,
                stdout,
                () => ReportJson.Serialize(new
                {
                    design = r.Design,
                    cpus = n,
                    seconds = Math.Round(r.Elapsed.TotalSeconds, 2),
                    ops = r.Operations,
                    opsPerSecond = Math.Round(r.OperationsPerSecond),
                    rounds = r.Rounds,
                    violations = r.Violations.Count,
                    firstViolation = r.Violations.FirstOrDefault(),
                }),
                null,
                w =>
                {
                    w.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"soak {r.Design} on {Human.Plural(n, "CPU")}: {Human.Plural(r.Operations, "op")} in {r.Elapsed.TotalSeconds:F1} s ({r.OperationsPerSecond:N0} ops/s), {Human.Plural(r.Rounds, "round")} checked, {Human.Plural(r.Violations.Count, "violation")}"));
                    foreach (var v in r.Violations.Take(5))
                    {
                        w.WriteLine($"violation: {v}");
                    }
                });
            return r.Violations.Count == 0 ? Cli.ExitOk : Cli.ExitFailure;
        });
        return cmd;
    }

    /// <summary>The scenarios shown to catch <paramref name="m"/>, for help and notes.</summary>
    private static string CaughtBy(Mutation m)
    {
        var names = SystematicScenarios.All
            .Where(x => x.Catches.Contains(m))
            .Select(x => x.Name)
            .ToList();
        return names.Count == 0 ? "no scenario yet" : string.Join(", ", names);
    }

    /// <summary>
    /// A scenario that drives a primitive directly (not the address space) tests a design only
    /// through a mutation of that design it is shown to catch; with any other design it tests nothing.
    /// </summary>
    private static void RefuseADesignTheScenarioDoesNotTest(SystematicScenario s, string design)
    {
        if (s.UsesDesign || s.Catches.Any(m => Designs.Supports(design, m)))
        {
            return;
        }

        var tested = Designs.Names.Where(n => s.Catches.Any(m => Designs.Supports(n, m))).ToList();
        throw new UsageException(
            $"{s.Name} drives its primitive directly, not through a design, so --design {design} tests nothing there; " +
            (tested.Count > 0 ? $"use --design {string.Join(" or ", tested)}" : "it takes no --design"));
    }

    /// <summary>Says so when the scenario is not shown to catch the mutation, and which scenarios are.</summary>
    private static string? CatchNote(SystematicScenario s, Mutation m)
    {
        if (m == Mutation.None || s.Catches.Contains(m))
        {
            return null;
        }

        return $"note: {s.Name} is not shown to catch {Mutations.NameOf(m)}; the scenarios that are: {CaughtBy(m)}";
    }

    private static void WriteNote(TextWriter w, string? note)
    {
        if (note is not null)
        {
            w.WriteLine(note);
        }
    }

    private static Option<string> DesignOption()
    {
        var design = new Option<string>("--design")
        {
            Description = "Page-table reclaim design. " + Designs.Describe() + ".",
            DefaultValueFactory = _ => Designs.Seed,
        };
        design.AcceptOnlyFromAmong([.. Designs.Names]);
        return design;
    }
}
