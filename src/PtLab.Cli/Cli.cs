using System.CommandLine;
using System.CommandLine.Parsing;
using System.Diagnostics;
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
        ParseResult parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            var error = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
            string message = string.Join(" ", error.Message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
            string where = error.SymbolResult switch
            {
                OptionResult o => o.Option.Name + ": ",
                ArgumentResult { Parent: OptionResult o } => o.Option.Name + ": ",
                _ => "",
            };
            stderr.WriteLine($"ptlab: {where}{message} (try 'ptlab --help')");
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
        run.Subcommands.Add(CoverLetterCommand(stdout, stderr));
        root.Subcommands.Add(run);
        return root;
    }

    /// <summary>Options every model run shares.</summary>
    private sealed class ModelOptions
    {
        public Option<string> Design { get; } = new("--design")
        {
            Description = "Page-table reclaim design. " + Designs.Describe() + ".",
            DefaultValueFactory = _ => "none",
        };

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

        public Option<string> Format { get; } = new("--format")
        {
            Description = "Output: table (human), json (the stable machine interface) or csv.",
            DefaultValueFactory = _ => "table",
        };

        public ModelOptions()
        {
            Design.AcceptOnlyFromAmong([.. Designs.Names]);
            PageData.AcceptOnlyFromAmong("on", "off");
            Format.AcceptOnlyFromAmong("table", "json", "csv");
        }

        public void AddTo(Command c)
        {
            c.Options.Add(Design);
            c.Options.Add(Ram);
            c.Options.Add(PageData);
            c.Options.Add(Format);
        }

        public MachineOptions Machine(ParseResult p, out Dictionary<string, string> reported)
        {
            ulong ram = Size(p.GetValue(Ram), "--ram");
            if (ram < (1UL << 20))
            {
                throw new UsageException($"--ram must be at least 1M, got '{p.GetValue(Ram)}'");
            }

            string design = p.GetValue(Design)!;
            bool pageData = p.GetValue(PageData) == "on";
            reported = new Dictionary<string, string>
            {
                ["ram"] = ram.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["pageData"] = pageData ? "on" : "off",
            };
            return new MachineOptions
            {
                RamBytes = (long)ram,
                PageData = pageData,
                Design = DesignFactory(design),
            };
        }
    }

    public static Func<IPageTableReclaim> DesignFactory(string name) =>
        Designs.Factory(name) ?? throw new UsageException($"unknown design '{name}' (known: {string.Join(", ", Designs.Names)})");

    public static ulong Size(string? text, string option)
    {
        if (!Sizes.TryParse(text, out ulong v, out string error))
        {
            throw new UsageException($"{option}: {error}");
        }

        return v;
    }

    private static Command CoverLetterCommand(TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(
            "cover-letter",
            "The seed cover letter's test: mmap --size of private anonymous memory (MAP_NORESERVE), then for each " +
            "--chunk touch every page and madvise it with --advice. Prints VmSize/VmRSS/VmPTE before and after, " +
            "shaped like the cover letter's table.");
        var size = new Option<string>("--size") { Description = "Bytes to map (K/M/G/T suffixes).", DefaultValueFactory = _ => "50G" };
        var chunk = new Option<string>("--chunk") { Description = "Bytes touched then advised per step.", DefaultValueFactory = _ => "2M" };
        var advice = new Option<string>("--advice") { Description = "dontneed (MADV_DONTNEED) or free (MADV_FREE).", DefaultValueFactory = _ => "dontneed" };
        advice.AcceptOnlyFromAmong("dontneed", "free");
        var common = new ModelOptions();
        cmd.Options.Add(size);
        cmd.Options.Add(chunk);
        cmd.Options.Add(advice);
        common.AddTo(cmd);
        cmd.SetAction(p =>
        {
            ulong s = Size(p.GetValue(size), "--size");
            ulong c = Size(p.GetValue(chunk), "--chunk");
            if (c == 0 || c % 4096 != 0)
            {
                throw new UsageException($"--chunk must be a positive multiple of 4K, got '{p.GetValue(chunk)}'");
            }

            if (s < c || s % c != 0)
            {
                throw new UsageException($"--size must be a positive multiple of --chunk, got '{p.GetValue(size)}' and '{p.GetValue(chunk)}'");
            }

            var scenario = new CoverLetterScenario(s, c, p.GetValue(advice) == "free" ? Advice.Free : Advice.DontNeed);
            var machine = common.Machine(p, out var reported);
            return RunScenario(scenario, machine, reported, p.GetValue(common.Format)!, stdout, stderr);
        });
        return cmd;
    }

    private static int RunScenario(IScenario scenario, MachineOptions options, Dictionary<string, string> reported, string format, TextWriter stdout, TextWriter stderr)
    {
        using var target = new ModelTarget(options);
        ScenarioResult result;
        bool interactive = !Console.IsErrorRedirected && !Console.IsOutputRedirected && ReferenceEquals(stderr, Console.Error);
        if (interactive)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            ScenarioResult? r = null;
            console.Progress()
                .AutoClear(true)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(scenario.Name, maxValue: 1.0);
                    r = scenario.Run(target, f => task.Value = f);
                });
            result = r!;
        }
        else
        {
            result = scenario.Run(target, null);
        }

        var counters = target.Mm.Counters();
        var host = new HostReport(
            Process.GetCurrentProcess().PeakWorkingSet64,
            target.Machine.Phys.HostBytes,
            result.WallSeconds > 0 ? Math.Round(counters.Faults / result.WallSeconds) : 0);
        var report = RunReport.From(result, target.Mm.Design.Name, counters, reported, host);
        switch (format)
        {
            case "json":
                stdout.WriteLine(report.ToJson());
                break;
            case "csv":
                stdout.Write(report.ToCsv());
                break;
            default:
                TableOutput.Write(report, stdout);
                break;
        }

        return ExitOk;
    }
}

/// <summary>A bad argument: reported on one line, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
