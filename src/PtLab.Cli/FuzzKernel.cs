using System.CommandLine;
using System.CommandLine.Parsing;
using PtLab.Kernel;
using PtLab.Kernel.Fuzz;
using PtLab.Reclaim;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>
/// <c>ptlab fuzz kernel</c>: random sequences of memory system calls and touches, run by a C executor
/// on the host kernel and by the model, compared after every operation.
/// </summary>
internal static class FuzzKernel
{
    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(
            "kernel",
            "Differential fuzzing against the host kernel: random sequences of mmap (anonymous, private or shared), mmap of a test file " +
            "(private or shared), munmap, mprotect, madvise, mremap, brk (the heap starts in the slot), mlock, mlock2, munlock, mlockall, " +
            "munlockall and page touches in an empty 512 GiB slot, run by a small C executor (built " +
            "with gcc) and by the model design matching the host, compared after every operation (result, VmPTE, RssAnon, RssFile, " +
            "RssShmem, VMA layout). A difference stops its sequence and is replayed (--rechecks); one that comes back is printed and written " +
            "as a case file, one that does not is the host's own timing and is reported apart.");
        var seed = new Option<int>("--seed") { Description = "Seed of the run; sequence i draws from (seed, i).", DefaultValueFactory = _ => 1 };
        var sequences = new Option<int>("--sequences") { Description = "Sequences to run.", DefaultValueFactory = _ => 20 };
        var ops = new Option<int>("--ops") { Description = "Operations per sequence.", DefaultValueFactory = _ => 500 };
        var first = new Option<int>("--first") { Description = "Index of the first sequence (to rerun one sequence of a larger run).", DefaultValueFactory = _ => 0 };
        var design = new Option<string?>("--design") { Description = "Model design to compare with (default: the one matching the host). " + Designs.Describe() + "." };
        design.AcceptOnlyFromAmong([.. Designs.Names]);
        var minimize = new Option<bool>("--minimize") { Description = "Shrink each difference by delta debugging to a shortest sequence that still differs." };
        var output = new Option<string>("--out") { Description = "Folder for the case files of differences.", DefaultValueFactory = _ => "fuzz-cases", HelpName = "DIR" };
        var replay = new Option<string?>("--replay") { Description = "Replay a case file on both sides (and check the model against its recorded kernel answers) instead of generating.", HelpName = "FILE" };
        var record = new Option<bool>("--record") { Description = "With --replay: write the replayed case with the kernel's answers to --out even when both sides agree." };
        var rechecks = new Option<int>("--rechecks")
        {
            Description = "Replays of each differing sequence before it counts as a difference. The model answers the same operations the same way, " +
                          "so a replay on which kernel and model agree throughout shows the host answered them two ways: its own reclaim or aging " +
                          "(kswapd, DAMON) between two operations. Such differences are reported apart and do not fail the run. The replays wait 0, 0.5 " +
                          "and then 2 s before they start. 0 counts them all.",
            DefaultValueFactory = _ => 3,
        };
        var collapse = new Option<bool>("--collapse")
        {
            Description = "Let MADV_COLLAPSE collapse on both sides: the executor keeps THP off only for faults outside MADV_HUGEPAGE VMAs " +
                          "(PR_THP_DISABLE_EXCEPT_ADVISED, Linux 6.18), MADV_HUGEPAGE is never drawn and MADV_COLLAPSE often, over private VMAs. " +
                          "Without it THP is off and every MADV_COLLAPSE answers EINVAL on both sides.",
        };
        foreach (var o in new Option[] { seed, sequences, ops, first, design, minimize, output, replay, record, rechecks, collapse })
        {
            cmd.Options.Add(o);
        }

        var report = ReportOptions.AddTo(cmd, "table", "json");

        cmd.SetAction(p =>
        {
            try
            {
                return Run(p);
            }
            catch (Exception e) when (e is FuzzHarnessException or NativeBuildException or KernelUnavailableException)
            {
                stderr.WriteLine($"ptlab: fuzz kernel: {e.Message}");
                return Cli.ExitFailure;
            }
        });
        return cmd;

        int Run(ParseResult p)
        {
            var info = KernelInfo.Probe();
            string d = p.GetValue(design) ?? info.MatchingDesign;
            bool available = KernelExecutor.IsAvailable(out string why);
            if (p.GetValue(replay) is { } file)
            {
                var c = LoadCase(file);
                if (!available)
                {
                    stderr.WriteLine($"ptlab: fuzz kernel: no host kernel side here ({why}); checking the model against the recorded answers only");
                }

                return Replay(file, c, p.GetValue(design), available, p.GetValue(minimize), p.GetValue(record), p.GetValue(output)!, info, report, p, stdout);
            }

            int n = p.GetValue(sequences), m = p.GetValue(ops), f = p.GetValue(first), r = p.GetValue(rechecks);
            if (n < 1 || m < 1 || f < 0)
            {
                throw new UsageException($"--sequences and --ops must be at least 1 and --first at least 0, got {n}, {m} and {f}");
            }

            if (r < 0)
            {
                throw new UsageException($"--rechecks must be at least 0, got {r}");
            }

            if (!available)
            {
                stderr.WriteLine($"ptlab: fuzz kernel cannot run here: {why}");
                return Cli.ExitFailure;
            }

            var options = new FuzzCampaignOptions(p.GetValue(seed), n, m, d, p.GetValue(minimize), f, p.GetValue(collapse), r);
            var result = RunWithProgress(options, stderr);
            string outDir = p.GetValue(output)!;
            var files = WriteCases(result, info, outDir);
            var transientFiles = WriteTransientCases(result, info, outDir);
            var damon = result.Transients.Count > 0 ? DamonProbe.Running() : [];
            report.Write(p, stdout, () => Json(result, info, files, transientFiles, damon), null, w => WriteTable(result, info, files, transientFiles, damon, w));
            return result.Findings.Count == 0 ? Cli.ExitOk : Cli.ExitFailure;
        }
    }

    private static FuzzCampaignResult RunWithProgress(FuzzCampaignOptions options, TextWriter stderr)
    {
        bool interactive = !Console.IsErrorRedirected && !Console.IsOutputRedirected && ReferenceEquals(stderr, Console.Error);
        if (!interactive)
        {
            return FuzzCampaign.Run(options);
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        FuzzCampaignResult? r = null;
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"fuzz kernel against {options.Design}", maxValue: (double)options.Sequences * options.Ops);
                r = FuzzCampaign.Run(options, done => task.Value = done);
            });
        return r!;
    }

    /// <summary>Writes each finding (and its minimized form) as a case file; returns the paths per finding.</summary>
    private static List<(string Found, string? Minimized)> WriteCases(FuzzCampaignResult result, KernelInfo info, string dir)
    {
        var files = new List<(string, string?)>();
        if (result.Findings.Count == 0)
        {
            return files;
        }

        CreateFolder(dir);
        foreach (var f in result.Findings)
        {
            string stem = Path.Combine(dir, $"kernel-seed{result.Options.Seed}-seq{f.Sequence}");
            string found = stem + ".case";
            File.WriteAllText(found, Case(f.Found, result, info, f.Sequence, minimized: false).Format());
            string? min = null;
            if (f.Minimized is { } m)
            {
                min = stem + ".min.case";
                File.WriteAllText(min, Case(m, result, info, f.Sequence, minimized: true).Format());
            }

            files.Add((found, min));
        }

        return files;
    }

    /// <summary>Writes each difference the host did not give again as a case file; returns the paths.</summary>
    private static List<string> WriteTransientCases(FuzzCampaignResult result, KernelInfo info, string dir)
    {
        var files = new List<string>();
        if (result.Transients.Count == 0)
        {
            return files;
        }

        CreateFolder(dir);
        foreach (var t in result.Transients)
        {
            string file = Path.Combine(dir, $"kernel-seed{result.Options.Seed}-seq{t.Sequence}.transient.case");
            string note = $"not a finding: replay {t.AgreedOnReplay} of the same operations agreed with the model after every one (the host's own timing)";
            File.WriteAllText(file, Case(t.Found, result, info, t.Sequence, minimized: false, note).Format());
            files.Add(file);
        }

        return files;
    }

    private static void CreateFolder(string dir)
    {
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--out: cannot create '{dir}': {e.Message}");
        }
    }

    private static FuzzCase Case(FuzzSequence seq, FuzzCampaignResult result, KernelInfo info, int sequence, bool minimized, string? note = null)
    {
        var step = seq.Difference!;
        string how = $"ptlab fuzz kernel --seed {result.Options.Seed} --first {sequence} --sequences 1 --ops {result.Options.Ops}{(result.Options.Collapse ? " --collapse" : "")}";
        return FuzzCase.FromSequence(seq, result.Options.Design, result.MemTotalKb,
        [
            $"ptlab fuzz kernel case{(minimized ? ", minimized by delta debugging" : "")}: found by {how}",
            $"host: Linux {info.Release}; model design {result.Options.Design}",
            $"the last operation differs in {string.Join(", ", step.Differences)}; the model answered {FuzzText.FormatOutcome(step.Model, seq.Slot)}",
            .. note is null ? Array.Empty<string>() : [note],
        ], result.ReadAheadKb, result.Options.Collapse, info.ModelZeroPage, info.ExecOnlyPkey);
    }

    private static FuzzCase LoadCase(string file)
    {
        if (Directory.Exists(file))
        {
            throw new UsageException($"--replay: '{file}' is a directory, not a case file");
        }

        try
        {
            return FuzzCase.Load(file);
        }
        catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--replay: {e.Message}");
        }
    }

    private static int Replay(
        string file, FuzzCase c, string? design, bool host, bool minimize, bool record, string outDir, KernelInfo info, ReportOptions report, ParseResult p, TextWriter stdout)
    {
        // Without a host, the recorded answers are the only oracle: the case's own design and RAM.
        string d = design ?? (host ? info.MatchingDesign : c.Design) ?? info.MatchingDesign;
        using var fuzzer = host ? new KernelFuzzer(d, c.Collapse) : null;
        long memTotal = c.MemTotalKb ?? fuzzer?.MemTotalKb ?? throw new UsageException($"--replay: {file} gives no memtotal and no host kernel can tell it");
        var recorded = c.Steps.Any(s => s.Expected is not null) ? c.CheckOnModel(design ?? c.Design ?? d, memTotal) : [];
        var seq = fuzzer?.Replay(c.Ops, c.Slot);
        var diff = seq?.Difference;
        string? written = null, writtenMin = null;
        FuzzSequence? min = null;
        if (fuzzer is not null && seq is not null && (diff is not null || record))
        {
            // A replayed difference is written with the kernel's answers, and shrunk when asked.
            string stem = Path.Combine(outDir, Path.GetFileNameWithoutExtension(file));
            CreateFolder(outDir);
            written = stem + ".replay.case";
            File.WriteAllText(written, FuzzCase.FromSequence(seq, d, fuzzer.MemTotalKb, [.. c.Comments], fuzzer.ReadAheadKb, c.Collapse, fuzzer.ZeroPage, KernelFuzzer.ExecOnlyPkey).Format());
            if (minimize && diff is not null)
            {
                (min, int replays) = Minimizer.Minimize(fuzzer, seq);
                writtenMin = stem + ".min.case";
                File.WriteAllText(writtenMin, FuzzCase.FromSequence(min, d, fuzzer.MemTotalKb, [$"{Path.GetFileName(file)} minimized by delta debugging ({replays} replays)", .. c.Comments], fuzzer.ReadAheadKb, c.Collapse, fuzzer.ZeroPage, KernelFuzzer.ExecOnlyPkey).Format());
            }
        }

        report.Write(
            p,
            stdout,
            () => ReportJson.Serialize(new
            {
                file,
                design = d,
                hostKernel = host,
                operations = seq?.Steps.Count ?? c.Steps.Count,
                difference = diff is null ? null : DifferenceJson(seq!),
                caseFile = written,
                minimized = min is null ? null : DifferenceJson(min),
                minimizedCaseFile = writtenMin,
                modelAgainstRecorded = recorded,
            }),
            null,
            w =>
            {
                w.WriteLine($"{file}: {Human.Plural(seq?.Steps.Count ?? c.Steps.Count, "operation")} replayed " +
                            (host ? $"on the host kernel and on {d}" : $"on {d} against the recorded kernel answers"));
                if (seq is null)
                {
                    w.WriteLine(recorded.Count == 0 ? "the model gives every recorded kernel answer" : "the model differs from the recorded kernel answers:");
                }
                else if (diff is null)
                {
                    w.WriteLine("kernel and model agree after every operation" + (written is null ? "" : $"; recorded in {written}"));
                }
                else
                {
                    WriteDifference(seq!, w);
                    w.WriteLine($"case file: {written}");
                    if (min is not null)
                    {
                        w.WriteLine($"minimized to {Human.Plural(min.Steps.Count, "operation")}: {writtenMin}");
                        WriteDifference(min, w);
                    }
                }

                foreach (var line in recorded)
                {
                    w.WriteLine("against the recorded kernel answer: " + line);
                }
            });
        return diff is null && recorded.Count == 0 ? Cli.ExitOk : Cli.ExitFailure;
    }

    private static void WriteTable(
        FuzzCampaignResult r, KernelInfo info, List<(string Found, string? Minimized)> files, List<string> transientFiles, IReadOnlyList<Kdamond> damon, TextWriter w)
    {
        double secs = r.Wall.TotalSeconds;
        w.WriteLine($"ptlab fuzz kernel: Linux {info.Release}, model design {r.Options.Design}{(r.Options.Collapse ? " (collapse mode)" : "")}, slot {FuzzText.Hex(r.Slot)}, seed {r.Options.Seed}");
        w.WriteLine(
            $"{Human.Plural(r.Sequences, "sequence")}, {Human.Plural(r.Operations, "operation")}, {Human.Plural(r.Findings.Count, "difference")}" +
            (r.Transients.Count > 0 ? $" (and {r.Transients.Count} that a replay did not give again)" : "") + ", " +
            $"{Human.Seconds(secs)} wall ({Human.Count((long)(r.Operations / Math.Max(secs, 1e-9)))} operations/s; " +
            $"kernel side {Human.Seconds(r.KernelTime.TotalSeconds)}, model {Human.Seconds(r.ModelTime.TotalSeconds)})");
        w.WriteLine();
        w.WriteLine("operation kinds and the kernel's answers:");
        foreach (var (key, labels) in r.Coverage)
        {
            w.WriteLine($"  {key,-28} {string.Join(", ", labels.Select(l => $"{l.Key} {Human.Count(l.Value)}"))}");
        }

        for (int i = 0; i < r.Findings.Count; i++)
        {
            var f = r.Findings[i];
            w.WriteLine();
            w.WriteLine($"DIFFERENCE in sequence {f.Sequence} (generator seed {FuzzCampaign.SequenceSeed(r.Options.Seed, f.Sequence)}):");
            WriteDifference(f.Found, w);
            w.WriteLine($"case file: {files[i].Found}");
            if (f.Minimized is { } m)
            {
                w.WriteLine($"minimized to {m.Steps.Count} operations ({f.Replays} replays): {files[i].Minimized}");
                WriteDifference(m, w);
            }
        }

        if (r.Transients.Count == 0)
        {
            return;
        }

        w.WriteLine();
        w.WriteLine("the host's own timing (a replay of the same operations agreed with the model after every one, so these are not findings):");
        for (int i = 0; i < r.Transients.Count; i++)
        {
            var t = r.Transients[i];
            var last = t.Found.Difference!;
            w.WriteLine($"  sequence {t.Sequence}, operation {t.Found.Steps.Count} ({last.Op.Format(t.Found.Slot)}): {string.Join(", ", last.Differences)}; " +
                        $"kernel {Short(last.Kernel, t.Found.Slot)}, model {Short(last.Model, t.Found.Slot)}; replay {t.AgreedOnReplay} agreed; {transientFiles[i]}");
        }

        var aging = damon.Where(k => k.TouchesEveryProcess).ToList();
        w.WriteLine(aging.Count > 0
            ? $"  this host runs DAMON on all of memory: {string.Join("; ", aging)}. Between any two operations it moves the accessed bit " +
              "of the PTEs mapping the pages it samples into the folios' young flags (which MADV_PAGEOUT clears, though it leaves young PTEs), and a pageout " +
              "scheme clears those flags and reclaims page cache"
            : "  no DAMON worker runs on this host; kswapd's reclaim and other tasks' LRU drains are what else changes a process's pages");
    }

    private static void WriteDifference(FuzzSequence seq, TextWriter w)
    {
        var last = seq.Difference!;
        w.WriteLine($"  operation {seq.Steps.Count} differs in {string.Join(", ", last.Differences)}");
        int width = Math.Min(90, seq.Steps.Max(s => s.Op.Format(seq.Slot).Length));
        for (int i = 0; i < seq.Steps.Count; i++)
        {
            var s = seq.Steps[i];
            string k = Short(s.Kernel, seq.Slot), m = Short(s.Model, seq.Slot);
            w.WriteLine($"  {i + 1,5} {s.Op.Format(seq.Slot).PadRight(width)}  kernel {k}{(k == m ? "" : "  model " + m)}");
        }

        w.WriteLine("  kernel layout: " + Layout(last.Kernel, seq.Slot));
        w.WriteLine("  model layout:  " + Layout(last.Model, seq.Slot));
    }

    private static string Short(OpOutcome o, ulong slot) => FuzzText.FormatOutcome(o with { Layout = null }, slot);

    private static string Layout(OpOutcome o, ulong slot) =>
        o.Layout is { Count: > 0 } l ? string.Join(' ', l.Select(v => FuzzText.FormatVma(v, slot))) : "(no VMA)";

    private static object DifferenceJson(FuzzSequence seq) => new
    {
        operation = seq.Steps.Count,
        aspects = seq.Difference!.Differences,
        ops = seq.Steps.Select(s => new
        {
            op = s.Op.Format(seq.Slot),
            kernel = FuzzText.FormatOutcome(s.Kernel, seq.Slot),
            model = FuzzText.FormatOutcome(s.Model, seq.Slot),
        }).ToArray(),
    };

    private static string Json(
        FuzzCampaignResult r, KernelInfo info, List<(string Found, string? Minimized)> files, List<string> transientFiles, IReadOnlyList<Kdamond> damon) =>
        ReportJson.Serialize(new
        {
            kernel = info.Release,
            design = r.Options.Design,
            collapse = r.Options.Collapse,
            seed = r.Options.Seed,
            slot = FuzzText.Hex(r.Slot),
            sequences = r.Sequences,
            operations = r.Operations,
            differences = r.Findings.Count,
            wallSeconds = Math.Round(r.Wall.TotalSeconds, 3),
            operationsPerSecond = Math.Round(r.Operations / Math.Max(r.Wall.TotalSeconds, 1e-9)),
            kernelSeconds = Math.Round(r.KernelTime.TotalSeconds, 3),
            modelSeconds = Math.Round(r.ModelTime.TotalSeconds, 3),
            executorRestarts = r.Restarts,
            coverage = r.Coverage,
            findings = r.Findings.Select((f, i) => new
            {
                sequence = f.Sequence,
                generatorSeed = FuzzCampaign.SequenceSeed(r.Options.Seed, f.Sequence),
                found = DifferenceJson(f.Found),
                caseFile = files[i].Found,
                minimized = f.Minimized is null ? null : DifferenceJson(f.Minimized),
                minimizedCaseFile = files[i].Minimized,
                replays = f.Replays,
            }).ToArray(),
            rechecks = r.Options.Rechecks,
            hostTiming = r.Transients.Select((t, i) => new
            {
                sequence = t.Sequence,
                generatorSeed = FuzzCampaign.SequenceSeed(r.Options.Seed, t.Sequence),
                found = DifferenceJson(t.Found),
                agreedOnReplay = t.AgreedOnReplay,
                caseFile = transientFiles[i],
            }).ToArray(),
            kdamonds = damon.Select(k => k.ToString()).ToArray(),
        });
}
