namespace PtLab.Traces.Tests;

public sealed class PerfImportTests
{
    private static readonly string[] Sample = TraceFuzzer.SamplePerfText();

    private static List<TraceEvent> Import(IEnumerable<string> lines, PerfImportOptions? options = null) =>
        new PerfScriptImporter(new StringReader(string.Join('\n', lines)), "in.txt", options).Read().Select(e => e.Event).ToList();

    /// <summary>A line for <paramref name="body"/> at the time of the sample's line <paramref name="index"/> (so that time order holds).</summary>
    private static string At(int index, string body, string ids = "20310/20310")
    {
        string time = Sample[index].Split(' ', StringSplitOptions.RemoveEmptyEntries).First(t => t.EndsWith(':') && t.Contains('.'));
        return $"          sample {ids} [001]  {time} {body}";
    }

    private static TraceFormatException Fails(IEnumerable<string> lines, PerfImportOptions? options = null) =>
        Assert.Throws<TraceFormatException>(() => Import(lines, options));

    [Fact]
    public void TheCheckedInSampleImportsAsTheProgramRan()
    {
        var rows = Import(Sample);
        int Count(TraceEventKind k) => rows.Count(e => e.Kind == k);

        // sample.c: one madvise of its own and glibc's one for the thread stack, one thread, one munmap of its 64 KiB.
        var madvise = rows.Where(e => e.Kind == TraceEventKind.Madvise).ToList();
        Assert.Equal(2, madvise.Count);
        Assert.Contains(madvise, m => m.Length == 32 << 10 && m.Advice == 4 && m.Result == 0);
        Assert.Equal(1, Count(TraceEventKind.NewTask));
        var thread = rows.Single(e => e.Kind == TraceEventKind.NewTask);
        Assert.Equal(thread.Pid, thread.ChildPid);
        Assert.Contains(rows, e => e.Kind == TraceEventKind.Munmap && e.Length == 64 << 10);
        Assert.Equal(1, Count(TraceEventKind.ExitGroup));
        Assert.Equal(2, Count(TraceEventKind.TaskExit));

        // The process is introduced by perf's COMM record, and its new mm starts at the exec record,
        // before exec's own kernel faults and the ELF's MMAP2 records.
        Assert.Equal(TraceEventKind.Task, rows[0].Kind);
        Assert.Equal(TraceEventKind.Exec, rows[1].Kind);
        Assert.Equal("./sample", rows[1].Path);
        Assert.Equal("[stack]", rows[2].Path);
        int firstUserFault = rows.FindIndex(e => e.Kind == TraceEventKind.Fault);
        Assert.Contains(rows.Take(firstUserFault), e => e.Kind == TraceEventKind.KernelFault);

        // The thread's writes hit pages still mapped (no fault); it exits by itself.
        Assert.Contains(rows, e => e.Kind == TraceEventKind.Exit && e.Tid == thread.ChildTid);
        Assert.All(rows.Where(e => TraceKinds.IsSyscall(e.Kind)), e => Assert.True(e.HasResult && e.DurationNs >= 0));
        Assert.True(rows.Zip(rows.Skip(1)).All(p => p.First.TimeNs <= p.Second.TimeNs));
    }

    /// <summary>
    /// Two children exec at once on two CPUs (make -j2): each exec's COMM record comes before the
    /// other's sched_process_exec. Each child gets one exec row, at its COMM record, with its file
    /// name; a second row would start a second mm and drop what exec built.
    /// </summary>
    [Fact]
    public void TwoProcessesExecutingAtOnceEachGetOneExec()
    {
        static string L(int pid, int cpu, string time, string body) => $"            make {pid}/{pid} [00{cpu}]  100.{time}: {body}";
        string[] lines =
        [
            L(100, 0, "000000100", "PERF_RECORD_COMM exec: make:100/100"),
            L(100, 0, "000000200", "sched:sched_process_exec: filename=/usr/bin/make pid=100 old_pid=100"),
            L(100, 0, "000001000", "task:task_newtask: pid=101 comm=make clone_flags=1200011 oom_score_adj=0"),
            L(100, 0, "000001100", "task:task_newtask: pid=102 comm=make clone_flags=1200011 oom_score_adj=0"),
            L(101, 0, "000002000", "PERF_RECORD_COMM exec: cc1:101/101"),
            L(101, 0, "000002100", "PERF_RECORD_MMAP2 101/101: [0x7ffd7e83e000(0x21000) @ 0x7ffffffde000 00:00 0 0]: rw-p [stack]"),
            L(102, 1, "000002200", "PERF_RECORD_COMM exec: as:102/102"),
            L(101, 0, "000002300", "exceptions:page_fault_kernel: address=0x7ffd7e85df50 ip=__put_user_8 error_code=0x2"),
            L(102, 1, "000002400", "PERF_RECORD_MMAP2 102/102: [0x7ffc745b2000(0x21000) @ 0x7ffffffde000 00:00 0 0]: rw-p [stack]"),
            L(101, 0, "000002500", "sched:sched_process_exec: filename=/usr/lib/gcc/cc1 pid=101 old_pid=101"),
            L(102, 1, "000002600", "exceptions:page_fault_kernel: address=0x7ffc745d2f50 ip=__put_user_8 error_code=0x2"),
            L(101, 0, "000002700", "exceptions:page_fault_user: address=0x7ffd7e85d000 ip=0x1000 error_code=0x6"),
            L(102, 1, "000002800", "sched:sched_process_exec: filename=/usr/bin/as pid=102 old_pid=102"),
            L(102, 1, "000002900", "exceptions:page_fault_user: address=0x7ffc745d2000 ip=0x1000 error_code=0x6"),
        ];
        var rows = Import(lines, new PerfImportOptions { RootPid = 100 });
        foreach (var (pid, file) in new[] { (101, "/usr/lib/gcc/cc1"), (102, "/usr/bin/as") })
        {
            var exec = Assert.Single(rows, e => e.Kind == TraceEventKind.Exec && e.Pid == pid);
            Assert.Equal(file, exec.Path);
            int at = rows.IndexOf(exec);
            var mine = rows.Select((e, i) => (e, i)).Where(p => p.e.Pid == pid && p.e.Kind != TraceEventKind.Exec).ToList();
            Assert.Equal(3, mine.Count);
            Assert.All(mine, p => Assert.True(p.i > at, $"pid {pid}: {TraceKinds.Name(p.e.Kind)} row {p.i} before its exec row {at}"));
        }

        Assert.True(rows.Zip(rows.Skip(1)).All(p => p.First.TimeNs <= p.Second.TimeNs));
    }

    /// <summary>
    /// signal_generate: a SIGSEGV a thread sent itself with a positive si_code (its fault's answer)
    /// is kept, read from the last "pid=" although the comm holds a space and "pid="; a kill of
    /// another task, a signal with a non-positive code, and other signals are not; a line without
    /// the fields is an error naming the line.
    /// </summary>
    [Fact]
    public void TheSignalsThatAnswerFaultsAreKept()
    {
        var lines = Sample.ToList();
        int at = lines.FindIndex(l => l.Contains("page_fault_user", StringComparison.Ordinal));
        string[] extra =
        [
            At(at, "signal:signal_generate: sig=11 errno=0 code=2 comm=C2 pid=x pid=20310 grp=0 res=0"),
            At(at, "signal:signal_generate: sig=11 errno=0 code=1 comm=sample pid=20311 grp=1 res=0"),
            At(at, "signal:signal_generate: sig=11 errno=0 code=-6 comm=sample pid=20310 grp=0 res=0"),
            At(at, "signal:signal_generate: sig=10 errno=0 code=1 comm=sample pid=20310 grp=0 res=0"),
        ];
        lines.InsertRange(at + 1, extra);
        var signal = Assert.Single(Import(lines), e => e.Kind == TraceEventKind.Signal);
        Assert.Equal(TraceKinds.SigSegv, signal.Result);
        Assert.Equal(2UL, signal.Flags);
        Assert.Equal(20310, signal.Tid);

        lines.Insert(at + 1, At(at, "signal:signal_generate: sig=11 errno=0"));
        Assert.Contains($"in.txt:{at + 2}: signal_generate fields", Fails(lines).Message);
    }

    /// <summary>
    /// shmat and shmdt, as perf prints them: shmat's row carries the shmid (in fd), the address
    /// asked for and the flags (SHM_RDONLY here), with the attach's address as its result; the
    /// kernel's record of the segment's mapping comes before it, as MAP_SHARED with the shmem
    /// file's device and inode; shmdt's row carries the address.
    /// </summary>
    [Fact]
    public void ShmatAndShmdtAreRecordedWithTheSegmentsMapping()
    {
        var lines = Sample.ToList();
        int at = lines.FindIndex(l => l.Contains("sys_exit_madvise", StringComparison.Ordinal));
        lines.InsertRange(at + 1,
        [
            At(at, "syscalls:sys_enter_shmat: shmid: 0x00000004, shmaddr: 0x00000000, shmflg: 0x00001000"),
            At(at, "PERF_RECORD_MMAP2 20310/20310: [0x7f0c61abf000(0x1000000) @ 0 00:01 4 2228042432]: r--s /SYSV00000000 (deleted)"),
            At(at, " syscalls:sys_exit_shmat: 0x7f0c61abf000"),
            At(at, "syscalls:sys_enter_shmdt: shmaddr: 0x7f0c61abf000"),
            At(at, " syscalls:sys_exit_shmdt: 0x0"),
        ]);
        var rows = Import(lines);
        int shmatAt = rows.FindIndex(e => e.Kind == TraceEventKind.Shmat);
        var shmat = rows[shmatAt];
        Assert.Equal((4, 0UL, 0x1000UL, 0x7f0c61abf000L), (shmat.Fd, shmat.Address, shmat.Flags, shmat.Result));
        var segment = rows[shmatAt - 1];
        Assert.Equal((TraceEventKind.Mmap2, 0x7f0c61abf000UL, 0x1000000UL, 1UL, "00:01", 4UL, "/SYSV00000000 (deleted)"),
            (segment.Kind, segment.Address, segment.Length, segment.Flags, segment.Dev, segment.Inode, segment.Path));
        var shmdt = Assert.Single(rows, e => e.Kind == TraceEventKind.Shmdt);
        Assert.Equal((0x7f0c61abf000UL, 0L), (shmdt.Address, shmdt.Result));

        lines.Insert(at + 1, At(at, "syscalls:sys_enter_shmdt: shmaddr: 0x7f0c61abf000, shmflg: 0x0"));
        Assert.Contains($"in.txt:{at + 2}: sys_enter_shmdt arguments", Fails(lines).Message);
    }

    /// <summary>
    /// mseal, as perf prints it (Linux 6.10+): start, length and flags, and the result; a refused
    /// call keeps its errno, which the replay compares with the model's.
    /// </summary>
    [Fact]
    public void MsealIsRecordedWithItsRangeFlagsAndResult()
    {
        var lines = Sample.ToList();
        int at = lines.FindIndex(l => l.Contains("sys_exit_madvise", StringComparison.Ordinal));
        lines.InsertRange(at + 1,
        [
            At(at, "syscalls:sys_enter_mseal: start: 0x7f0c61abf000, len: 0x00002001, flags: 0x00000000"),
            At(at, " syscalls:sys_exit_mseal: 0x0"),
            At(at, "syscalls:sys_enter_mseal: start: 0x7f0c61abf000, len: 0x00001000, flags: 0x00000002"),
            At(at, " syscalls:sys_exit_mseal: 0xffffffffffffffea"),
        ]);
        var rows = Import(lines).Where(e => e.Kind == TraceEventKind.Mseal).ToList();
        Assert.Equal(2, rows.Count);
        Assert.Equal((0x7f0c61abf000UL, 0x2001UL, 0UL, 0L), (rows[0].Address, rows[0].Length, rows[0].Flags, rows[0].Result));
        Assert.Equal((2UL, -22L), (rows[1].Flags, rows[1].Result));
        Assert.True(TraceKinds.IsSyscall(TraceEventKind.Mseal));

        lines.Insert(at + 1, At(at, "syscalls:sys_enter_mseal: start: 0x7f0c61abf000, len: 0x00001000"));
        Assert.Contains($"in.txt:{at + 2}: sys_enter_mseal has 2 arguments", Fails(lines).Message);
    }

    [Fact]
    public void AGarbageLineIsRejectedWithItsLineNumber()
    {
        var lines = Sample.ToList();
        lines.Insert(40, "this is not perf output");
        var e = Fails(lines);
        Assert.StartsWith("in.txt:41: not a perf script line", e.Message);
    }

    [Fact]
    public void AnExitWithoutItsEnterIsRejected()
    {
        var lines = Sample.Where((l, i) => !(l.Contains("sys_enter_munmap") && i > 100)).ToList();
        Assert.Contains("without its sys_enter_munmap", Fails(lines).Message);
    }

    [Fact]
    public void AnEnterThatNeverReturnsIsRejectedUnlessTheRecordingWasCut()
    {
        int exit = Array.FindLastIndex(Sample, l => l.Contains("sys_exit_munmap"));
        var lines = Sample.Where((_, i) => i != exit).ToList();
        Assert.Contains("has not returned", Fails(lines).Message);

        var rows = Import(lines, new PerfImportOptions { Truncated = true });
        var unfinished = Assert.Single(rows, e => !e.HasResult && TraceKinds.IsSyscall(e.Kind));
        Assert.Equal(TraceEventKind.Munmap, unfinished.Kind);
    }

    [Fact]
    public void TwoEntersOfOneThreadAreRejected()
    {
        int exit = Array.FindIndex(Sample, l => l.Contains("sys_exit_mmap"));
        var lines = Sample.Where((_, i) => i != exit).ToList();
        Assert.Contains("has not returned", Fails(lines).Message);
    }

    [Fact]
    public void AnAttachedRecordingDropsTheExitOfASyscallThatStartedBeforeIt()
    {
        int enter = Array.FindIndex(Sample, l => l.Contains("sys_enter_brk"));
        var lines = Sample.Where((_, i) => i != enter).ToList();
        Assert.Contains("without its sys_enter_brk", Fails(lines).Message);
        var importer = new PerfScriptImporter(new StringReader(string.Join('\n', lines)), "in.txt", new PerfImportOptions { Attached = true });
        _ = importer.Read().ToList();
        Assert.Equal(1, importer.Stats.InFlightExits);
    }

    /// <summary>
    /// An attach to an idle process: perf synthesizes its task at time 0, and its first real event
    /// (a fault) comes seconds later. The task takes the start time the options give (the moment
    /// the layout was read), so the rows of that moment name a task already introduced; without
    /// it, the first real event's time.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AnAttachedIdleProcesssSynthesizedTaskTakesTheStartTimeItIsGiven(bool given)
    {
        string[] lines =
        [
            "              sw     0/0         0.000000000: PERF_RECORD_COMM: sw:25922/25922",
            "              sw 25922/25922 52789.998431477:         exceptions:page_fault_user: address=0x7f0000001000 ip=0x401000 error_code=0x6",
        ];
        const long start = 52_783_086_277_325;
        var importer = new PerfScriptImporter(new StringReader(string.Join('\n', lines)), "in.txt", new PerfImportOptions { Attached = true, StartTimeNs = given ? start : null });
        var rows = importer.Read().Select(e => e.Event).ToList();
        var task = Assert.Single(rows, e => e.Kind == TraceEventKind.Task);
        Assert.Equal(given ? start : 52_789_998_431_477, task.TimeNs);
        Assert.Equal(52_789_998_431_477, Assert.Single(rows, e => e.Kind == TraceEventKind.Fault).TimeNs);
    }

    [Fact]
    public void TimeGoingBackIsRejected()
    {
        var lines = Sample.ToList();
        (lines[60], lines[70]) = (lines[70], lines[60]);
        Assert.Contains("before the previous line's", Fails(lines).Message);
    }

    [Fact]
    public void AnEventOfAProcessNeverIntroducedIsRejected()
    {
        var lines = Sample.ToList();
        lines.Insert(80, At(79, "exceptions:page_fault_user: address=0x1000 ip=0x2000 error_code=0x6", "4242/4242"));
        var e = Fails(lines);
        Assert.StartsWith("in.txt:81: unknown task: pid 4242", e.Message);
    }

    [Fact]
    public void LostEventsAreCountedAndAdmitTasksNeverIntroduced()
    {
        var lines = Sample.ToList();
        lines.Insert(80, At(79, "PERF_RECORD_LOST lost 17"));
        lines.Insert(81, At(79, "exceptions:page_fault_user: address=0x1000 ip=0x2000 error_code=0x6", "4242/4242"));
        var importer = new PerfScriptImporter(new StringReader(string.Join('\n', lines)), "in.txt");
        var rows = importer.Read().Select(e => e.Event).ToList();
        Assert.Equal(17, importer.Stats.LostEvents);
        Assert.True(importer.AdmittedUnknownTasks);
        Assert.Equal(17UL, rows.Single(e => e.Kind == TraceEventKind.Lost).Length);
    }

    [Theory]
    [InlineData("exceptions:page_fault_user: address=0xZZ ip=0x2000 error_code=0x6", "address")]
    [InlineData("syscalls:sys_enter_madvise: start: 0x1000, len_in: 0x1000", "2 arguments, expected 3")]
    [InlineData("PERF_RECORD_MMAP2 20310/20310: [0x1000(0x1000) @ 0 fe:00 12 0]: rwzp /x", "permissions")]
    [InlineData("task:task_newtask: pid=x comm=a clone_flags=0 oom_score_adj=0", "pid")]
    public void ABadFieldIsRejectedNamingIt(string body, string expected)
    {
        var lines = Sample.ToList();
        lines.Insert(60, At(59, body));
        var e = Fails(lines);
        Assert.StartsWith("in.txt:61: ", e.Message);
        Assert.Contains(expected, e.Message);
    }
}
