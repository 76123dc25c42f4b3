using System.CommandLine;
using System.CommandLine.Parsing;
using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Workloads;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>The <c>ptlab</c> command line.</summary>
internal static class Cli
{
    public const int ExitOk = 0;
    public const int ExitFailure = 1;
    public const int ExitUsage = 2;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = BuildRoot(stdout, stderr);
        ParseResult parse = root.Parse(args.Length == 0 ? ["demo"] : args);
        if (parse.Errors.Count > 0)
        {
            stderr.WriteLine($"ptlab: {ParseErrors.Describe(parse)}");
            return ExitUsage;
        }

        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"ptlab: {e.Message}");
            return ExitUsage;
        }
        catch (ScenarioException e)
        {
            stderr.WriteLine($"ptlab: the scenario failed: {e.Message}");
            return ExitFailure;
        }
    }

    private static RootCommand BuildRoot(TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand(
            "PtLab: an executable model of the Linux x86-64 user page-table layer, for measuring page-table " +
            "memory bloat (VmPTE) and the designs that free empty page tables.");
        var run = new Command("run", "Run a built-in scenario on the model and print /proc-style figures before and after.");
        foreach (var def in ScenarioCatalog.All())
        {
            run.Subcommands.Add(RunCommand(def, stdout, stderr));
        }

        var compare = new Command(
            "compare",
            "Run a built-in scenario once per reclaim design, each on a fresh machine, and print the designs side by side; " +
            "with --kernel, run it on the host kernel and on the matching model design and print the difference.");
        foreach (var def in ScenarioCatalog.All())
        {
            compare.Subcommands.Add(Compare.Command(def, stdout, stderr));
        }

        Scoreboard.AddTo(compare, stdout, stderr);

        var bench = new Command("bench", "Benchmarks (not tests): figures to compare, measured on this host.");
        bench.Subcommands.Add(Bench.Command(stdout));
        bench.Subcommands.Add(BenchTraces.Command(stdout));
        bench.Subcommands.Add(BenchReplay.Command(stdout));
        bench.Subcommands.Add(ScanBench.Command(stdout));
        bench.Subcommands.Add(FootprintBench.Command(stdout));
        bench.Subcommands.Add(LitmusBench.Command(stdout));
        root.Subcommands.Add(Demo.Command(stdout, stderr));
        root.Subcommands.Add(run);
        root.Subcommands.Add(compare);
        root.Subcommands.Add(bench);
        root.Subcommands.Add(Check.CheckCommand(stdout));
        root.Subcommands.Add(Check.SoakCommand(stdout));
        root.Subcommands.Add(Record.Command(stdout, stderr));
        root.Subcommands.Add(TraceCommands.Command(stdout, stderr));
        root.Subcommands.Add(Replay.Command(stdout, stderr));
        root.Subcommands.Add(Scan.Command(stdout, stderr));
        root.Subcommands.Add(ExporterHost.Command(stdout, stderr));
        var fuzz = new Command("fuzz", "Fuzzers: random operations checked against an oracle after every one (kernel), or random inputs to the trace reader (traces).");
        fuzz.Subcommands.Add(FuzzKernel.Command(stdout, stderr));
        fuzz.Subcommands.Add(FuzzTraces.Command(stdout));
        root.Subcommands.Add(fuzz);
        return root;
    }

    /// <summary>Options every model run shares.</summary>
    internal sealed class ModelOptions
    {
        public Option<string> Ram { get; } = new("--ram")
        {
            Description = "Simulated RAM size (K/M/G/T suffixes).",
            DefaultValueFactory = _ => "24G",
        };

        public Option<string> PageData { get; } = new("--page-data")
        {
            Description = "on: keep real page bytes; off: keep a 64-bit content token per page, so tens of GiB fit on a small host.",
            DefaultValueFactory = _ => "on",
        };

        public Option<int?> Cpus { get; } = new("--cpus")
        {
            Description = "Simulated CPUs (1-64). The mixed scenario runs one worker per CPU (default 2); the others run on CPU 0 (default 1).",
        };

        public Option<string> Swap { get; } = new("--swap")
        {
            Description = "Swap device size (K/M/G/T suffixes); 0, the default, means no swap, as on the measured machine.",
            DefaultValueFactory = _ => "0",
        };

        public Option<string> SwitchBack { get; } = new("--switch-back")
        {
            Description = "pte-ref only: after MADV_DONTNEED, switch a table that could not be freed back to percpu mode (on, as the seed's patch 14 does) or leave it atomic (off).",
            DefaultValueFactory = _ => "on",
        };

        public Option<bool> FreePmd { get; } = new("--free-pmd")
        {
            Description = "occupancy and pt-reclaim: MADV_DONTNEED also frees each PMD table (1 GiB) it leaves empty.",
        };

        public Option<string> At { get; } = new("--at")
        {
            Description = "Place the mapping at this 2M-aligned address (hex 0x... or decimal) with MAP_FIXED_NOREPLACE; 0 lets the model choose.",
            DefaultValueFactory = _ => "0",
        };

        public Option<bool> Profile { get; } = new("--profile")
        {
            Description = "Count operations per CPU (faults, atomics on shared lines, per-CPU ops, lock acquisitions, grace periods, TLB flushes, tables zeroed) and print them, with each per fault.",
        };

        public Option<bool> Force { get; } = new("--force")
        {
            Description = "Run even when the estimate of the host memory the run needs says it will not fit in what the host has available.",
        };

        public ModelOptions()
        {
            PageData.AcceptOnlyFromAmong("on", "off");
            SwitchBack.AcceptOnlyFromAmong("on", "off");
        }

        /// <summary>--format and --output, once <see cref="AddTo"/> ran.</summary>
        public ReportOptions Report { get; private set; } = null!;

        public void AddTo(Command c)
        {
            c.Options.Add(Ram);
            c.Options.Add(PageData);
            Report = ReportOptions.AddTo(c);
            c.Options.Add(Cpus);
            c.Options.Add(At);
            c.Options.Add(Swap);
            c.Options.Add(SwitchBack);
            c.Options.Add(FreePmd);
            c.Options.Add(Force);
            c.Options.Add(Profile);
        }

        /// <summary>
        /// Refuses the options that would mean nothing for this run, each with the reason: a design
        /// option none of the run's designs takes, a placement for a scenario that never meets the
        /// kernel, a swap device reclaim would never use.
        /// </summary>
        public void RefuseMeaningless(ParseResult p, ScenarioDef def, IScenario scenario, IReadOnlyList<string> designs)
        {
            if (Given(p, SwitchBack) && !designs.Any(TakesSwitchBack))
            {
                var takers = Designs.Names.Where(TakesSwitchBack).ToList();
                throw new UsageException(
                    $"--switch-back: {(designs.Count == 1 ? $"design {designs[0]} has" : $"designs {string.Join(", ", designs)} have")} no " +
                    $"switch back to percpu mode; it applies to {string.Join(", ", takers)}");
            }

            if (p.GetValue(FreePmd) && !designs.Any(Designs.TakesFreePmd))
            {
                throw new UsageException(
                    $"--free-pmd: {(designs.Count == 1 ? $"design {designs[0]} does" : $"designs {string.Join(", ", designs)} do")} not free " +
                    $"empty PMD tables; it applies to {string.Join(", ", Designs.Names.Where(Designs.TakesFreePmd))}");
            }

            if (Given(p, At) && !def.KernelCapable)
            {
                throw new UsageException($"--at places the mapping at an address the host kernel's run can share (compare --kernel); {def.Name} runs on the model only");
            }

            ulong swap = Size(p.GetValue(Swap), "--swap");
            ulong ram = Size(p.GetValue(Ram), "--ram");
            var f = def.Footprint(scenario);
            if (Given(p, Swap) && swap > 0 && f.ResidentBytes <= ram)
            {
                throw new UsageException(
                    $"--swap is never used here: the {def.Name} working set ({PtLab.Cli.Human.Bytes(f.ResidentBytes)}) fits in --ram " +
                    $"({PtLab.Cli.Human.Bytes(ram)}), so reclaim never runs; give a --ram below the working set to see pages swapped");
            }
        }

        // A design takes --switch-back when its options, as a run reports them, depend on it.
        private static bool TakesSwitchBack(string design) =>
            !Designs.ReportedOptions(design, new DesignOptions { SwitchBack = true })
                .SequenceEqual(Designs.ReportedOptions(design, new DesignOptions { SwitchBack = false }));

        /// <summary>
        /// Refuses a run whose model (and, with <paramref name="onKernel"/>, real touches in this
        /// process) would not fit in the host's available memory, unless --force.
        /// </summary>
        public void GuardHostMemory(ParseResult p, ScenarioDef def, IScenario scenario, bool onKernel = false)
        {
            var f = def.Footprint(scenario);
            long kernel = onKernel ? (long)f.ResidentBytes : 0;
            HostMemory.Check(
                f, (long)Size(p.GetValue(Ram), "--ram"), (long)Size(p.GetValue(Swap), "--swap"), p.GetValue(PageData) == "on",
                HostMemory.Available() - kernel, p.GetValue(Force));
        }

        public ScenarioArgs Args(ParseResult p, ScenarioDef def)
        {
            int cpus = p.GetValue(Cpus) ?? def.DefaultCpus;
            if (cpus is < 1 or > 64)
            {
                throw new UsageException($"--cpus must be between 1 and 64, got {cpus}");
            }

            return new ScenarioArgs(cpus, Address(p.GetValue(At), "--at"));
        }

        public MachineOptions Machine(ParseResult p, int cpus, string design, out ReportParameters reported, ulong? defaultRam = null)
        {
            ulong ram = defaultRam is { } d && !Given(p, Ram) ? d : Size(p.GetValue(Ram), "--ram");
            if (ram < (1UL << 20))
            {
                throw new UsageException($"--ram must be at least 1M, got '{p.GetValue(Ram)}'");
            }

            bool pageData = p.GetValue(PageData) == "on";
            ulong swap = Size(p.GetValue(Swap), "--swap");
            bool switchBack = p.GetValue(SwitchBack) != "off";
            reported = new ReportParameters()
                .Add("ramBytes", ram)
                .Add("pageData", pageData ? "on" : "off")
                .Add("cpus", (long)cpus)
                .Add("swapBytes", swap);
            var options = new DesignOptions { SwitchBack = switchBack, FreePmd = p.GetValue(FreePmd) };
            var factory = DesignFactory(design, options);
            foreach (var (key, value) in Designs.ReportedOptions(design, options))
            {
                reported.Add(key, value);
            }

            return new MachineOptions
            {
                RamBytes = (long)ram,
                PageData = pageData,
                Cpus = cpus,
                SwapBytes = (long)swap,
                // Several CPUs: stop the others cleanly if one fails. One CPU needs no hook on its hot path.
                Scheduler = cpus > 1 ? new PtLab.Sync.PanicOnFailure() : null,
                Design = factory,
                Profile = p.GetValue(Profile),
            };
        }
    }

    /// <summary>Whether the user gave <paramref name="option"/> on the command line (not its default).</summary>
    internal static bool Given(ParseResult p, Option option) => p.GetResult(option) is { Implicit: false };

    public static Func<IPageTableReclaim> DesignFactory(string name, DesignOptions? options = null) =>
        Designs.Factory(name, options) ?? throw new UsageException($"unknown design '{name}' (known: {string.Join(", ", Designs.Names)})");

    public static ulong Size(string? text, string option)
    {
        if (!Sizes.TryParse(text, out ulong v, out string error))
        {
            throw new UsageException($"{option}: {error}");
        }

        return v;
    }

    /// <summary>An address: 0x-prefixed hex or decimal.</summary>
    public static ulong Address(string? text, string option)
    {
        string t = (text ?? "").Trim();
        bool ok = t.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(t.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong v)
            : ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out v);
        return ok ? v : throw new UsageException($"{option}: '{text}' is not an address (use 0x-prefixed hex or decimal)");
    }

    private static Command RunCommand(ScenarioDef def, TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(def.Name, def.Description);
        foreach (var a in def.Aliases)
        {
            cmd.Aliases.Add(a);
        }

        var design = new Option<string>("--design")
        {
            Description = "Page-table reclaim design. " + Designs.Describe() + ".",
            DefaultValueFactory = _ => Designs.Baseline,
        };
        design.AcceptOnlyFromAmong([.. Designs.Names]);
        var common = new ModelOptions();
        foreach (var o in def.Options)
        {
            cmd.Options.Add(o);
        }

        cmd.Options.Add(design);
        common.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var args = common.Args(p, def);
            var scenario = def.Create(p, args);
            var machine = common.Machine(p, args.Cpus, p.GetValue(design)!, out var reported, def.DefaultRam(scenario));
            common.RefuseMeaningless(p, def, scenario, [p.GetValue(design)!]);
            common.GuardHostMemory(p, def, scenario);
            return RunScenario(scenario, machine, reported, p, common.Report, stdout, stderr);
        });
        return cmd;
    }

    /// <summary>Runs a scenario on a fresh model machine, with a progress bar when both outputs are terminals.</summary>
    internal static ScenarioResult RunWithProgress(IScenario scenario, IMemoryTarget target, TextWriter stderr)
    {
        ScenarioResult? r = null;
        WithProgress(stderr, [$"{scenario.Name} on {target.Name}"], report => r = scenario.Run(target, report(0)));
        return r!;
    }

    /// <summary>
    /// Runs <paramref name="work"/> with one progress bar per label on stderr when both outputs are
    /// terminals; <paramref name="work"/> gets, per label index, where to report a fraction in [0, 1].
    /// </summary>
    internal static void WithProgress(TextWriter stderr, IReadOnlyList<string> labels, Action<Func<int, Action<double>?>> work)
    {
        bool interactive = !Console.IsErrorRedirected && !Console.IsOutputRedirected && ReferenceEquals(stderr, Console.Error);
        if (!interactive)
        {
            work(_ => null);
            return;
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var tasks = labels.Select(l => ctx.AddTask(l, maxValue: 1.0)).ToArray();
                work(i => f => tasks[i].Value = f);
            });
    }

    private static int RunScenario(IScenario scenario, MachineOptions options, ReportParameters reported, ParseResult p, ReportOptions output, TextWriter stdout, TextWriter stderr)
    {
        // The phase compare measures per design: machine built, run, and torn down.
        var phase = ProcessPhase.Start();
        RunReport report;
        using (var target = new ModelTarget(options))
        {
            ScenarioResult result = ExplainingOutOfMemory(target, () => RunWithProgress(scenario, target, stderr));
            (result, string? idle) = BackgroundScan.WhenIdle(target, result);
            var counters = target.Mm.Counters();
            var host = new HostReport(
                Process.GetCurrentProcess().PeakWorkingSet64,
                target.Machine.Phys.HostBytes,
                result.WallSeconds > 0 ? Math.Round(counters.Faults / result.WallSeconds) : 0);
            report = RunReport.From(result, target.Mm.Design.Name, counters, reported, host);
            report = report with
            {
                Notes = [.. ReclaimNote(result, target), .. idle is null ? Array.Empty<string>() : [idle]],
                Profile = target.Machine.Sync.Profile is { } profile ? ProfileReport.From(profile, counters) : null,
            };
        }

        report = report with { Host = report.Host with { Run = phase.Stop() } };
        return output.Write(p, stdout, report.ToJson, report.ToCsv, w => TableOutput.Write(report, w));
    }

    /// <summary>
    /// Runs <paramref name="run"/>; when the scenario fails because simulated RAM ran out, says so
    /// with the options that help, instead of only the failed access.
    /// </summary>
    internal static T ExplainingOutOfMemory<T>(ModelTarget target, Func<T> run)
    {
        try
        {
            return run();
        }
        catch (ScenarioException e) when (target.Machine.Phys.AllocationFailures > 0)
        {
            var o = target.Machine.Options;
            string swap = o.SwapBytes > 0
                ? $"or a larger --swap (now {PtLab.Cli.Human.Bytes(o.SwapBytes)})"
                : "or add --swap SIZE so reclaim can write anonymous pages out";
            throw new ScenarioException($"simulated RAM ran out (--ram {PtLab.Cli.Human.Bytes(o.RamBytes)}): {e.Message}; give a larger --ram, {swap}");
        }
    }

    /// <summary>
    /// A MADV_FREE run whose reclaim never ran freed nothing: the lazy-free pages, and with pte-ref
    /// their tables, wait for a reclaim that only a short RAM starts. Says so, with the way out.
    /// </summary>
    internal static IEnumerable<string> ReclaimNote(ScenarioResult r, ModelTarget target)
    {
        if (r.Parameters.TryGetValue("advice", out var advice) && advice == "free" && target.Machine.ReclaimStats.Scanned == 0)
        {
            yield return $"note: reclaim never ran (the {PtLab.Cli.Human.Bytes(target.Machine.Options.RamBytes)} of simulated RAM never ran short), " +
                         "so MADV_FREE left every lazy-free page and its table in place; give a --ram below the working set (--size) for reclaim to discard them";
        }
    }

    /// <summary>
    /// Writes a report in the chosen format (json, csv, or the human table) and returns success.
    /// New commands use <see cref="ReportOptions"/>, which adds --output as well.
    /// </summary>
    public static int WriteReport(string? format, TextWriter stdout, Func<string> json, Func<string> csv, Action<TextWriter> table)
    {
        switch (format)
        {
            case "json":
                stdout.WriteLine(json());
                break;
            case "csv":
                stdout.Write(csv());
                break;
            default:
                table(stdout);
                break;
        }

        return ExitOk;
    }
}

/// <summary>A bad argument: reported on one line, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
