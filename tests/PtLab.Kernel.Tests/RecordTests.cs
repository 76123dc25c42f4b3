using System.Globalization;
using PtLab.Kernel.Record;
using PtLab.Traces;

namespace PtLab.Kernel.Tests;

/// <summary>A fact that runs only where ptlab record can: Linux x86-64 with perf, the permission to use it, and gcc.</summary>
public sealed class RecordFactAttribute : FactAttribute
{
    public RecordFactAttribute()
    {
        if (!KernelTarget.IsSupported)
        {
            Skip = "needs Linux on x86-64: this test records a program with perf";
            return;
        }

        try
        {
            Recorder.CheckPrerequisites(attach: true);
        }
        catch (RecordException e)
        {
            Skip = "cannot record here: " + e.Message;
        }
    }
}

/// <summary>
/// Records the test programs (tests/Programs) and checks each trace against what the program did
/// and printed: its madvise calls, threads, processes, and its own last /proc/self/status VmPTE,
/// which the trace's exit sample must equal.
/// </summary>
public sealed class RecordTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-record-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed record Recording(RecordResult Result, List<TraceEvent> Rows, TraceMetadata Metadata, string Stdout)
    {
        public int Count(TraceEventKind kind) => Rows.Count(e => e.Kind == kind);

        /// <summary>The figure the program printed as "TAG Field: N kB".</summary>
        public List<long> Printed(string tag, string field) =>
            [.. Stdout.Split('\n').Where(l => l.StartsWith(tag + " " + field + ":", StringComparison.Ordinal))
                  .Select(l => long.Parse(l.Split(':')[1].Trim().Split(' ')[0], CultureInfo.InvariantCulture))];

        public TraceEvent LastExitSample(int pid) => Rows.Last(e => e.Kind == TraceEventKind.StatusExit && e.Pid == pid);
    }

    private Recording Record(string program, params string[] args)
    {
        string exe = TestPrograms.Build(program);
        string trace = Path.Combine(_dir, program + ".parquet");
        string stdout = Path.Combine(_dir, program + ".out");
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = [exe, .. args], CommandStdout = stdout, Interval = TimeSpan.FromMilliseconds(20) }, TextWriter.Null, default);
        using var reader = TraceReader.Open(trace);
        var rows = reader.ReadEvents().ToList();
        return new Recording(result, rows, reader.Metadata, File.ReadAllText(stdout));
    }

    private static void ExitSampleIsTheProgramsLastVmPte(Recording r, string tag = "end")
    {
        int root = r.Metadata.RootPid!.Value;
        long printed = Assert.Single(r.Printed(tag, "VmPTE"));
        Assert.Equal(printed, r.LastExitSample(root).Status.VmPteKb);
    }

    private static void IsACompleteRecordingOfOneProgram(Recording r)
    {
        Assert.Equal(0, r.Result.ExitCode);
        Assert.False(r.Metadata.Truncated);
        Assert.False(r.Metadata.Incomplete);
        Assert.Equal(0, r.Result.DroppedSamples);
        int root = r.Metadata.RootPid!.Value;
        Assert.Equal(TraceEventKind.Task, r.Rows[0].Kind);
        Assert.Equal(TraceEventKind.Exec, r.Rows[1].Kind);
        // Every row is of a task, but perf's lost counts and the page cache's changes.
        Assert.All(r.Rows.Where(e => e.Kind != TraceEventKind.Lost && !TraceKinds.IsPageCacheChange(e.Kind)), e => Assert.NotEqual(0, e.Pid));
        Assert.Contains(r.Rows, e => e.Kind == TraceEventKind.StatusExec && e.Pid == root);
        Assert.Contains(r.Rows, e => e.Kind == TraceEventKind.Vma && e.Pid == root && e.Path == "[stack]");
        Assert.Equal(0, r.LastExitSample(root).Result);
        Assert.True(r.Metadata.Host.ContainsKey(HostFacts.KernelRelease));
        Assert.True(r.Metadata.Host.ContainsKey(HostFacts.ThpEnabled));
        if (ReadAhead.KbFor("/") is { } readAheadKb)
        {
            // The replay reads its readahead window from the trace, as the host had it.
            Assert.Equal(readAheadKb.ToString(System.Globalization.CultureInfo.InvariantCulture), r.Metadata.Host[HostFacts.ReadAheadKb]);
            Assert.Equal(readAheadKb, PtLab.Workloads.Replay.TraceReplayer.ReadAheadKbOf(r.Metadata));
        }

        // The zero-page behaviour the replay needs, as this host was measured to have it.
        var info = KernelInfo.Probe();
        Assert.Equal(info.ModelZeroPage, PtLab.Workloads.Replay.TraceReplayer.ZeroPageOf(r.Metadata));
        Assert.Equal(info.Thp?.UseZeroPage ?? true, PtLab.Workloads.Replay.TraceReplayer.ThpOf(r.Metadata).UseZeroPage);

        // And whether execute-only memory gets the protection key that refuses data access.
        Assert.Equal(info.ExecOnlyPkey, new PtLab.Workloads.Replay.ReplayOptions { Design = "none", DesignFactory = () => new PtLab.Reclaim.NoReclaim() }.WithHostOf(r.Metadata).ExecOnlyPkey);
    }

    [RecordFact]
    public void TheCoverLetterLoopIsRecordedCallForCall()
    {
        var r = Record("cover", "24", "4");
        IsACompleteRecordingOfOneProgram(r);
        var loop = r.Rows.Where(e => e.Kind == TraceEventKind.Madvise && e.Length == 2 << 20).ToList();
        Assert.Equal(24, loop.Count);
        Assert.All(loop, e => Assert.Equal(4, e.Advice));
        // Every page of each chunk faulted once before its madvise.
        var region = r.Rows.Single(e => e.Kind == TraceEventKind.Mmap && e.Length == 24UL << 21);
        ulong start = (ulong)region.Result;
        Assert.Equal(24 * 512, r.Rows.Count(e => e.Kind == TraceEventKind.Fault && e.Address >= start && e.Address < start + (24UL << 21)));
        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void HalvesRecordsEveryMadviseOfEveryChunk()
    {
        var r = Record("halves", "8", "4");
        IsACompleteRecordingOfOneProgram(r);
        Assert.Equal(32, r.Rows.Count(e => e.Kind == TraceEventKind.Madvise && e.Length == 512 << 10));
        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void MallocChurnIsRecordedWithItsMmapsAndTheLastVmPte()
    {
        var r = Record("churn", "6000", "3");
        IsACompleteRecordingOfOneProgram(r);
        Assert.True(r.Count(TraceEventKind.Munmap) > 10, $"{r.Count(TraceEventKind.Munmap)} munmaps");
        Assert.True(r.Count(TraceEventKind.Brk) > 1);
        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void ThreadsAreNewTasksOfTheProcessAndEachExitIsSampled()
    {
        var r = Record("threads", "3");
        IsACompleteRecordingOfOneProgram(r);
        int root = r.Metadata.RootPid!.Value;
        var threads = r.Rows.Where(e => e.Kind == TraceEventKind.NewTask).ToList();
        Assert.Equal(3, threads.Count);
        Assert.All(threads, t => Assert.Equal(root, t.ChildPid));
        foreach (var t in threads)
        {
            Assert.Contains(r.Rows, e => e.Kind == TraceEventKind.StatusExit && e.Tid == t.ChildTid);
            Assert.Contains(r.Rows, e => e.Kind == TraceEventKind.Madvise && e.Tid == t.ChildTid && e.Length == 8 << 20);
        }

        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void ForkedChildrenExecAndEachProcessHasItsOwnLayoutAndExitSample()
    {
        var r = Record("forkexec", "2");
        IsACompleteRecordingOfOneProgram(r);
        int root = r.Metadata.RootPid!.Value;
        var forks = r.Rows.Where(e => e.Kind == TraceEventKind.NewTask && e.Pid == root).ToList();
        Assert.Equal(2, forks.Count);
        var leaves = r.Printed("leaf", "VmPTE");
        Assert.Equal(2, leaves.Count);
        for (int i = 0; i < 2; i++)
        {
            int child = forks[i].ChildPid;
            Assert.NotEqual(root, child);
            Assert.Contains(r.Rows, e => e.Kind == TraceEventKind.Exec && e.Pid == child);
            Assert.Contains(r.Rows, e => e.Kind == TraceEventKind.Vma && e.Pid == child);
            // The copy-on-write faults of the child before its exec are in the trace, as the child's.
            Assert.True(r.Rows.Count(e => e.Kind == TraceEventKind.Fault && e.Pid == child) >= 2048);
            Assert.Equal(leaves[i], r.LastExitSample(child).Status.VmPteKb);
        }

        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void FileMappingsAndMremapsAreRecordedWithTheirFiles()
    {
        var r = Record("filemap", _dir);
        IsACompleteRecordingOfOneProgram(r);
        var mremaps = r.Rows.Where(e => e.Kind == TraceEventKind.Mremap).ToList();
        Assert.Equal(4, mremaps.Count);
        Assert.Contains(mremaps, e => (e.Flags & 4) != 0 && e.Result > 0); // MREMAP_DONTUNMAP
        var file = r.Rows.Where(e => e.Kind == TraceEventKind.Mmap2 && e.Path!.Contains("ptlab-filemap", StringComparison.Ordinal)).ToList();
        Assert.Contains(file, e => e.Flags == 1 && e.Inode != 0); // the shared mapping
        Assert.Contains(file, e => e.Flags == 2); // the private one
        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void MadvHugepageIsRecordedAndTheLastVmPteCountsTheDepositedTables()
    {
        var r = Record("thp");
        IsACompleteRecordingOfOneProgram(r);
        Assert.Single(r.Rows, e => e.Kind == TraceEventKind.Madvise && e.Advice == 14); // MADV_HUGEPAGE
        Assert.Equal(512, r.Rows.Count(e => e.Kind == TraceEventKind.Madvise && e.Length == 4096));
        ExitSampleIsTheProgramsLastVmPte(r);
    }

    [RecordFact]
    public void TheCommandsExitStatusIsPassedThrough()
    {
        string trace = Path.Combine(_dir, "false.parquet");
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = ["sh", "-c", "exit 3"] }, TextWriter.Null, default);
        Assert.Equal(3, result.ExitCode);
        using var reader = TraceReader.Open(trace);
        Assert.Equal(3 << 8, reader.Metadata.ExitStatus);
    }

    /// <summary>
    /// A command that leaves a daemon (a process in a session of its own) running: the recording
    /// follows the daemon to its exit, says so while it waits, and notes it; the trace is whole,
    /// with the daemon's 1 MiB written and its exit.
    /// </summary>
    [RecordFact]
    public void ADaemonTheCommandLeavesIsFollowedToItsExitAndSaidToBe()
    {
        string exe = TestPrograms.Build("daemon");
        string trace = Path.Combine(_dir, "daemon.parquet");
        var log = new StringWriter();
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = [exe, "2"] }, log, default);
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("ptlab: the command has exited; it left", log.ToString());
        using var reader = TraceReader.Open(trace);
        Assert.False(reader.Metadata.Truncated);
        var daemons = reader.Metadata.Notes["daemons_followed"].Split(' ').Select(int.Parse).ToList();
        var rows = reader.ReadEvents().ToList();
        // The daemon (the last process made) wrote its megabyte and exited, all of it recorded.
        int daemon = rows.Where(e => e.Kind == TraceEventKind.NewTask).Select(e => e.ChildPid).Last();
        Assert.Contains(daemon, daemons);
        Assert.True(rows.Count(e => e.Kind == TraceEventKind.Fault && e.Pid == daemon) >= 256);
        Assert.Contains(rows, e => e.Kind == TraceEventKind.TaskExit && e.Pid == daemon);
    }

    /// <summary>
    /// A command that leaves a process running in its own session (a background job, a build
    /// server): the recording says so a second after the command exits, and Ctrl-C then stops the
    /// process at once while the command's recording stays whole: its exit status, not marked
    /// truncated, the process's writes and its end in the trace.
    /// </summary>
    [RecordFact]
    public void CtrlCAfterTheCommandExitedStopsWhatItLeftAndKeepsTheRecordingWhole()
    {
        string exe = TestPrograms.Build("daemon");
        string trace = Path.Combine(_dir, "left.parquet");
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var log = new NoticeWriter("ptlab: the command has exited; it left", cancel);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = [exe, "120", "nosid"] }, log, cancel.Token);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(50), $"took {clock.Elapsed}: {log}"); // not the 120 s the process would live
        Assert.Equal(0, result.ExitCode);
        using var reader = TraceReader.Open(trace);
        Assert.False(reader.Metadata.Truncated);
        var rows = reader.ReadEvents().ToList();
        int left = rows.Where(e => e.Kind == TraceEventKind.NewTask).Select(e => e.ChildPid).Last();
        Assert.Equal(left.ToString(System.Globalization.CultureInfo.InvariantCulture), reader.Metadata.Notes["daemons_stopped"]);
        Assert.False(reader.Metadata.Notes.ContainsKey("daemons_followed"));
        Assert.True(rows.Count(e => e.Kind == TraceEventKind.Fault && e.Pid == left) >= 256);
        Assert.Contains(rows, e => e.Kind == TraceEventKind.TaskExit && e.Pid == left);
    }

    /// <summary>A log that cancels a recording once a line starting with a given text is written.</summary>
    private sealed class NoticeWriter(string notice, CancellationTokenSource cancel) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.StartsWith(notice, StringComparison.Ordinal) == true)
            {
                cancel.Cancel();
            }
        }
    }

    /// <summary>
    /// A debugger inside a recording: its inferior's PTRACE_TRACEME and its PTRACE_SEIZE of another
    /// child both fail, as the recorder's tracer already traces every process of the tree. The
    /// recording says so while it runs, and notes each refused call in the trace.
    /// </summary>
    [RecordFact]
    public void APtraceCallTheRecordersTracerRefusesIsSaidAndNoted()
    {
        string exe = TestPrograms.Build("debugger");
        string trace = Path.Combine(_dir, "debugger.parquet");
        string output = Path.Combine(_dir, "debugger.out");
        var log = new StringWriter();
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = [exe], CommandStdout = output }, log, default);
        Assert.Equal(1, result.ExitCode); // alone it exits 0
        Assert.Equal("traceme EPERM\nseize Operation not permitted\n", File.ReadAllText(output));
        Assert.Contains("could not trace itself for its parent (PTRACE_TRACEME)", log.ToString());
        Assert.Contains("(PTRACE_SEIZE)", log.ToString());
        using var reader = TraceReader.Open(trace);
        var rows = reader.ReadEvents().ToList();
        var children = rows.Where(e => e.Kind == TraceEventKind.NewTask).Select(e => e.ChildPid).ToList();
        int root = reader.Metadata.RootPid ?? 0;
        Assert.Equal($"{children[0]}:PTRACE_TRACEME:{children[0]} {root}:PTRACE_SEIZE:{children[1]}", reader.Metadata.Notes["ptrace_refused"]);
    }

    [RecordFact]
    public void AnInterruptedRecordingIsAValidTraceMarkedTruncated()
    {
        string exe = TestPrograms.Build("cover");
        string trace = Path.Combine(_dir, "cut.parquet");
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));
        // 1 M chunks take minutes: the program is stopped by the interrupt, as Ctrl-C would.
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = [exe, "1000000", "4"], CommandStdout = Path.Combine(_dir, "cut.out") }, TextWriter.Null, cancel.Token);
        Assert.Equal(130, result.ExitCode); // 128 + SIGINT
        using var reader = TraceReader.Open(trace);
        Assert.True(reader.Metadata.Truncated);
        var rows = reader.ReadEvents().ToList();
        Assert.Contains(rows, e => e.Kind == TraceEventKind.Madvise);
        Assert.Contains(rows, e => e.Kind == TraceEventKind.StatusExit);
    }

    [RecordFact]
    public void ACommandThatCannotRunIsAClearError()
    {
        var e = Assert.Throws<RecordException>(() =>
            Recorder.Run(new RecordOptions { Output = Path.Combine(_dir, "none.parquet"), Command = ["/nonexistent/program"] }, TextWriter.Null, default));
        Assert.Contains("cannot run /nonexistent/program", e.Message);
        Assert.False(File.Exists(Path.Combine(_dir, "none.parquet")));
    }

    [LinuxFact]
    public void WithoutPerfTheErrorSaysWhatToInstall()
    {
        var e = Assert.Throws<RecordException>(() => Recorder.CheckPrerequisites(attach: false, perf: "/nonexistent/perf"));
        Assert.Contains("install", e.Message);
    }
}
