using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using PtLab.Workloads;

namespace PtLab.Cli;

/// <summary>
/// Runs one measured run of one design in a process of its own: this program started again with the
/// same command line and <c>--isolated-run DESIGN --isolated-report FILE</c>, which makes that
/// process build its machine, run the warm-up and the measured run of that design alone, and write
/// the run's report as JSON into FILE.
/// </summary>
/// <remarks>
/// Why: designs that share one process share one compiled fault path. The JIT compiles it once,
/// with the runtime profile of whichever design ran first, and lays out the others' code as cold, so
/// in one process the order decides timings by as much as the designs do. A process per run gives
/// every design its own compile, its own heap and its own peak RSS.
/// </remarks>
internal static class IsolatedRuns
{
    /// <summary>The hidden option that makes this process the child of one run: the design it runs.</summary>
    public const string DesignOption = "--isolated-run";

    /// <summary>The hidden option naming the file the child writes its report into.</summary>
    public const string ReportOption = "--isolated-report";

    /// <summary>The hidden option naming which of the scoreboard's scenarios the child runs, by label.</summary>
    public const string ScenarioOption = "--isolated-scenario";

    /// <summary>The hidden option naming how many CPUs the child of <c>bench designs</c> runs on.</summary>
    public const string CpusOption = "--isolated-cpus";

    /// <summary>
    /// Runs <paramref name="warmUp"/> until the JIT has little left to compile for it. A fresh process
    /// starts on unoptimized code; tiered compilation starts counting a method's calls only once no
    /// new method was compiled for a short delay (100 ms by default), and recompiles it optimized on a
    /// background thread after 30 calls. So each round runs the warm-up and then waits out that delay,
    /// and the hot path is optimized from the third round on; the warm-up ends after a round, the
    /// third or later, that compiled at most <see cref="Settled"/> methods (only cold ones are left),
    /// or after <paramref name="maxRounds"/>. Returns the rounds run.
    /// </summary>
    public static int WarmUntilSteady(Action warmUp, int maxRounds = 8)
    {
        for (int round = 1; ; round++)
        {
            long before = System.Runtime.JitInfo.GetCompiledMethodCount();
            warmUp();
            Thread.Sleep(TieringDelay);
            long compiled = System.Runtime.JitInfo.GetCompiledMethodCount() - before;
            if (round == maxRounds || (round >= 3 && compiled <= Settled))
            {
                return round;
            }
        }
    }

    /// <summary>Compiles in a round few enough to say the warm-up's code has settled.</summary>
    private const int Settled = 20;

    /// <summary>Longer than the runtime's default call-counting delay (100 ms), so the background compiles of a round have run.</summary>
    private static readonly TimeSpan TieringDelay = TimeSpan.FromMilliseconds(150);

    /// <summary>
    /// The command line that started this program again: the apphost <c>ptlab</c> beside this
    /// assembly, or <c>dotnet exec ptlab.dll</c> where there is no apphost (a framework-dependent
    /// copy). Tests that run the CLI in their own process find the apphost in their output folder.
    /// </summary>
    public static (string FileName, IReadOnlyList<string> Prefix) Self()
    {
        string dir = AppContext.BaseDirectory;
        string apphost = Path.Combine(dir, OperatingSystem.IsWindows() ? "ptlab.exe" : "ptlab");
        if (File.Exists(apphost))
        {
            return (apphost, []);
        }

        string dll = Path.Combine(dir, "ptlab.dll");
        string? host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (string.IsNullOrEmpty(host) && Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet")
        {
            host = Environment.ProcessPath;
        }

        return (string.IsNullOrEmpty(host) ? "dotnet" : host, ["exec", dll]);
    }

    /// <summary>
    /// The arguments of <paramref name="p"/> as given, so the child parses exactly what the parent
    /// parsed (System.CommandLine has split <c>--opt=value</c> and expanded response files already).
    /// </summary>
    public static IReadOnlyList<string> Arguments(ParseResult p) => [.. p.Tokens.Select(t => t.Value)];

    /// <summary>
    /// The isolation option: process (the default) or shared; <paramref name="what"/> names what runs.
    /// </summary>
    public static Option<string> IsolationOption(string what)
    {
        var o = new Option<string>("--isolation")
        {
            Description = $"process: every measured run of {what} in a process of its own, after its own warm-up, so each design gets its own " +
                          "compiled code, heap and peak RSS and no timing depends on which design ran first; shared: every run in " +
                          "this process (quicker to run; the JIT compiles the fault path once, shaped by the design that ran first).",
            DefaultValueFactory = _ => "process",
        };
        o.AcceptOnlyFromAmong("process", "shared");
        return o;
    }

    /// <summary>
    /// Starts the child for <paramref name="design"/> and returns its report; a child that fails is a
    /// <see cref="ScenarioException"/> naming the design and what the child printed.
    /// </summary>
    public static DesignRunReport Run(IReadOnlyList<string> arguments, string design, string? scenario = null) =>
        Run<DesignRunReport>(arguments, design, scenario is null ? [] : [ScenarioOption, scenario]);

    /// <summary>
    /// Starts the child for <paramref name="design"/> with <paramref name="extra"/> hidden options and
    /// returns the report it wrote, read as a <typeparamref name="T"/>.
    /// </summary>
    public static T Run<T>(IReadOnlyList<string> arguments, string design, IReadOnlyList<string> extra)
    {
        string file = Path.Combine(Path.GetTempPath(), $"ptlab-run-{Environment.ProcessId}-{Guid.NewGuid():N}.json");
        var (fileName, prefix) = Self();
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in prefix.Concat(arguments).Concat([DesignOption, design, ReportOption, file]).Concat(extra))
        {
            psi.ArgumentList.Add(a);
        }

        try
        {
            using var child = Process.Start(psi) ?? throw new ScenarioException($"{design}: could not start {fileName}");
            var stdout = child.StandardOutput.ReadToEndAsync();
            string stderr = child.StandardError.ReadToEnd();
            child.WaitForExit();
            _ = stdout.Result;
            if (child.ExitCode != 0 || !File.Exists(file))
            {
                throw new ScenarioException(
                    $"{design}'s run (a process of its own) exited with {child.ExitCode}" +
                    (stderr.Length > 0 ? $": {stderr.Trim()}" : ""));
            }

            return JsonSerializer.Deserialize<T>(File.ReadAllText(file), ReportJson.Options)
                ?? throw new ScenarioException($"{design}'s run wrote an empty report");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ScenarioException($"{design}: could not start {fileName}: {e.Message}");
        }
        catch (JsonException e)
        {
            throw new ScenarioException($"{design}'s run wrote a report that does not read back: {e.Message}");
        }
        finally
        {
            File.Delete(file);
        }
    }
}

/// <summary>
/// The hidden options of one isolated run (<see cref="IsolatedRuns"/>), made once per command: an
/// option belongs to the commands it is added to, and each parse builds its own commands.
/// </summary>
internal sealed class IsolatedRunOptions
{
    public Option<string> Design { get; } = new(IsolatedRuns.DesignOption)
    {
        Hidden = true,
        Description = "Internal: run this one design once (after its warm-up) and write its report to " + IsolatedRuns.ReportOption + ".",
    };

    public Option<string> Report { get; } = new(IsolatedRuns.ReportOption)
    {
        Hidden = true,
        Description = "Internal: the file " + IsolatedRuns.DesignOption + " writes its report into.",
    };

    public Option<string> Scenario { get; } = new(IsolatedRuns.ScenarioOption)
    {
        Hidden = true,
        Description = "Internal: the scoreboard scenario (its label) " + IsolatedRuns.DesignOption + " runs.",
    };

    /// <summary>The design this process is the child of one run of, or null where it is not a child; an unknown design is a usage error.</summary>
    public string? DesignToRun(ParseResult p)
    {
        if (p.GetValue(Design) is not { } design)
        {
            return null;
        }

        return PtLab.Reclaim.Designs.Factory(design) is null
            ? throw new UsageException($"{IsolatedRuns.DesignOption}: unknown design '{design}' (known: {string.Join(", ", PtLab.Reclaim.Designs.Names)})")
            : design;
    }

    /// <summary>Adds the options to <paramref name="command"/>; <see cref="Scenario"/> only where the child picks one of several scenarios (the scoreboard).</summary>
    public void AddTo(Command command, bool scenario = false)
    {
        command.Options.Add(Design);
        command.Options.Add(Report);
        if (scenario)
        {
            command.Options.Add(Scenario);
        }
    }

    /// <summary>
    /// The child's side: runs <paramref name="warmUp"/>, then the measured run
    /// <paramref name="measure"/>, and writes its report into the file the parent named.
    /// </summary>
    public int Child<T>(ParseResult p, Action warmUp, Func<T> measure)
    {
        string file = p.GetValue(Report) ?? throw new UsageException($"{IsolatedRuns.DesignOption}: needs {IsolatedRuns.ReportOption} FILE");
        IsolatedRuns.WarmUntilSteady(warmUp);
        FairTrials.Quiesce();
        var r = measure();
        File.WriteAllText(file, ReportJson.Serialize(r));
        return 0;
    }
}
