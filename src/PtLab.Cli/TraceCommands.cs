using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PtLab.Traces;

namespace PtLab.Cli;

/// <summary><c>ptlab trace info</c> and <c>ptlab trace import</c>.</summary>
internal static class TraceCommands
{
    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var trace = new Command("trace", "Inspect and make trace files (docs/trace-format.md).");
        trace.Subcommands.Add(Info(stdout));
        trace.Subcommands.Add(Import(stderr));
        return trace;
    }

    private static Command Info(TextWriter stdout)
    {
        var cmd = new Command("info", "Check a trace file row by row and print its counts per event kind, processes, duration, lost events, flags and host facts.");
        var file = new Argument<string>("file") { Description = "The trace file." };
        var format = new Option<string>("--format") { Description = "text or json.", DefaultValueFactory = _ => "text" };
        format.AcceptOnlyFromAmong("text", "json");
        cmd.Arguments.Add(file);
        cmd.Options.Add(format);
        cmd.SetAction(p =>
        {
            string path = p.GetValue(file)!;
            using var reader = Open(path);
            TraceSummary summary;
            try
            {
                summary = TraceSummary.Compute(reader);
            }
            catch (TraceFormatException e)
            {
                throw new UsageException(e.Message);
            }

            long bytes = new FileInfo(path).Length;
            if (p.GetValue(format) == "json")
            {
                stdout.WriteLine(Json(path, bytes, reader.Metadata, summary));
            }
            else
            {
                Text(stdout, path, bytes, reader.Metadata, summary);
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    private static Command Import(TextWriter stderr)
    {
        var cmd = new Command(
            "import",
            "Convert the text of 'perf script --ns --show-task-events --show-mmap-events --show-lost-events -F comm,pid,tid,cpu,time,event,trace' " +
            "(a perf record of the events docs/trace-format.md lists, made on another machine) into a trace file. It has no status samples or host facts.");
        var text = new Argument<string>("perf-script-text") { Description = "The perf script text file ('-' for standard input)." };
        var output = new Option<string>("--output", "-o") { Description = "The trace file to write.", Required = true };
        var attached = new Option<bool>("--attached") { Description = "perf record -p attached to running processes: syscalls may be cut at both ends." };
        var truncated = new Option<bool>("--truncated") { Description = "The recording stopped before the program ended: syscalls may be cut at the end." };
        cmd.Arguments.Add(text);
        cmd.Options.Add(output);
        cmd.Options.Add(attached);
        cmd.Options.Add(truncated);
        cmd.SetAction(p =>
        {
            string input = p.GetValue(text)!;
            string target = p.GetValue(output)!;
            if (input != "-" && Directory.Exists(input))
            {
                throw new UsageException($"{input}: a directory, not a perf script text file");
            }

            if (ReportOptions.WhyNotWritable(target) is { } why)
            {
                throw new UsageException(why);
            }

            TextReader reader;
            try
            {
                reader = input == "-" ? Console.In : new StreamReader(input);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"{input}: {e.Message}");
            }

            using (reader)
            {
                var options = new PerfImportOptions { Attached = p.GetValue(attached), Truncated = p.GetValue(truncated) };
                var importer = new PerfScriptImporter(reader, input, options);
                try
                {
                    using var writer = TraceWriter.Create(target);
                    foreach (var e in importer.Read())
                    {
                        writer.Append(e.Event);
                    }

                    writer.Complete(new TraceMetadata
                    {
                        Source = options.Attached ? "attach" : "import",
                        Truncated = options.Truncated,
                        Incomplete = importer.Stats.LostEvents > 0 || importer.AdmittedUnknownTasks || !writer.TasksComplete,
                        LostEvents = importer.Stats.LostEvents,
                        Notes = importer.Stats.ToNotes(),
                    });
                    stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"ptlab: imported {importer.Stats.Lines:N0} lines into {writer.Rows:N0} rows of {target} ({importer.Stats.Ignored:N0} lines of other events ignored, {importer.Stats.LostEvents:N0} events lost)"));
                }
                catch (TraceFormatException e)
                {
                    throw new UsageException(e.Message);
                }
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    internal static TraceReader Open(string path)
    {
        try
        {
            return TraceReader.Open(path);
        }
        catch (TraceFormatException e)
        {
            throw new UsageException(e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{path}: {e.Message}");
        }
    }

    private static void Text(TextWriter w, string path, long bytes, TraceMetadata m, TraceSummary s)
    {
        var ci = CultureInfo.InvariantCulture;
        w.WriteLine(string.Create(ci, $"trace     {path}: format version {m.Version}, {s.Rows:N0} rows, {bytes:N0} bytes ({(s.Rows == 0 ? 0 : (double)bytes / s.Rows):F2} B/row)"));
        w.WriteLine($"source    {m.Source}{(m.Command.Count > 0 ? ": " + string.Join(' ', m.Command) : "")}{(m.RootPid is { } r ? $" (root pid {r})" : "")}");
        w.WriteLine(string.Create(ci, $"duration  {(s.LastNs - s.FirstNs) / 1e9:F3} s ({TraceValidatorNs(s.FirstNs)} to {TraceValidatorNs(s.LastNs)}, CLOCK_MONOTONIC)"));
        string flags = (m.Truncated ? "truncated " : "") + (m.Incomplete ? "incomplete " : "");
        string ranges = m.ProcessMadviseRanges ? "; process_madvise ranges recorded" : "";
        w.WriteLine(string.Create(ci, $"flags     {(flags.Length == 0 ? "complete" : flags.Trim())}; lost events {m.LostEvents:N0}{ranges}{(m.ExitStatus is { } st ? $"; root exit status {Kernel.Record.Recorder.ExitCode(st, false)}" : "")}"));
        if (m.IntervalMs is { } iv)
        {
            w.WriteLine(string.Create(ci, $"samples   every {iv} ms"));
        }

        if (ProcessMadviseWarning(m, s.Counts[(int)TraceEventKind.ProcessMadvise]) is { } warning)
        {
            w.WriteLine($"warning   {warning}");
        }

        if (PageCacheWarning(m) is { } cache)
        {
            w.WriteLine($"warning   {cache}");
        }

        if (PageCacheChangesWarning(m) is { } changes)
        {
            w.WriteLine($"warning   {changes}");
        }

        if (FolioOrdersWarning(m) is { } orders)
        {
            w.WriteLine($"warning   {orders}");
        }

        w.WriteLine("host      " + (m.Host.Count == 0 ? "(not recorded)" : string.Join(", ", m.Host.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => $"{k.Key}={k.Value}"))));
        w.WriteLine("files on  " + (m.Version < 3 ? "(not recorded before format 3)" : m.FileSystems.Count == 0 ? "(none found)" : string.Join(", ", m.FileSystems.OrderBy(f => f.Key.ToString(), StringComparer.Ordinal).Select(f => $"{f.Key} {f.Value.Type}{(f.Value.ReadAheadKb is { } ra ? string.Create(ci, $" read_ahead_kb={ra}") : "")}"))));
        w.WriteLine();
        w.WriteLine("events");
        for (int k = 0; k < TraceKinds.Count; k++)
        {
            if (s.Counts[k] > 0)
            {
                w.WriteLine(string.Create(ci, $"  {TraceKinds.Name((TraceEventKind)k),-16}{s.Counts[k],14:N0}"));
            }
        }

        w.WriteLine();
        w.WriteLine(string.Create(ci, $"processes ({s.Processes.Count})"));
        w.WriteLine("  pid      threads        faults   syscalls  samples  vmas  peak VmPTE  exit VmPTE  exit  name");
        foreach (var p in s.Processes)
        {
            w.WriteLine(string.Create(ci,
                $"  {p.Pid,-8} {p.Threads,7} {p.Faults,13:N0} {p.Syscalls,10:N0} {p.Samples,8:N0} {p.InitialVmas,5} {p.PeakVmPteKb,8:N0} kB {(p.ExitVmPteKb is { } x ? $"{x,8:N0} kB" : "       -   ")} {(p.ExitStatus is { } es ? Kernel.Record.Recorder.ExitCode((int)es, false).ToString(ci) : "-"),5}  {p.Name}"));
        }

        if (m.Notes.Count > 0)
        {
            w.WriteLine();
            w.WriteLine("notes     " + string.Join(", ", m.Notes.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => $"{k.Key}={k.Value}")));
        }
    }

    /// <summary>What a trace with process_madvise calls but no ranges cannot replay, or null.</summary>
    internal static string? ProcessMadviseWarning(TraceMetadata m, long calls) =>
        calls == 0 || m.ProcessMadviseRanges ? null : string.Create(CultureInfo.InvariantCulture,
            $"{calls:N0} process_madvise calls without their ranges ({(m.Source == "attach" ? "an attached recording cannot capture them" : m.Source == "import" ? "perf records only the iovec's address" : "not captured by this recording")}): counted, not replayed");

    /// <summary>What a trace without the page-cache residency of (some of) its mapped files replays as cold, or null.</summary>
    internal static string? PageCacheWarning(TraceMetadata m) => m.PageCache switch
    {
        TraceMetadata.PageCacheMapped => null,
        TraceMetadata.PageCacheLayout => "page-cache residency recorded for the files of the initial layouts only (" +
            (m.Source == "attach" ? "an attached recording cannot stop the process's mmap calls" : "the seccomp filter was not installed") +
            "): files mapped later replay as cold (nothing cached when first mapped)",
        _ => "no page-cache residency recorded (" + (m.Version < 4 ? $"trace format {m.Version}" : m.Source == "import" ? "perf records none" : "not captured") +
            "): every mapped file replays as cold (nothing cached when first mapped), where the host's libraries and data files were likely cached",
    };

    /// <summary>What a trace with residency rows but without the changes after them cannot know, or null.</summary>
    internal static string? PageCacheChangesWarning(TraceMetadata m) =>
        m.PageCache == TraceMetadata.PageCacheNone || m.PageCacheChanges == TraceMetadata.PageCacheChangesRecorded ? null :
        "page-cache changes after each file first appeared are not recorded (" +
        (m.Version < 5 ? $"trace format {m.Version}" : m.Notes.TryGetValue("page_cache_changes_off", out var why) ? why : "no system-wide filemap tracepoints") +
        "): pages the program's read() or write(), other processes or reclaim added or removed are missed, so fault-around can map fewer or more pages than on the host";

    /// <summary>What a trace whose recorder could not read folio orders replays differently, or null.</summary>
    internal static string? FolioOrdersWarning(TraceMetadata m) =>
        m.FolioOrders != false || m.PageCache == TraceMetadata.PageCacheNone ? null :
        "folio orders of the page cache found at each file's first appearance were not recorded (" +
        (m.Notes.TryGetValue("folio_orders_off", out var why) && why.Length > 0 ? why : "no access to /proc/kpageflags") +
        "): those pages replay as order-0 folios, so fault-around and PMD mapping of large folios the host had are missed";

    private static string TraceValidatorNs(long ns) =>
        (ns / 1_000_000_000).ToString(CultureInfo.InvariantCulture) + "." + (ns % 1_000_000_000).ToString("D9", CultureInfo.InvariantCulture);

    private static string Json(string path, long bytes, TraceMetadata m, TraceSummary s) => JsonSerializer.Serialize(new
    {
        file = path,
        version = m.Version,
        fileSystems = m.FileSystems.ToDictionary(f => f.Key.ToString(), f => new { type = f.Value.Type, options = f.Value.Options, readAheadKb = f.Value.ReadAheadKb }),
        bytes,
        rows = s.Rows,
        source = m.Source,
        command = m.Command,
        rootPid = m.RootPid,
        exitStatus = m.ExitStatus,
        truncated = m.Truncated,
        incomplete = m.Incomplete,
        lostEvents = m.LostEvents,
        processMadviseRanges = m.ProcessMadviseRanges,
        pageCache = m.PageCache,
        pageCacheChanges = m.PageCacheChanges,
        folioOrders = m.FolioOrders,
        intervalMs = m.IntervalMs,
        durationNs = s.LastNs - s.FirstNs,
        firstNs = s.FirstNs,
        lastNs = s.LastNs,
        host = m.Host,
        notes = m.Notes,
        events = Enumerable.Range(0, TraceKinds.Count).Where(k => s.Counts[k] > 0).ToDictionary(k => TraceKinds.Name((TraceEventKind)k), k => s.Counts[k]),
        processes = s.Processes.Select(p => new
        {
            pid = p.Pid,
            name = p.Name,
            threads = p.Threads,
            faults = p.Faults,
            syscalls = p.Syscalls,
            samples = p.Samples,
            initialVmas = p.InitialVmas,
            peakVmPteKb = p.PeakVmPteKb,
            exitVmPteKb = p.ExitVmPteKb,
            exitStatus = p.ExitStatus,
        }),
    });
}
