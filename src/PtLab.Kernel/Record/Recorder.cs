using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using PtLab.Traces;

namespace PtLab.Kernel.Record;

/// <summary>What <c>ptlab record</c> records.</summary>
public sealed record RecordOptions
{
    /// <summary>The trace file to write.</summary>
    public required string Output { get; init; }

    /// <summary>The command to run (empty when attaching).</summary>
    public IReadOnlyList<string> Command { get; init; } = [];

    /// <summary>The process to attach to instead of running a command.</summary>
    public int? AttachPid { get; init; }

    /// <summary>How long to stay attached; null: until the process exits (or Ctrl-C).</summary>
    public TimeSpan? Duration { get; init; }

    /// <summary>The interval of the periodic /proc/PID/status samples.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Keep perf.data and the tracer's samples next to the trace (OUTPUT.perf.data, OUTPUT.samples).</summary>
    public bool KeepPerfData { get; init; }

    /// <summary>Send the command's standard output to this file instead of ptlab's.</summary>
    public string? CommandStdout { get; init; }

    /// <summary>perf's per-CPU buffer (<c>-m</c>).</summary>
    public string PerfBuffer { get; init; } = "8M";
}

/// <summary>What a recording produced.</summary>
public sealed record RecordResult(string TracePath, int ExitCode, TraceMetadata Metadata, PerfImportStats Import, long Rows, long DroppedSamples);

/// <summary>A recording cannot be made here (no perf, no permission, no tracefs, no compiler): the message says what to install or change.</summary>
public sealed class RecordException(string message) : Exception(message);

/// <summary>
/// <c>ptlab record</c>: runs <c>perf record</c> with the address-space tracepoints over the ptrace
/// tracer (Record/tracer.c), which runs the command (or attaches to a process) and samples
/// /proc/PID/status of every process of the tree; then converts perf's data with
/// <c>perf script</c> and merges both into one trace file.
/// </summary>
public static class Recorder
{
    /// <summary>Tracepoints a recording cannot do without.</summary>
    internal static readonly string[] RequiredEvents =
    [
        "exceptions:page_fault_user", "syscalls:sys_enter_mmap", "syscalls:sys_exit_mmap",
        "syscalls:sys_enter_munmap", "syscalls:sys_exit_munmap", "syscalls:sys_enter_madvise", "syscalls:sys_exit_madvise",
    ];

    /// <summary>The tracepoint of the signals the kernel answers faults with (<c>force_sig_fault</c>).</summary>
    private const string SignalEvent = "signal:signal_generate";

    /// <summary>Every tracepoint recorded, when the kernel has it.</summary>
    internal static IReadOnlyList<string> Events { get; } = BuildEvents();

    private static List<string> BuildEvents()
    {
        var events = new List<string> { "exceptions:page_fault_user", "exceptions:page_fault_kernel" };
        foreach (string call in new[] { "mmap", "munmap", "mremap", "madvise", "process_madvise", "mprotect", "brk", "mlock", "mlock2", "munlock", "mlockall", "munlockall", "shmat", "shmdt", "mseal" })
        {
            events.Add("syscalls:sys_enter_" + call);
            events.Add("syscalls:sys_exit_" + call);
        }

        events.AddRange(["syscalls:sys_enter_exit", "syscalls:sys_enter_exit_group", "task:task_newtask", "sched:sched_process_exec", "sched:sched_process_exit", SignalEvent]);
        return events;
    }

    /// <summary>Where the kernel's tracepoints are listed, or null when tracefs is not mounted (perf mounts it when it can).</summary>
    internal static string? TracefsEvents() =>
        new[] { "/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events" }.FirstOrDefault(Directory.Exists);

    /// <summary>Checks that a recording can run here; returns perf's version.</summary>
    /// <exception cref="RecordException">It cannot; the message says what to install or change.</exception>
    public static string CheckPrerequisites(bool attach, string perf = "perf")
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new RecordException("ptlab record needs Linux (perf and ptrace)");
        }

        string version;
        try
        {
            var (code, stdout, _) = Run(perf, ["--version"], TimeSpan.FromSeconds(30));
            if (code != 0)
            {
                throw new RecordException("'perf --version' failed: install perf for this kernel (Debian: apt-get install linux-perf; Ubuntu: linux-tools-$(uname -r))");
            }

            version = stdout.Trim();
        }
        catch (Win32Exception)
        {
            throw new RecordException("perf is not installed: install it (Debian: apt-get install linux-perf; Ubuntu: apt-get install linux-tools-$(uname -r); Fedora: dnf install perf)");
        }

        bool root = LibC.Geteuid() == 0;
        if (!root)
        {
            string paranoid = ReadOr("/proc/sys/kernel/perf_event_paranoid", "2").Trim();
            if (!int.TryParse(paranoid, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int level) || level > -1)
            {
                throw new RecordException(
                    $"no permission to record tracepoints: kernel.perf_event_paranoid is {paranoid}; run as root, or set it to -1 (sysctl -w kernel.perf_event_paranoid=-1) and make tracefs readable");
            }

            if (TracefsEvents() is null)
            {
                throw new RecordException("tracefs is not mounted and only root can mount it: mount -t tracefs nodev /sys/kernel/tracing (as root), or run ptlab record as root");
            }

            if (attach && ReadOr("/proc/sys/kernel/yama/ptrace_scope", "0").Trim() is not "0")
            {
                throw new RecordException("no permission to attach: kernel.yama.ptrace_scope forbids ptrace of a process that is not your child; run as root or set it to 0");
            }
        }

        if (TracefsEvents() is { } events)
        {
            foreach (string required in RequiredEvents)
            {
                if (!Directory.Exists(Path.Combine(events, required.Replace(':', '/'))))
                {
                    throw new RecordException($"this kernel has no tracepoint {required} (in {events}): it needs CONFIG_FTRACE_SYSCALLS and x86's exceptions tracepoints");
                }
            }
        }

        if (!NativeBuild.IsAvailable(out string reason))
        {
            throw new RecordException($"ptlab record builds its ptrace tracer from source: {reason}");
        }

        return version;
    }

    /// <summary>Records, and returns the command's exit code (128 + signal when a signal killed it).</summary>
    /// <exception cref="RecordException">The recording could not be made here.</exception>
    public static RecordResult Run(RecordOptions options, TextWriter log, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(options);
        bool attach = options.AttachPid is not null;
        if (!attach && options.Command.Count == 0)
        {
            throw new ArgumentException("no command to record", nameof(options));
        }

        string perfVersion = CheckPrerequisites(attach);
        string tracer;
        try
        {
            tracer = NativeBuild.BuildEmbedded(typeof(Recorder).Assembly, "Record.tracer.c", "ptlab-tracer");
        }
        catch (NativeBuildException e)
        {
            throw new RecordException(e.Message);
        }

        string output = Path.GetFullPath(options.Output);
        string work = options.KeepPerfData ? Path.GetDirectoryName(output)! : Directory.CreateTempSubdirectory("ptlab-record-").FullName;
        string data = options.KeepPerfData ? output + ".perf.data" : Path.Combine(work, "perf.data");
        string samples = options.KeepPerfData ? output + ".samples" : Path.Combine(work, "samples");
        string perfLog = options.KeepPerfData ? output + ".perf.log" : Path.Combine(work, "perf.log");
        try
        {
            bool interrupted = RunPerf(options, tracer, data, samples, perfLog, log, cancel);
            var tracerOut = File.Exists(samples) ? TracerOutput.Read(samples) : null;
            if (tracerOut is null || tracerOut.TracerPid == 0)
            {
                throw new RecordException(interrupted ? "interrupted before the command started: no trace written" : PerfFailure(perfLog));
            }

            if (tracerOut.StartError is { } startError)
            {
                throw new RecordException(startError);
            }

            if (tracerOut.RootPid == 0)
            {
                throw new RecordException($"the tracer did not start: {string.Join("; ", tracerOut.Errors)}");
            }

            // perf ends its workload, the tracer, with SIGTERM once an attached process is gone:
            // after that process's exit the recording is whole.
            bool cut = tracerOut.Interrupted && !(attach && tracerOut.RootExitStatus is not null);

            // Ctrl-C once the command had exited stops the processes it left running: the
            // command's own recording is whole, and theirs ends where they were stopped.
            bool whole = !attach && tracerOut.CommandWhole;
            return Convert(options, output, data, tracerOut, perfVersion, (interrupted || cut) && !whole, log);
        }
        finally
        {
            if (!options.KeepPerfData)
            {
                Directory.Delete(work, recursive: true);
            }
        }
    }

    private static bool RunPerf(RecordOptions options, string tracer, string data, string samples, string perfLog, TextWriter log, CancellationToken cancel)
    {
        var args = new List<string> { "-c", "exec 3>&2 2>\"$0\"; exec \"$@\"", perfLog, "perf", "record", "-q", "-d", "-k", "CLOCK_MONOTONIC", "-m", options.PerfBuffer, "-o", data };
        string? events = TracefsEvents();
        foreach (string e in Events)
        {
            if (events is not null && !Directory.Exists(Path.Combine(events, e.Replace(':', '/'))))
            {
                continue; // an optional tracepoint this kernel lacks (process_madvise before 5.10)
            }

            args.Add("-e");
            args.Add(e);
            if (e == "exceptions:page_fault_kernel")
            {
                args.Add("--filter");
                args.Add($"address < 0x{PerfScriptImporter.UserAddressLimit:x}");
            }
            else if (e == SignalEvent)
            {
                // Only the kernel's answers to faults matter: SIGSEGV and SIGBUS with a positive si_code.
                args.Add("--filter");
                args.Add($"(sig == {TraceKinds.SigSegv} || sig == {TraceKinds.SigBus}) && code > 0");
            }
        }

        string interval = ((int)Math.Max(1, options.Interval.TotalMilliseconds)).ToString(CultureInfo.InvariantCulture);
        if (options.AttachPid is int pid)
        {
            string duration = ((long)(options.Duration?.TotalMilliseconds ?? 0)).ToString(CultureInfo.InvariantCulture);
            args.AddRange(["-p", pid.ToString(CultureInfo.InvariantCulture), "--", tracer, samples, interval, "attach", pid.ToString(CultureInfo.InvariantCulture), duration]);
        }
        else
        {
            args.AddRange(["--", tracer, "-e", "3"]);
            if (options.CommandStdout is { } stdout)
            {
                args.AddRange(["-o", Path.GetFullPath(stdout)]);
            }

            args.AddRange([samples, interval, "exec", .. options.Command]);
        }

        var psi = new ProcessStartInfo("sh") { UseShellExecute = false };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var perf = Process.Start(psi) ?? throw new RecordException("could not start sh to run perf");
        bool interrupted = false;
        using (cancel.Register(() =>
        {
            interrupted = true;
            // Interrupt the tracer, which passes SIGINT on to the command if the terminal has not: the
            // command ends as it would on Ctrl-C, and perf records up to the end. perf may still be
            // starting (seconds on a loaded machine): wait for the tracer's header a while.
            _ = Task.Run(async () =>
            {
                try
                {
                    await InterruptWhenStarted();
                }
                catch (InvalidOperationException)
                {
                    // perf ended (and was disposed) meanwhile: nothing left to interrupt.
                }
            });
        }))
        {
            // The tracer says when the command has exited and left processes running (the
            // recording goes on until they exit), and when a process of the tree tried to trace
            // one (the call failed, and the program runs differently): the user should know.
            long offset = 0;
            bool said = false;
            var tracers = new HashSet<int>();
            bool exited;
            do
            {
                exited = perf.WaitForExit(500);
                var (daemons, refused) = TracerOutput.ReadLiveNotices(samples, ref offset);
                if (!said && daemons is not null && !exited)
                {
                    said = true;
                    log.WriteLine($"ptlab: the command has exited; it left {daemons.Count} process(es) running (a daemon, a background job or a build server): {string.Join(", ", daemons.Select(Describe))}. " +
                        "The recording follows them to their exit (a process of the tree cannot be let go); Ctrl-C ends it now and stops them, and the command's recording stays whole.");
                }

                foreach (var r in refused.Where(r => tracers.Add(r.Pid)))
                {
                    log.WriteLine(PtraceNotice(r, Describe(r.Pid)));
                }
            }
            while (!exited);

            perf.WaitForExit();
        }

        static string PtraceNotice(PtraceRefusal r, string who) =>
            $"ptlab: process {who} could not trace {(r.Request == 0 ? "itself for its parent" : $"process {r.Target}")} ({r.RequestName}): " +
            "every process of the recording is traced by the recorder, and a process has one tracer, so the kernel refused the call (EPERM) and the program runs differently from how it would alone. " +
            "A debugger, a tracer or LeakSanitizer cannot work inside a recording: record the program it would trace on its own, or attach to it with `ptlab record -p PID`.";

        static string Describe(int pid)
        {
            try
            {
                return $"{pid} ({File.ReadAllText($"/proc/{pid}/comm").Trim()})";
            }
            catch (IOException)
            {
                return pid.ToString(CultureInfo.InvariantCulture);
            }
        }

        async Task InterruptWhenStarted()
        {
            for (int i = 0; i < 200 && !perf.HasExited; i++)
            {
                var (tracerPid, _) = TracerOutput.ReadHeader(samples);
                if (tracerPid > 0)
                {
                    LibC.Kill(tracerPid, LibC.SIGINT);
                    return;
                }

                await Task.Delay(50);
            }

            if (!perf.HasExited)
            {
                LibC.Kill(perf.Id, LibC.SIGINT);
            }
        }

        return interrupted;
    }

    /// <summary>
    /// The rows whose effect an attached recording's layout, read with every thread stopped,
    /// already holds when perf stamped them before that moment: faults, the kernel's answers to
    /// them, and the calls and mapping records that change the address space. Never dropped: task,
    /// exec and exit rows, samples, layouts (vma, resident, page_tables), the page cache and lost counts.
    /// </summary>
    internal static bool ChangesTheAddressSpace(TraceEventKind kind) => kind is
        TraceEventKind.Fault or TraceEventKind.KernelFault or TraceEventKind.Signal or
        TraceEventKind.Mmap or TraceEventKind.Mmap2 or TraceEventKind.Munmap or TraceEventKind.Mremap or
        TraceEventKind.Madvise or TraceEventKind.ProcessMadvise or TraceEventKind.MadviseRange or TraceEventKind.Mprotect or
        TraceEventKind.Brk or TraceEventKind.Mlock or TraceEventKind.Mlock2 or TraceEventKind.Munlock or
        TraceEventKind.Mlockall or TraceEventKind.Munlockall or TraceEventKind.Shmat or TraceEventKind.Shmdt;

    private static RecordResult Convert(RecordOptions options, string output, string data, TracerOutput tracer, string perfVersion, bool truncated, TextWriter log)
    {
        bool attach = options.AttachPid is not null;
        var psi = new ProcessStartInfo("perf")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in new[] { "script", "-i", data, "--ns", "--show-task-events", "--show-mmap-events", "--show-lost-events", "-F", "comm,pid,tid,cpu,time,event,trace" })
        {
            psi.ArgumentList.Add(a);
        }

        using var script = Process.Start(psi) ?? throw new RecordException("could not start perf script");
        var stderr = script.StandardError.ReadToEndAsync();
        var importer = new PerfScriptImporter(script.StandardOutput, "perf script of " + data, new PerfImportOptions
        {
            Attached = attach,
            Truncated = truncated,
            DropPid = tracer.TracerPid,
            RootPid = attach ? null : tracer.RootPid,
            StartTimeNs = attach ? Math.Min(tracer.AttachMomentNs, tracer.Rows.Count > 0 ? tracer.Rows.Min(r => r.TimeNs) : long.MaxValue) : null,
        });

        long droppedSamples = 0;
        var merge = new TraceValidator(admitUnknownTasks: false, allowUnfinished: true);
        using var writer = TraceWriter.Create(output);
        int next = 0;
        var samples = tracer.Rows;

        // The devices of the mapped files, whose file systems the metadata describes.
        var devices = new HashSet<DeviceNumber>();
        void NoteDevice(in TraceEvent e)
        {
            if (e.Kind is TraceEventKind.Mmap2 or TraceEventKind.Vma or TraceEventKind.FileCache && e.Inode != 0 && DeviceNumber.TryParse(e.Dev, out var dev))
            {
                devices.Add(dev);
            }
        }

        // The files the tree maps, by the identities their mapping and residency rows give them,
        // to which the page-cache changes the tracer read (filtered by inode number only) are
        // matched; a change of another file is dropped.
        var fsTypes = new Dictionary<DeviceNumber, string?>();
        var keys = new FileKeys(d =>
        {
            if (!fsTypes.TryGetValue(d, out var type))
            {
                fsTypes[d] = type = FileSystemProbe.For([d]).TryGetValue(d, out var fact) ? fact.Type : null;
            }

            return type;
        });
        long changesDropped = 0;
        void NoteFile(in TraceEvent e)
        {
            if (e.Kind is TraceEventKind.Mmap2 or TraceEventKind.Vma or TraceEventKind.FileCache && e.Inode != 0 && DeviceNumber.TryParse(e.Dev, out var dev))
            {
                keys.Add(dev, e.Inode);
            }
        }

        void AppendSample(TraceEvent s)
        {
            if (TraceKinds.IsPageCacheChange(s.Kind))
            {
                if (!DeviceNumber.TryParse(s.Dev, out var dev) || !keys.TryResolve(dev, s.Inode, out _) || merge.Check(s) is not null)
                {
                    changesDropped++;
                    return;
                }

                writer.Append(s);
                return;
            }

            // A sample names the thread the tracer read it through; if perf already saw that thread
            // exit, any live thread of the process stands for it (the sample is of the mm).
            if (!merge.IsLive(s.Pid, s.Tid))
            {
                int other = merge.AnyThreadOf(s.Pid);
                if (other == 0 || s.Kind is TraceEventKind.StatusExit)
                {
                    droppedSamples++;
                    return;
                }

                s = s with { Tid = other };
            }

            if (s.Kind is TraceEventKind.Vma or TraceEventKind.VmaSealed && !merge.IsLive(s.Pid, s.Pid))
            {
                droppedSamples++;
                return;
            }

            if (merge.Check(s) is not null)
            {
                droppedSamples++;
                return;
            }

            NoteDevice(s);
            NoteFile(s);
            writer.Append(s);
        }

        long withRanges = 0, withoutRanges = 0, unmatched = 0;

        // The ranges the tracer read at the call's entry (before its sys_enter event) go right before
        // perf's row of the call, which has the same arguments; a call perf lost leaves its ranges unused.
        IEnumerable<TraceEvent> RangesOf(TraceEvent call)
        {
            if (tracer.ProcessMadviseCalls.TryGetValue(call.Tid, out var queue))
            {
                while (queue.Count > 0 && queue.Peek().TimeNs <= call.TimeNs)
                {
                    var seen = queue.Dequeue();
                    if (seen.Matches(call))
                    {
                        withRanges += seen.Ranges.Length > 0 ? 1 : 0;
                        return seen.Rows(call);
                    }

                    unmatched++;
                }
            }

            withoutRanges += call.Length > 0 && tracer.ProcessMadviseRanges ? 1 : 0;
            return [];
        }

        long beforeLayout = 0;
        try
        {
            foreach (var imported in importer.Read())
            {
                var e = imported.Event;
                if (attach && e.TimeNs < tracer.AttachMomentNs && ChangesTheAddressSpace(e.Kind))
                {
                    // Attached: perf starts before the tracer stops the threads and reads the
                    // layout, and what happened in between is already in that layout.
                    beforeLayout++;
                    continue;
                }

                while (next < samples.Count && samples[next].TimeNs < e.TimeNs)
                {
                    AppendSample(samples[next++]);
                }

                if (e.Kind == TraceEventKind.ProcessMadvise)
                {
                    foreach (var range in RangesOf(e))
                    {
                        if (merge.Check(range) is { } bad)
                        {
                            throw new TraceFormatException($"{imported.Line}: the process_madvise ranges the tracer read: {bad}");
                        }

                        writer.Append(range);
                    }
                }

                if (merge.Check(e) is { } error)
                {
                    throw new TraceFormatException($"{imported.Line}: {error}");
                }

                NoteDevice(e);
                NoteFile(e);
                writer.Append(e);
            }

            while (next < samples.Count)
            {
                AppendSample(samples[next++]);
            }
        }
        catch (TraceFormatException e)
        {
            script.Kill();
            throw new RecordException($"converting perf's data failed: {e.Message}");
        }

        script.WaitForExit();
        string scriptErrors = stderr.Result;
        if (script.ExitCode != 0)
        {
            throw new RecordException($"perf script failed ({script.ExitCode}): {FirstLines(scriptErrors)}");
        }

        long lost = importer.Stats.LostEvents;
        var notes = importer.Stats.ToNotes();
        notes["dropped_samples"] = droppedSamples.ToString(CultureInfo.InvariantCulture);
        if (tracer.DaemonsLeft.Count > 0)
        {
            notes[tracer.Interrupted && tracer.CommandWhole ? "daemons_stopped" : "daemons_followed"] = string.Join(' ', tracer.DaemonsLeft);
        }

        if (tracer.PtraceRefused.Count > 0)
        {
            notes["ptrace_refused"] = string.Join(' ', tracer.PtraceRefused.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Pid}:{r.RequestName}:{r.Target}")));
        }

        if (attach)
        {
            notes["attach_events_before_layout"] = beforeLayout.ToString(CultureInfo.InvariantCulture);
            notes["attach_resident_ranges"] = tracer.ResidentRanges.ToString(CultureInfo.InvariantCulture);
            notes[TraceMetadata.AttachSwappedPagesNote] = tracer.SwappedPages.ToString(CultureInfo.InvariantCulture);
            notes["attach_page_table_ranges"] = tracer.PageTableRanges.ToString(CultureInfo.InvariantCulture);
            if (tracer.PageTablesOff is { } tablesOff && tracer.ResidentOff is null)
            {
                notes["attach_page_tables_off"] = tablesOff;
            }
            if (tracer.ResidentOff is { } off)
            {
                notes["attach_resident_off"] = off;
                log.WriteLine($"ptlab: the pages the process had at the attach are not recorded ({off}): the replay starts with no page tables");
            }
        }
        if (tracer.ProcessMadviseCallCount > 0 || withoutRanges > 0)
        {
            notes["process_madvise_with_ranges"] = withRanges.ToString(CultureInfo.InvariantCulture);
            notes["process_madvise_without_ranges"] = withoutRanges.ToString(CultureInfo.InvariantCulture);
            notes["process_madvise_ranges_unmatched"] = (unmatched + tracer.ProcessMadviseCalls.Values.Sum(q => q.Count)).ToString(CultureInfo.InvariantCulture);
        }

        if (!tracer.ProcessMadviseRanges && !attach)
        {
            log.WriteLine($"ptlab: process_madvise ranges are not recorded ({tracer.ProcessMadviseRangesOff}): such calls will be counted, not replayed");
        }

        notes["page_cache_files"] = tracer.FileCacheRows.ToString(CultureInfo.InvariantCulture);
        if (tracer.PageCacheChanges)
        {
            // Changes the tracer read; of them, those of a mapped file (the rows) and the others
            // (another file with the same inode number, dropped); and those its rings lost.
            notes["page_cache_changes_read"] = tracer.PageCacheChangeRows.ToString(CultureInfo.InvariantCulture);
            notes["page_cache_changes_dropped"] = changesDropped.ToString(CultureInfo.InvariantCulture);
            notes["page_cache_changes_lost"] = tracer.PageCacheChangesLost.ToString(CultureInfo.InvariantCulture);
            if (keys.Fallbacks > 0)
            {
                notes["page_cache_changes_matched_by_inode"] = keys.Fallbacks.ToString(CultureInfo.InvariantCulture);
            }
        }
        else
        {
            notes["page_cache_changes_off"] = tracer.PageCacheChangesOff ?? "the tracer did not say";
            log.WriteLine($"ptlab: page-cache changes are not recorded ({tracer.PageCacheChangesOff ?? "the tracer did not say"}): the replay keeps each file's residency as it was when the file first appeared");
        }

        if (tracer.PageCacheChangesLost > 0)
        {
            log.WriteLine($"ptlab: {tracer.PageCacheChangesLost} page-cache changes were lost: the replay's page cache may differ from the host's");
        }

        if (tracer.FolioOrders == false)
        {
            notes["folio_orders_off"] = tracer.FolioOrdersOff ?? "";
            log.WriteLine($"ptlab: folio orders are not recorded ({tracer.FolioOrdersOff}): the page cache found at each file's first appearance replays in order-0 pages");
        }
        if (tracer.Errors.Count > 0)
        {
            notes["tracer_errors"] = string.Join("; ", tracer.Errors);
        }

        int? status = tracer.RootWaitStatus ?? (attach ? tracer.RootExitStatus : null);
        var metadata = new TraceMetadata
        {
            Source = attach ? "attach" : "record",
            Command = options.Command,
            RootPid = tracer.RootPid,
            ExitStatus = status,
            IntervalMs = (int)Math.Max(1, options.Interval.TotalMilliseconds),
            Truncated = truncated,
            Incomplete = lost > 0 || importer.AdmittedUnknownTasks || !writer.TasksComplete,
            LostEvents = lost,
            ProcessMadviseRanges = tracer.ProcessMadviseRanges && withoutRanges == 0,

            // The seccomp filter that stops process_madvise also stops each mmap of a descriptor,
            // where the tracer reads the file's residency; without it only the layouts' files have one.
            PageCache = tracer.ProcessMadviseRanges && !attach ? TraceMetadata.PageCacheMapped : TraceMetadata.PageCacheLayout,
            PageCacheChanges = tracer.PageCacheChanges ? TraceMetadata.PageCacheChangesRecorded : TraceMetadata.PageCacheChangesNone,
            FolioOrders = tracer.FolioOrders ?? false,
            Host = HostProbe.Facts(perfVersion),
            Notes = notes,
            FileSystems = FileSystemProbe.For(devices),
        };
        writer.Complete(metadata);
        if (lost > 0)
        {
            log.WriteLine($"ptlab: perf lost {lost} events: the trace is marked incomplete (a larger buffer, --perf-buffer, may help)");
        }

        return new RecordResult(output, ExitCode(status, truncated), metadata, importer.Stats, writer.Rows, droppedSamples);
    }

    /// <summary>The shell's convention: the exit code, or 128 + the signal that killed the command.</summary>
    public static int ExitCode(int? waitStatus, bool truncated)
    {
        if (waitStatus is not int s)
        {
            return truncated ? 130 : 0;
        }

        int signal = s & 0x7f;
        return signal == 0 ? (s >> 8) & 0xff : 128 + signal;
    }

    private static string PerfFailure(string perfLog)
    {
        string text = ReadOr(perfLog, "");
        if (text.Contains("perf_event_paranoid", StringComparison.Ordinal) || text.Contains("ermission", StringComparison.Ordinal))
        {
            return $"perf has no permission to record tracepoints: run as root or set kernel.perf_event_paranoid=-1 (perf said: {FirstLines(text)})";
        }

        if (text.Contains("tracefs", StringComparison.Ordinal) || text.Contains("debugfs", StringComparison.Ordinal) || text.Contains("trace events", StringComparison.Ordinal))
        {
            return $"perf cannot reach the kernel's trace events: mount tracefs (mount -t tracefs nodev /sys/kernel/tracing) (perf said: {FirstLines(text)})";
        }

        return $"perf record failed: {FirstLines(text)}";
    }

    private static string FirstLines(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Where(l => !l.StartsWith("[ perf record:", StringComparison.Ordinal)).Take(3);
        string joined = string.Join(" / ", lines);
        return joined.Length == 0 ? "(no message)" : joined;
    }

    private static string ReadOr(string path, string fallback)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return fallback;
        }
    }

    private static (int Code, string Out, string Err) Run(string file, string[] args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new Win32Exception($"could not start {file}");
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
        }

        return (p.ExitCode, o.Result, e.Result);
    }
}
