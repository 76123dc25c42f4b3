using System.Diagnostics;
using System.Runtime.CompilerServices;
using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;
using PtLab.Traces;

namespace PtLab.Workloads.Replay;

/// <summary>How to replay a trace.</summary>
public sealed record ReplayOptions
{
    /// <summary>The design's name, for the report.</summary>
    public required string Design { get; init; }

    /// <summary>Builds the design for each address space.</summary>
    public required Func<IPageTableReclaim> DesignFactory { get; init; }

    /// <summary>Simulated RAM.</summary>
    public long RamBytes { get; init; } = 64L << 30;

    /// <summary>Simulated CPUs: the recorded host's count; threads share them as they shared the host's.</summary>
    public int Cpus { get; init; } = 1;

    /// <summary>The readahead window of file faults in kB: the recorded host's (<see cref="TraceReplayer.ReadAheadKbOf"/>).</summary>
    public int ReadAheadKb { get; init; } = 128;

    /// <summary>The transparent huge page mode: the recorded host's (<see cref="TraceReplayer.ThpOf"/>).</summary>
    public ThpSettings Thp { get; init; } = ThpSettings.Default;

    /// <summary>Whether the model maps the shared zero page: the recorded host's (<see cref="TraceReplayer.ZeroPageOf"/>).</summary>
    public bool ZeroPage { get; init; } = true;

    /// <summary>Whether execute-only mappings get the execute-only protection key: the recorded host's (<see cref="HostFacts.ExecOnlyPkey"/>).</summary>
    public bool ExecOnlyPkey { get; init; }

    /// <summary>
    /// The hugetlb sizes and pools MAP_HUGETLB is checked against: the recorded host's
    /// (<see cref="HostFacts.HugetlbPools"/>); for a trace that does not record them, x86-64's two
    /// sizes with their room unknown, so that no reservation is refused.
    /// </summary>
    public IReadOnlyList<HugetlbPool> HugetlbPools { get; init; } = HugetlbPool.Empty;

    /// <summary>
    /// The file systems of the mapped files (<see cref="TraceMetadata.FileSystems"/>), which decide
    /// per file whether it is shmem and whether its page cache gets large folios
    /// (<see cref="FileModel.Of"/>); null where the trace records none (format 2 and older).
    /// </summary>
    public IReadOnlyDictionary<DeviceNumber, FileSystemFact>? FileSystems { get; init; }

    /// <summary>
    /// Whether each open file a mapping names keeps a readahead state of its own, as the kernel's
    /// <c>struct file</c> does (the default); false shares one state per file among all its
    /// mappings, the model's behaviour before it kept them per open.
    /// </summary>
    public bool ReadAheadPerOpen { get; init; } = true;

    /// <summary>
    /// Whether a file whose page-cache residency the trace recorded (<see cref="TraceEventKind.FileCache"/>
    /// rows) starts with those pages in the model's page cache, uptodate, as the host's were
    /// when the file first appeared (the default); false replays every file as cold, as traces
    /// before format 4 do.
    /// </summary>
    public bool PageCacheState { get; init; } = true;

    /// <summary>The trace's format version, for the report of what was assumed where it records no file systems.</summary>
    public int TraceVersion { get; init; } = 2;

    /// <summary>
    /// Swap of the replay's machine: none by default; for an attached recording whose process had
    /// pages swapped out, room for those (<see cref="TraceMetadata.AttachSwappedPagesNote"/>), so
    /// that they are rebuilt as swap entries.
    /// </summary>
    public long SwapBytes { get; init; }

    /// <summary>These options with the recorded host's facts of <paramref name="metadata"/>: THP mode, readahead window, file systems.</summary>
    public ReplayOptions WithHostOf(TraceMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        return this with
        {
            Thp = TraceReplayer.ThpOf(metadata),
            ZeroPage = TraceReplayer.ZeroPageOf(metadata),
            ExecOnlyPkey = metadata.Host.TryGetValue(HostFacts.ExecOnlyPkey, out var k) && k == "1",
            HugetlbPools = HugetlbPool.Parse(metadata.Host.GetValueOrDefault(HostFacts.HugetlbPools)) ?? UnknownHugetlbPools,
            ReadAheadKb = TraceReplayer.ReadAheadKbOf(metadata),
            FileSystems = metadata.Version >= 3 && metadata.Source != "import" ? metadata.FileSystems : null,
            TraceVersion = metadata.Version,
            SwapBytes = SwapFor(metadata),
        };
    }

    private static readonly IReadOnlyList<HugetlbPool> UnknownHugetlbPools = [new(HugetlbPool.PmdShift, null), new(HugetlbPool.PudShift, null)];

    // Room for the pages an attached process had swapped out, twice over (a page the replay
    // swaps in and the model swaps out again takes a new slot before the old one goes), and no
    // swap where it had none.
    private static long SwapFor(TraceMetadata metadata) =>
        metadata.Notes.TryGetValue(TraceMetadata.AttachSwappedPagesNote, out var n) && long.TryParse(n, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long pages) && pages > 0
            ? (2 * pages * 4096) + (16L << 20)
            : 0;
}

/// <summary>
/// Replays a trace on the model under one design: one address space per recorded process, each
/// thread on a simulated CPU of the machine, every mapping at the address the kernel gave it,
/// faults as accesses (read, write or fetch from the error code; an access that finds its page
/// already mapped changes nothing, so a fault recorded twice is harmless), the address-space
/// syscalls with their recorded arguments and results compared, and each <c>/proc/PID/status</c>
/// sample paired with the model's figures at the same point of the stream.
/// </summary>
/// <remarks>
/// A trace is data: a row no kernel could have produced is a <see cref="TraceFormatException"/>
/// naming the file and the row. What the model cannot do is counted by kind in
/// <see cref="ReplayResult.Unsupported"/>; where the model answers differently from the recorded
/// kernel, the difference is counted in <see cref="ReplayResult.Divergences"/>. Nothing is
/// dropped silently. Feed rows in file order, a batch (<see cref="Apply(TraceBatch)"/>) or a row at a time, then call <see cref="Finish"/>.
/// </remarks>
public sealed class TraceReplayer
{
    private const ulong PageSize = Geometry.PageSize;
    private const ulong PageMask = Geometry.PageMask;

    /// <summary>RLIMIT_STACK's default: how far below a stack a fault may still grow it.</summary>
    private const ulong StackLimit = 8UL << 20;

    /// <summary>clone's CLONE_FILES: the child shares the parent's descriptor table.</summary>
    private const ulong CloneFiles = 0x00000400;

    private readonly ReplayOptions _options;
    private readonly string _path;
    private readonly Machine _machine;
    private readonly Dictionary<int, Proc> _procs = [];
    private readonly Dictionary<int, Thread> _threads = [];
    private readonly List<ReplayProcessResult> _results = [];
    private readonly Dictionary<string, long> _divergences = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _unsupported = new(StringComparer.Ordinal);
    private readonly Dictionary<FileId, SimFile> _configured = [];
    private readonly Dictionary<string, long> _fileModels = new(StringComparer.Ordinal);

    // The files whose recorded residency was applied, and whether any of their pages was cached;
    // the file the cache_range rows that follow fill (null: none, or not applied).
    private readonly Dictionary<FileId, bool> _residency = [];

    /// <summary>The shmem files of System V segments (mapped by shmat, or found attached in a layout): what shmdt detaches.</summary>
    private readonly HashSet<SimFile> _sysvSegments = [];
    private SimFile? _cacheFile;

    // The runs of the residency being read (its cache_range rows so far) and how many rows are to come.
    private readonly List<(ulong First, ulong Pages)> _cacheRuns = [];
    private long _cacheRowsLeft;

    // The identities records give each file (maps and MMAP2, residency rows, the page-cache
    // tracepoints), with the fallback for devices that differ (btrfs subvolumes, overlayfs).
    private readonly FileKeys _keys;
    private readonly int[] _threadsOnCpu;
    private readonly Stopwatch _clock = new();
    private long _row = -1;
    private long _alreadyMapped;

    // Threads whose last user fault the model refused, waiting for the kernel's signal row; whether any signal row was met.
    private int _refusedFaults;
    private bool _signalsSeen;
    private Thread? _lastThread;
    private int _lastTid = -1;

    /// <summary>A replayer of the trace at <paramref name="path"/> (named in errors).</summary>
    public TraceReplayer(string path, ReplayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _path = path;
        _machine = new Machine(new MachineOptions
        {
            Cpus = Math.Clamp(options.Cpus, 1, 64),
            RamBytes = options.RamBytes,
            PageData = false,
            Design = options.DesignFactory,
            Thp = options.Thp,
            ZeroPage = options.ZeroPage,
            ExecOnlyPkey = options.ExecOnlyPkey,
            HugetlbPools = options.HugetlbPools,
            ReadAheadKb = options.ReadAheadKb,
            SwapBytes = options.SwapBytes,
        });
        _threadsOnCpu = new int[_machine.Cpus.Count];
        _keys = new FileKeys(options.FileSystems ?? new Dictionary<DeviceNumber, FileSystemFact>());
    }

    /// <summary>Whether rows of <paramref name="kind"/> are replayed on the model (the others are counted as unsupported).</summary>
    public static bool Replays(TraceEventKind kind) => (uint)kind < TraceKinds.Count;

    /// <summary>The <see cref="ReplayResult.Unsupported"/> key of process_madvise calls whose ranges the trace does not have.</summary>
    public const string UnrecordedRanges = "process_madvise whose ranges were not recorded (counted, not replayed)";

    /// <summary>The recorded host's THP mode (its enabled and defrag settings), or the kernel's default where the trace does not say.</summary>
    public static ThpSettings ThpOf(TraceMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        var d = ThpSettings.Default;
        var enabled = metadata.Host.TryGetValue(HostFacts.ThpEnabled, out var e) ? ThpSettings.ParseEnabled(e) : null;
        var defrag = metadata.Host.TryGetValue(HostFacts.ThpDefrag, out var f) ? ThpSettings.ParseDefrag(f) : null;
        bool useZeroPage = !metadata.Host.TryGetValue(HostFacts.ThpUseZeroPage, out var z) || z != "0";
        return d with { Enabled = enabled ?? d.Enabled, Defrag = defrag ?? d.Defrag, UseZeroPage = useZeroPage };
    }

    /// <summary>
    /// Whether the recorded host mapped the shared zero page on anonymous read faults
    /// (<see cref="HostFacts.ZeroPage"/>); true where the trace does not say.
    /// </summary>
    public static bool ZeroPageOf(TraceMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        return !metadata.Host.TryGetValue(HostFacts.ZeroPage, out var z) || z != "0";
    }

    /// <summary>
    /// The recorded host's <c>read_ahead_kb</c> (the window of file readahead, which sets how far
    /// folio orders grow), or the kernel's default of 128 where the trace does not say.
    /// </summary>
    public static int ReadAheadKbOf(TraceMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        return metadata.Host.TryGetValue(HostFacts.ReadAheadKb, out var v) && int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int kb) && kb <= 1 << 20
            ? kb
            : 128;
    }

    /// <summary>The machine the replay runs on.</summary>
    public Machine Machine => _machine;

    /// <summary>Rows applied so far.</summary>
    public long Events => _row + 1;

    /// <summary>Replays every row of <paramref name="reader"/> and returns the result.</summary>
    public static ReplayResult Run(TraceReader reader, ReplayOptions options, Action<double>? progress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var r = new TraceReplayer(reader.Path, options.WithHostOf(reader.Metadata));
        long rows = Math.Max(1, reader.Rows);
        foreach (var batch in reader.ReadBatches(cancel))
        {
            r.Apply(batch);
            progress?.Invoke((double)r.Events / rows);
        }

        return r.Finish();
    }

    /// <summary>Applies every row of <paramref name="batch"/> (batches must come in file order).</summary>
    /// <exception cref="TraceFormatException">A row cannot have come from a kernel.</exception>
    public void Apply(TraceBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        _clock.Start();
        try
        {
            var kinds = batch.Kinds;
            _batch = batch;
            for (int i = 0; i < kinds.Length;)
            {
                if (kinds[i] is TraceEventKind.Fault or TraceEventKind.KernelFault)
                {
                    i = FaultRun(batch, i);
                }
                else
                {
                    if (_appliedEarly.Count == 0 || !_appliedEarly.Remove(i))
                    {
                        _batchRow = i;
                        ApplyOne(batch.Event(i));
                    }

                    i++;
                }
            }
        }
        finally
        {
            _batch = null;
            _appliedEarly.Clear();
            _clock.Stop();
        }
    }

    /// <summary>Applies one row (rows must come in file order).</summary>
    /// <exception cref="TraceFormatException">The row cannot have come from a kernel.</exception>
    public void Apply(in TraceEvent e)
    {
        _clock.Start();
        try
        {
            ApplyOne(e);
        }
        finally
        {
            _clock.Stop();
        }
    }

    private void ApplyOne(in TraceEvent e)
    {
        _row++;
        if (_refusedFaults > 0 && e.Kind != TraceEventKind.Signal && _threads.TryGetValue(e.Tid, out var refused) && refused.RefusedFault is not null)
        {
            Unanswered(refused);
        }

        {
            if (TraceKinds.IsSyscall(e.Kind))
            {
                Syscall(e);
                return;
            }

            switch (e.Kind)
            {
                case TraceEventKind.Fault:
                case TraceEventKind.KernelFault:
                    Fault(e.Pid, e.Tid, e.Address, e.ErrorCode, e.Kind == TraceEventKind.KernelFault);
                    break;
                case TraceEventKind.Task: Task(e); break;
                case TraceEventKind.NewTask: NewTask(e); break;
                case TraceEventKind.Exec: Exec(e); break;
                case TraceEventKind.TaskExit: TaskExit(e); break;
                case TraceEventKind.Exit:
                case TraceEventKind.ExitGroup:
                    break; // the mm goes at task_exit, after the exit sample
                case TraceEventKind.Mmap2: Mmap2(e); break;
                case TraceEventKind.Vma: Layout(e, replace: false); break;
                case TraceEventKind.Status:
                case TraceEventKind.StatusExec:
                case TraceEventKind.StatusExit:
                case TraceEventKind.StatusAttach:
                    Sample(e);
                    break;
                case TraceEventKind.Lost:
                    Count(_divergences, "events perf lost", (long)e.Length);
                    break;
                case TraceEventKind.MadviseRange:
                    ThreadOf(e).Ranges.Add(e); // applied by the process_madvise row that follows
                    break;
                case TraceEventKind.FileCache: FileCache(e); break;
                case TraceEventKind.CacheRange: CacheRange(e); break;
                case TraceEventKind.Signal: Signal(e); break;
                case TraceEventKind.Resident: Resident(e); break;
                case TraceEventKind.PageTables: PageTables(e); break;
                case TraceEventKind.VmaSealed: LayoutSeal(e); break;
                case TraceEventKind.CacheAdd:
                case TraceEventKind.CacheDelete:
                    PageCacheChange(e);
                    break;
            }
        }
    }

    /// <summary>Ends the replay: processes still alive get their figures now, and the result is built.</summary>
    public ReplayResult Finish()
    {
        foreach (var t in _threads.Values.Where(t => t.RefusedFault is not null).ToList())
        {
            Unanswered(t);
        }

        foreach (var p in _procs.Values)
        {
            p.Result.Exit ??= p.Mm.Mm.Status();
            p.Result.Counters = p.Mm.Mm.Counters();
            p.Result.Madvise = p.Latency.Summary();
        }

        return new ReplayResult
        {
            Design = _options.Design,
            Processes = _results,
            Events = Events,
            WallSeconds = _clock.Elapsed.TotalSeconds,
            Divergences = new SortedDictionary<string, long>(_divergences, StringComparer.Ordinal),
            Unsupported = new SortedDictionary<string, long>(_unsupported, StringComparer.Ordinal),
            FileModels = new SortedDictionary<string, long>(FileModelsWithPageCache(), StringComparer.Ordinal),
            GracePeriods = _machine.Rcu.GracePeriods,
            FaultsAlreadyMapped = _alreadyMapped,
        };
    }

    private TraceFormatException Malformed(string why) => new($"{_path}: row {_row}: {why}");

    private static void Count(Dictionary<string, long> counts, string kind, long n = 1) =>
        counts[kind] = counts.GetValueOrDefault(kind) + n;

    private void Divergence(string kind) => Count(_divergences, kind);

    private void Unsupported(string kind) => Count(_unsupported, kind);

    /// <summary>
    /// A syscall row is stamped at the syscall's exit, but its effect happened somewhere between
    /// enter and exit: a sample taken meanwhile (while another thread was inside madvise or
    /// munmap, or a long munmap was still zapping) may or may not show it. So each such sample of
    /// the process also gets the figures with the call's effect (<see cref="ReplaySample.Lower"/>, <see cref="ReplaySample.Upper"/>).
    /// </summary>
    private void Syscall(in TraceEvent e)
    {
        var thread = ThreadOf(e);
        thread.Proc.Quiet.Clear();
        var p = e.Kind == TraceEventKind.ProcessMadvise ? AdvisedProcess(thread) : thread.Proc; // whose samples the call may change
        bool track = p.Open.Count > 0 && e.HasResult;
        var before = track ? p.Mm.Mm.Status() : default;
        switch (e.Kind)
        {
            case TraceEventKind.Mmap: Mmap(e); break;
            case TraceEventKind.Munmap: Munmap(e); break;
            case TraceEventKind.Mprotect: Mprotect(e); break;
            case TraceEventKind.Madvise: Madvise(e); break;
            case TraceEventKind.Brk: Brk(e); break;
            case TraceEventKind.Mremap: Mremap(e); break;
            case TraceEventKind.Mlock or TraceEventKind.Mlock2 or TraceEventKind.Munlock or TraceEventKind.Mlockall or TraceEventKind.Munlockall:
                Mlock(e);
                break;
            case TraceEventKind.ProcessMadvise: ProcessMadvise(e); break;
            case TraceEventKind.Shmat: Shmat(e); break;
            case TraceEventKind.Shmdt: Shmdt(e); break;
            case TraceEventKind.Mseal: Mseal(e); break;
            default:
                Unsupported(TraceKinds.Name(e.Kind) + " (not modelled)");
                break;
        }

        if (!track)
        {
            return;
        }

        long enter = e.TimeNs - e.DurationNs;
        var after = p.Mm.Mm.Status();
        var samples = p.Result.Samples;
        for (int i = p.Open.Count - 1; i >= 0; i--)
        {
            int index = p.Open[i];
            var s = samples[index];
            if (s.TimeNs < e.TimeNs - OpenSampleNs)
            {
                p.Open.RemoveAt(i);
            }
            else if (s.TimeNs >= enter && !before.Equals(after))
            {
                samples[index] = after.VmPteKb < before.VmPteKb
                    ? s with { Lower = Add(s.Lower ?? s.Model, after, before) }
                    : s with { Upper = Add(s.Upper ?? s.Model, after, before) };
            }
        }
    }

    /// <summary>How long a sample stays open to the effects of syscalls that were under way when it was taken.</summary>
    private const long OpenSampleNs = 1_000_000_000;

    private static MmStatus Add(MmStatus a, MmStatus after, MmStatus before) => new(
        a.VmSizeKb + after.VmSizeKb - before.VmSizeKb, a.VmRssKb + after.VmRssKb - before.VmRssKb, a.RssAnonKb + after.RssAnonKb - before.RssAnonKb,
        a.RssFileKb + after.RssFileKb - before.RssFileKb, a.RssShmemKb + after.RssShmemKb - before.RssShmemKb, a.VmSwapKb + after.VmSwapKb - before.VmSwapKb,
        a.VmPteKb + after.VmPteKb - before.VmPteKb,
        new TableCounts(a.Tables.Pte + after.Tables.Pte - before.Tables.Pte, a.Tables.Pmd + after.Tables.Pmd - before.Tables.Pmd, a.Tables.Pud + after.Tables.Pud - before.Tables.Pud));

    // ---- tasks ----

    private Thread ThreadOf(in TraceEvent e) => ThreadOf(e.Pid, e.Tid);

    private Thread ThreadOf(int pid, int tid)
    {
        if (tid == _lastTid && _lastThread is { } last)
        {
            return last;
        }

        if (!_threads.TryGetValue(tid, out var t) || t.Proc.Pid != pid)
        {
            // The reader admits rows of tasks never introduced only in a trace marked incomplete.
            if (!_procs.TryGetValue(pid, out var p))
            {
                Unsupported("process whose start was not recorded (its earlier tables are unknown)");
                p = NewProc(pid, "pid " + pid, NewMm());
            }

            t = AddThread(p, tid);
        }

        _lastTid = tid;
        _lastThread = t;
        return t;
    }

    private Proc NewProc(int pid, string name, SharedMm mm)
    {
        var result = new ReplayProcessResult { Pid = pid, Name = name };
        _results.Add(result);
        var p = new Proc(pid, mm, result);
        _procs[pid] = p;
        return p;
    }

    private SharedMm NewMm() => new(_machine.CreateAddressSpace());

    private Thread AddThread(Proc p, int tid)
    {
        int best = 0;
        for (int i = 1; i < _threadsOnCpu.Length; i++)
        {
            if (_threadsOnCpu[i] < _threadsOnCpu[best])
            {
                best = i;
            }
        }

        _threadsOnCpu[best]++;
        var t = new Thread(tid, p, _machine.Cpus[best]);
        _threads[tid] = t;
        p.Threads++;
        p.Result.Threads++;
        _lastTid = -1;
        return t;
    }

    private void RemoveThread(Thread t)
    {
        if (_threads.Remove(t.Tid))
        {
            _threadsOnCpu[t.Cpu.Id]--;
            t.Proc.Threads--;
        }

        _lastTid = -1;
    }

    private void Task(in TraceEvent e)
    {
        if (!_procs.TryGetValue(e.Pid, out var p))
        {
            p = NewProc(e.Pid, e.Path ?? "", NewMm());
        }

        AddThread(p, e.Tid);
    }

    private void NewTask(in TraceEvent e)
    {
        var parent = ThreadOf(e);
        ulong flags = e.Flags;
        if ((flags & TraceEvent.CloneThread) != 0)
        {
            AddThread(parent.Proc, e.ChildTid);
            return;
        }

        if (_procs.ContainsKey(e.ChildPid))
        {
            throw Malformed($"newtask creates process {e.ChildPid}, which already exists");
        }

        SharedMm mm;
        if ((flags & TraceEvent.CloneVm) != 0)
        {
            mm = parent.Proc.Mm; // vfork or clone(CLONE_VM): the child runs on the parent's mm until it execs
            mm.Users++;
        }
        else
        {
            mm = ForkMm(parent);
        }

        var child = NewProc(e.ChildPid, e.Path ?? "", mm);
        child.Brk = parent.Proc.Brk; // the break is the mm's: a fork copies it, a shared mm shares it
        // The child's descriptors name its parent's open files (copy_files), or the same table (CLONE_FILES).
        child.Files = (flags & CloneFiles) != 0 ? parent.Proc.Files : new(parent.Proc.Files);
        AddThread(child, e.ChildTid);
    }

    /// <summary>fork: a copy of the parent's address space (dup_mmap, copy_page_range where a fault could not rebuild the tables).</summary>
    private SharedMm ForkMm(Thread parent)
    {
        var cpu = Activate(parent);
        var child = parent.Proc.Mm.Mm.Fork(cpu);
        if (child is null)
        {
            Divergence("fork: the model ran out of memory copying the parent (the child starts empty)");
            return NewMm();
        }

        return new SharedMm(child) { MmapBaseKnown = parent.Proc.Mm.MmapBaseKnown };
    }

    private static Prot ProtOf(VmFlags f) =>
        ((f & VmFlags.Read) != 0 ? Prot.Read : 0) | ((f & VmFlags.Write) != 0 ? Prot.Write : 0) | ((f & VmFlags.Exec) != 0 ? Prot.Exec : 0);

    private void Exec(in TraceEvent e)
    {
        if (!_procs.TryGetValue(e.Pid, out var p))
        {
            p = NewProc(e.Pid, e.Path ?? "", NewMm());
        }
        else
        {
            // de_thread: every other thread goes; the caller becomes the leader (tid = pid).
            foreach (var t in _threads.Values.Where(t => ReferenceEquals(t.Proc, p)).ToList())
            {
                RemoveThread(t);
            }

            Release(p, _machine.Cpus[0]);
            p.Mm = NewMm();
            p.Result.Name = e.Path ?? p.Result.Name;
        }

        p.InExec = true;
        p.Brk = 0;
        // exec unshares the descriptor table and keeps it; the openings of the old layout's files go.
        p.Files = p.Files.Where(f => f.Key.Fd >= 0).ToDictionary();
        p.Open.Clear();
        // Samples read since the process's last event may have been read while execve was already
        // replacing the address space: no event orders them against it.
        p.ExecPending.Clear();
        p.ExecPending.AddRange(p.Quiet);
        p.Quiet.Clear();
        p.Result.Exited = false;
        AddThread(p, e.Pid);
    }

    private void TaskExit(in TraceEvent e)
    {
        var t = ThreadOf(e);
        var p = t.Proc;
        RemoveThread(t);
        if (p.Threads > 0)
        {
            return;
        }

        p.Result.Exit = p.Mm.Mm.Status();
        p.Result.Exited = true;
        Release(p, t.Cpu);
        _procs.Remove(p.Pid);
    }

    /// <summary>mmput: the process lets go of its address space; the last user tears it down (exit_mmap).</summary>
    private void Release(Proc p, Cpu cpu)
    {
        var mm = p.Mm;
        p.Result.Counters = mm.Mm.Counters();
        p.Result.Madvise = p.Latency.Summary();
        TrackPeak(p);
        if (--mm.Users == 0)
        {
            cpu.SwitchMm(mm.Mm);
            mm.Mm.Exit(cpu);
        }
    }

    private void TrackPeak(Proc p)
    {
        long kb = p.Mm.Mm.PgtablesBytes >> 10;
        if (kb > p.Result.PeakVmPteKb)
        {
            p.Result.PeakVmPteKb = kb;
        }
    }

    /// <summary>The thread's CPU, running the thread's address space.</summary>
    private static Cpu Activate(Thread t)
    {
        var mm = t.Proc.Mm.Mm;
        if (!ReferenceEquals(t.Cpu.Mm, mm))
        {
            t.Cpu.SwitchMm(mm);
        }

        return t.Cpu;
    }

    // ---- samples ----

    private void Sample(in TraceEvent e)
    {
        var t = ThreadOf(e);
        var p = t.Proc;
        var samples = p.Result.Samples;
        if (e.Kind == TraceEventKind.StatusExec && p.InExec)
        {
            ExecArguments(t, e.Status);
            LearnMmapBase(t);
            var fresh = p.Mm.Mm.Status();
            foreach (int index in p.ExecPending)
            {
                // Inside execve the new address space grows from the arguments alone to what the exec
                // sample shows: the span a sample read meanwhile could show.
                var sample = samples[index];
                var start = p.ExecStart ?? fresh;
                samples[index] = sample with { Lower = sample.Lower ?? start, Upper = sample.Upper ?? (fresh.VmPteKb > sample.Model.VmPteKb ? fresh : null) };
                if (fresh.VmPteKb < sample.Model.VmPteKb && start.VmPteKb > fresh.VmPteKb)
                {
                    samples[index] = samples[index] with { Lower = fresh };
                }
            }

            p.ExecPending.Clear();
            p.ExecStart = null;
        }
        else if (e.Kind == TraceEventKind.StatusAttach && !p.Mm.MmapBaseKnown)
        {
            // The layout an attached recording read holds the interpreter and vDSO exec placed at
            // mmap_base as it does at exec: every later mmap without a hint went below them.
            LearnMmapBase(t);
        }

        TrackPeak(p);
        p.Open.Add(samples.Count);
        if (p.Open.Count > 64)
        {
            p.Open.RemoveAt(0);
        }

        if (e.Kind != TraceEventKind.StatusExec)
        {
            p.Quiet.Add(samples.Count);
        }

        samples.Add(new ReplaySample(e.TimeNs, e.Kind, e.Status, p.Mm.Mm.Status()));
    }

    /// <summary>
    /// exec copies the arguments and environment to the top of the new stack through GUP, which no
    /// fault event records; the exec sample's RssAnon counts those pages. The same number of pages
    /// is written at the top of the stack, so their table (and the upper tables) exist as on the host.
    /// </summary>
    private void ExecArguments(Thread t, StatusFigures kernel)
    {
        var p = t.Proc;
        p.InExec = false;
        var mm = p.Mm.Mm;
        var stack = p.Stack;
        if (stack is null)
        {
            return;
        }

        long missing = Math.Max(1, (kernel.RssAnonKb - mm.Status().RssAnonKb) / 4);
        var cpu = Activate(t);
        // From the top of the stack down, the pages not yet written (the first may be, at exec's start).
        for (ulong va = stack.Value.End - PageSize; missing > 0 && va >= stack.Value.Start; va -= PageSize)
        {
            if (Entry.IsHwPresent(mm.PeekPte(va)))
            {
                continue;
            }

            cpu.Touch(va);
            missing--;
        }
    }

    /// <summary>
    /// exec randomises <c>mmap_base</c> (<c>arch_pick_mmap_layout</c>), and no event records it;
    /// but exec places the interpreter (or a program without one) and then the vDSO top-down from
    /// it, so the highest mapping of the new layout below the stack ends at <c>mmap_base</c>. The
    /// model's address space takes that base, so its own placement of the program's mmaps lands
    /// where the kernel's did; fork copies it. An attached recording's layout still has them there.
    /// </summary>
    private void LearnMmapBase(Thread t)
    {
        var p = t.Proc;
        if (p.Stack is not { } stack)
        {
            return;
        }

        var mm = p.Mm.Mm;
        ulong top = 0;
        foreach (var v in mm.Vmas)
        {
            if (v.End > stack.Start)
            {
                break;
            }

            top = v.End;
        }

        if (top > MmStruct.MmapMinAddr)
        {
            mm.SetMmapBase(Activate(t), top);
            p.Mm.MmapBaseKnown = true;
        }
    }

    // ---- layout ----

    private void Mmap2(in TraceEvent e)
    {
        var t = ThreadOf(e);
        t.PendingMapping = e;
        if (t.Proc.InExec)
        {
            // exec's own mappings (the ELF, the interpreter, the stack), which no syscall row made: each
            // replaces what lay there, as the ELF loader maps the whole image and then its segments over it.
            Layout(e, replace: true);
        }
    }

    /// <summary>
    /// A mapping the kernel reported. With <paramref name="replace"/> it is mapped over whatever lay
    /// there; otherwise (a line of /proc/PID/maps) the parts the model lacks are mapped and the parts
    /// it has get the line's protection.
    /// </summary>
    private void Layout(in TraceEvent e, bool replace)
    {
        var t = ThreadOf(e);
        var p = t.Proc;
        var cpu = Activate(t);
        ulong start = e.Address & PageMask, end = (e.Address + e.Length + PageSize - 1) & PageMask;
        if (end > Geometry.TaskSize || end <= start)
        {
            Unsupported($"{(e.Path is { Length: > 0 } name ? name : "mapping")} above the user address space (no user page tables)");
            return;
        }

        if (e.Path == "[stack]")
        {
            p.Stack = (start, end);
        }

        var mm = p.Mm.Mm;
        var prot = (Prot)(e.Prot & 7);
        if (replace)
        {
            MapLayout(cpu, mm, start, end, prot, e, byExec: true);
            if (e.Path == "[stack]" && p.InExec && p.ExecPending.Count > 0)
            {
                // What a sample read inside execve could show at the earliest: the new stack with the
                // arguments exec copied to its top (their first page here, the rest at the exec sample).
                cpu.Touch(end - PageSize);
                p.ExecStart = mm.Status();
            }

            return;
        }

        ulong at = start;
        foreach (var v in mm.Vmas)
        {
            if (v.End <= at)
            {
                continue;
            }

            if (v.Start >= end)
            {
                break;
            }

            if (v.Start > at)
            {
                MapLayout(cpu, mm, at, v.Start, prot, e, byExec: false);
            }

            if (ProtOf(v.Flags) != prot)
            {
                ulong from = Math.Max(v.Start, start), to = Math.Min(v.End, end);
                if (mm.Mprotect(cpu, from, to - from, prot) != Errno.None)
                {
                    Divergence("layout protection refused by the model");
                }
            }

            at = Math.Max(at, v.End);
        }

        if (at < end)
        {
            MapLayout(cpu, mm, at, end, prot, e, byExec: false);
        }
    }

    /// <summary>
    /// Maps [<paramref name="start"/>, <paramref name="end"/>) of a reported mapping. exec's own
    /// mappings (<paramref name="byExec"/>: the ELF loader's segments and bss, the stack) are
    /// charged as the kernel charges them (<c>VM_ACCOUNT</c> where private and writable): the flag
    /// decides which VMAs merge, and a RELRO segment made read-only must stay apart from the
    /// read-only segment before it, or a fork copies the tables of both. A layout line read from
    /// /proc/PID/maps says nothing of how its mapping was made: it is mapped without a charge.
    /// </summary>
    private void MapLayout(Cpu cpu, MmStruct mm, ulong start, ulong end, Prot prot, in TraceEvent e, bool byExec)
    {
        if (e.Inode == 0 && SpecialMapping.Named(e.Path) is { } special)
        {
            // exec's map_vdso: the vDSO and its data pages are the kernel's own (a special mapping),
            // neither anonymous memory nor a file.
            if (mm.InstallSpecialMapping(cpu, start, end - start, special) != Errno.None)
            {
                Divergence($"{special.Name} refused by the model");
            }

            return;
        }

        var flags = MapFlags.Fixed | (byExec ? 0 : MapFlags.NoReserve) | (e.Flags == 1 ? MapFlags.Shared : MapFlags.Private);
        SimFile? file = null;
        ulong offset = 0;
        if (e.Inode != 0)
        {
            // The part [start, end) of a mapping of the file at e.Offset from e.Address.
            offset = e.Offset + (start - (e.Address & PageMask));
            file = FileOf(e.Dev, e.Inode, offset + (end - start), e.Path, e.Flags != 1 || (prot & Prot.Write) == 0 ? (offset, end - start) : null);
        }
        else
        {
            flags |= MapFlags.Anonymous;
        }

        if (e.Path == "[stack]")
        {
            flags |= MapFlags.GrowsDown;
        }

        // A layout row names no descriptor: the mappings of one file in one process's layout (exec's
        // ELF file, its interpreter) share one opening.
        var ra = file is not null && _procs.TryGetValue(e.Pid, out var p) ? OpeningOf(p, -1, file) : null;
        var r = mm.Mmap(cpu, start, end - start, prot, flags, file, offset, ra);
        if (!r.Ok && r.Error == Errno.ENOMEM && (flags & MapFlags.NoReserve) == 0)
        {
            // A simulated machine smaller than the recording host cannot charge what the host
            // charged: the mapping the kernel made is kept, uncharged, and the difference counted.
            Divergence("exec's mapping could not be charged on the model's machine (mapped uncharged)");
            r = mm.Mmap(cpu, start, end - start, prot, flags | MapFlags.NoReserve, file, offset, ra);
        }

        if (!r.Ok)
        {
            Divergence($"layout mapping refused by the model ({r.Error})");
        }
    }

    /// <summary>
    /// The file a mapping record names (its device and inode), grown to <paramref name="size"/>
    /// bytes if it was smaller. A file met for the first time is modelled as its file system
    /// says (<see cref="FileModel.Of"/>): shmem or regular, with large folios or without, with its
    /// device's readahead window; the basis is counted for the report. A shmem file's pages live
    /// only in its cache, and which of them a tmpfs file held before the trace saw it mapped, no
    /// event says: a file first mapped private or read-only is taken to hold the content it is
    /// mapped for (<paramref name="content"/>, its range; a file a program reads, a library), one
    /// first mapped shared and writable to be empty (a file a program fills through its mapping).
    /// </summary>
    private SimFile FileOf(string? dev, ulong inode, ulong size, string? path, (ulong Offset, ulong Length)? content, bool residency = false)
    {
        ulong device = 0;
        bool parsed = DeviceNumber.TryParse(dev, out var number);
        if (parsed)
        {
            device = ((ulong)number.Major << 20) | number.Minor;
        }

        // Device 0 names the model's shmem files; a recorded file keeps an identity of its own.
        // A name that another record gave the file under another device (a residency row taken
        // under stat's device of a btrfs subvolume) is the same file.
        var id = IdOf(device, inode);
        ulong bytes = (size + PageSize - 1) & PageMask;
        if (!_configured.ContainsKey(id) && parsed && _keys.TryResolve(number, inode, out var alias))
        {
            id = IdOf(Encode(alias), inode);
        }

        if (_configured.TryGetValue(id, out var known))
        {
            known.Grow(bytes);
            return known;
        }

        if (parsed)
        {
            _keys.Add(number, inode);
        }

        var model = FileModel.Of(parsed ? number : null, path, _options.TraceVersion, _options.FileSystems);
        var file = _machine.Files.GetOrCreate(id, bytes, model.Shmem);
        string basis = model.Basis;
        if (model.Shmem)
        {
            file.Get(); // the file system holds a tmpfs file while nothing maps it
            if (residency)
            {
                basis += "; its pages as the recording found them";
            }
            else if (content is { } c && path is not null && !path.StartsWith("/memfd:", StringComparison.Ordinal))
            {
                basis += "; its content taken as present (first mapped private or read-only)";
                if (!file.Populate(c.Offset, c.Length))
                {
                    Divergence("the model ran out of memory filling a tmpfs file's content");
                }
            }
        }
        else
        {
            file.LargeFolios = model.LargeFolios;
            if (model.ReadAheadKb is { } kb)
            {
                file.ReadAheadPages = kb / 4;
            }
        }

        _configured[id] = file;
        if (path is not null && path.StartsWith(SysvPathPrefix, StringComparison.Ordinal))
        {
            _sysvSegments.Add(file);
        }

        _fileModels[basis] = _fileModels.GetValueOrDefault(basis) + 1;
        return file;
    }

    /// <summary>
    /// A file's page-cache residency when it first appeared in the recording (at the exec that
    /// mapped it, or at the entry of the first mmap of it): the file is made known with its size,
    /// and the <see cref="TraceEventKind.CacheRange"/> rows that follow put their pages in its
    /// cache, uptodate and without readahead marks, in the folio sizes the recorder read (order 0
    /// where it could not read them, as without root). Fault-around (<c>filemap_map_pages</c>) then maps them as it maps
    /// the host's cached pages, and a fault finds them instead of reading ahead. Pages the model
    /// had read in already (exec's own faults, before the tracer's stop, with the model's
    /// readahead) that the host did not have cached leave the model's cache once the residency's
    /// last row is met (<see cref="TrimToResidency"/>); those the model maps stay.
    /// </summary>
    private void FileCache(in TraceEvent e)
    {
        _cacheFile = null;
        if (!_options.PageCacheState)
        {
            return;
        }

        var file = FileOf(e.Dev, e.Inode, e.Length, e.Path, content: null, residency: true);
        _residency[file.Id] = _residency.GetValueOrDefault(file.Id) || e.Result > 0;
        _cacheFile = file;
        _cacheRuns.Clear();
        _cacheRowsLeft = e.Result;
        if (_cacheRowsLeft <= 0)
        {
            TrimToResidency(file);
        }
    }

    private void CacheRange(in TraceEvent e)
    {
        if (_cacheFile is not { } file)
        {
            return;
        }

        ulong first = e.Offset / PageSize, pages = e.Length / PageSize;
        if (!file.AddCached(first, pages, e.Is(TraceFields.Flags) ? (int)e.Flags : 0))
        {
            Divergence("the model ran out of memory filling the page cache the recording found");
            _cacheFile = null;
            return;
        }

        _cacheRuns.Add((first, pages));
        if (--_cacheRowsLeft == 0)
        {
            TrimToResidency(file);
        }
    }

    /// <summary>
    /// Makes the model's cache of a file that just got its recorded residency hold no folio the
    /// host did not have: a folio with no page in any recorded run was not in the host's cache
    /// when the residency was taken, whatever the model's own faults before it read in (its
    /// readahead windows are not the host's). Such folios leave, as an invalidation would drop
    /// them; those the model maps stay, counted. A folio of the model that meets a recorded run
    /// stays whole.
    /// </summary>
    private void TrimToResidency(SimFile file)
    {
        if (file.IsShmem)
        {
            return;
        }

        // Folios come in index order; the runs are sorted once, and one walk pairs them.
        _cacheRuns.Sort();
        long kept = 0;
        int run = 0;
        foreach (var (first, pages) in file.Folios())
        {
            while (run < _cacheRuns.Count && _cacheRuns[run].First + _cacheRuns[run].Pages <= first)
            {
                run++; // this run ends before the folio, and so before every later folio
            }

            bool recorded = run < _cacheRuns.Count && _cacheRuns[run].First < first + pages;
            if (!recorded)
            {
                kept += file.Invalidate(first, pages).Kept;
            }
        }

        if (kept > 0)
        {
            Count(_divergences, "pages the model read before the recorded residency that the host had not cached, kept (mapped)", kept);
        }
    }

    private static ulong Encode(DeviceNumber d) => ((ulong)d.Major << 20) | d.Minor;

    private static FileId IdOf(ulong device, ulong inode) => new(device == 0 ? ulong.MaxValue : device, inode);

    /// <summary>
    /// A folio the host added to or removed from the page cache of a file the tree maps, at the
    /// time it happened (<c>mm_filemap_add_to_page_cache</c>, <c>mm_filemap_delete_from_page_cache</c>):
    /// the tree's own <c>read()</c> or <c>write()</c>, another process, readahead, reclaim,
    /// truncation or invalidation. The model's cache follows: an added folio is put in, uptodate
    /// and unmarked, in its order (pages the model had already stay); a removed one is unmapped
    /// from every mapping, as the host unmapped it first, and leaves (a page of a larger folio
    /// of the model's stays, counted). The file is
    /// found by the identity the tracepoint gives it, or by the fallback of <see cref="FileKeys"/>
    /// (overlayfs reports the layer's device). Changes of files the replay has not met yet are
    /// counted and skipped (a file is met at its residency row or first mapping).
    /// </summary>
    private void PageCacheChange(in TraceEvent e)
    {
        if (!_options.PageCacheState)
        {
            return;
        }

        if (!DeviceNumber.TryParse(e.Dev, out var dev) || !_keys.TryResolve(dev, e.Inode, out var known)
            || !_configured.TryGetValue(IdOf(Encode(known), e.Inode), out var file))
        {
            Count(_unsupported, "page-cache changes of files the replay had not met (skipped)", 1);
            return;
        }

        int order = (int)e.Flags;
        ulong first = e.Offset / PageSize, pages = 1UL << order;
        if (e.Kind == TraceEventKind.CacheAdd)
        {
            if (file.IsShmem)
            {
                // A shmem file (memfd, tmpfs) gets its pages from the model's own faults and writes.
                Count(_unsupported, "page-cache additions to shmem files (skipped: the model's shmem pages come from its own faults)", 1);
                return;
            }

            file.Grow((first + pages) * PageSize); // a write past end of file added it
            if (!file.AddCached(first, pages, order))
            {
                Divergence("the model ran out of memory filling the page cache the recording found");
            }

            return;
        }

        // The host unmapped the pages before they left its cache: so does the model.
        long kept = MmStruct.RemovePagesTheHostRemoved(_machine.Cpus[0], file, first, pages);
        if (kept > 0)
        {
            Count(_divergences, "pages the host removed from the page cache that the model keeps (in a larger folio of its own)", kept);
        }
    }

    /// <summary>The file models, and per regular file whether its page cache started as recorded or cold.</summary>
    private Dictionary<string, long> FileModelsWithPageCache()
    {
        var models = new Dictionary<string, long>(_fileModels, StringComparer.Ordinal);
        foreach (var (id, file) in _configured)
        {
            if (file.IsShmem)
            {
                continue;
            }

            string key = _residency.TryGetValue(id, out bool warm)
                ? warm ? "page cache as recorded when first mapped (some pages cached)" : "page cache as recorded when first mapped (none cached)"
                : _options.PageCacheState ? "cold when first mapped (no page-cache state recorded for it)" : "cold when first mapped (recorded page-cache state ignored)";
            models[key] = models.GetValueOrDefault(key) + 1;
        }

        return models;
    }

    /// <summary>
    /// The open file (its readahead state) a process mapped <paramref name="file"/> through:
    /// one per descriptor and file, shared with the processes forked since it was opened. A
    /// descriptor closed and reopened on the same file between two mappings cannot be told from
    /// one kept open (the trace has no open or close), and <c>dup</c>'s copies count as openings of
    /// their own.
    /// </summary>
    private FileRaState? OpeningOf(Proc p, int fd, SimFile file)
    {
        if (!_options.ReadAheadPerOpen)
        {
            return null;
        }

        if (!p.Files.TryGetValue((fd, file.Id), out var ra) || !ReferenceEquals(ra.File, file))
        {
            ra = file.Open();
            p.Files[(fd, file.Id)] = ra;
        }

        return ra;
    }

    // ---- faults ----

    private void Fault(int pid, int tid, ulong va, int errorCode, bool kernel)
    {
        var t = ThreadOf(pid, tid);
        var cpu = Activate(t);
        var p = t.Proc;
        p.InExec &= kernel;
        if (p.Quiet.Count > 0)
        {
            p.Quiet.Clear();
        }

        p.Result.Faults++;
        Access(t, cpu, p.Mm.Mm, va, errorCode, kernel);
    }

    /// <summary>
    /// The fault rows from <paramref name="start"/> on that come from one thread, applied as
    /// <see cref="Fault"/> applies each (the same accesses in the same order, so the same
    /// figures), with the thread, its CPU and its address space looked up once for the run: nothing
    /// a fault does switches them. Returns the index of the first row after the run.
    /// </summary>
    private int FaultRun(TraceBatch batch, int start)
    {
        var kinds = batch.Kinds;
        var pids = batch.Pids;
        var tids = batch.Tids;
        var addresses = batch.Addresses;
        var flags = batch.Flags;
        int pid = pids[start], tid = tids[start];
        var t = ThreadOf(pid, tid);
        var cpu = Activate(t);
        var p = t.Proc;
        var mm = p.Mm.Mm;
        if (p.Quiet.Count > 0)
        {
            p.Quiet.Clear();
        }

        // The run's figures are kept in locals and stored once at its end: only this loop and the
        // failure path below (which reads none of them) run until then.
        var result = p.Result;
        bool inExec = p.InExec;
        long peakKb = result.PeakVmPteKb;
        long modelFaults = cpu.Faults;
        long alreadyMapped = 0;
        int applied = 0;
        int i = start;
        try
        {
            for (; i < kinds.Length; i++)
            {
                var k = kinds[i];
                if (k is not (TraceEventKind.Fault or TraceEventKind.KernelFault) || tids[i] != tid || pids[i] != pid)
                {
                    break;
                }

                _row++;
                applied++;
                if (t.RefusedFault is not null)
                {
                    Unanswered(t);
                }

                inExec &= k == TraceEventKind.KernelFault;
                ulong va = (ulong)addresses[i];
                bool write = (flags[i] & 0x2) != 0;
                AccessResult r = write ? cpu.Touch(va) : cpu.ReadByte(va, out _);
                long taken = cpu.Faults;
                if (taken == modelFaults)
                {
                    alreadyMapped++;
                }

                if (!r.Ok)
                {
                    AccessFailed(t, cpu, va, write, r, k == TraceEventKind.KernelFault);
                    taken = cpu.Faults;
                }

                modelFaults = taken;
                long kb = mm.PgtablesBytes >> 10;
                if (kb > peakKb)
                {
                    peakKb = kb;
                }
            }
        }
        finally
        {
            p.InExec = inExec;
            result.Faults += applied;
            result.PeakVmPteKb = peakKb;
            _alreadyMapped += alreadyMapped;
        }

        return i;
    }

    /// <summary>
    /// One recorded fault as an access (a write for error-code bit 1, else a read): a page already
    /// mapped with the access's permission is resolved by the walk, no fault taken.
    /// </summary>
    private void Access(Thread t, Cpu cpu, MmStruct mm, ulong va, int errorCode, bool kernel)
    {
        bool write = (errorCode & 0x2) != 0;
        long taken = cpu.Faults;
        AccessResult r = write ? cpu.Touch(va) : cpu.ReadByte(va, out _);
        if (cpu.Faults == taken)
        {
            _alreadyMapped++;
        }

        if (!r.Ok)
        {
            AccessFailed(t, cpu, va, write, r, kernel);
        }

        long kb = mm.PgtablesBytes >> 10;
        var result = t.Proc.Result;
        if (kb > result.PeakVmPteKb)
        {
            result.PeakVmPteKb = kb;
        }
    }

    /// <summary>
    /// An access the model refused: below the stack within its limit the stack grows and the
    /// access is made again; what still fails is a divergence.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AccessFailed(Thread t, Cpu cpu, ulong va, bool write, AccessResult r, bool kernel)
    {
        if (GrowStack(t, cpu, va))
        {
            r = write ? cpu.Touch(va) : cpu.ReadByte(va, out _);
        }

        if (!r.Ok && kernel)
        {
            Divergence($"fault the model answered with {r.Outcome}"); // the kernel's copy would have failed with EFAULT: no signal says so
        }
        else if (!r.Ok)
        {
            // The kernel's answer, where the trace records it, is the signal row that follows.
            t.RefusedFault = r.Outcome;
            _refusedFaults++;
        }
    }

    /// <summary>
    /// A user fault the model refused, and the thread's next row is no signal: the kernel handled
    /// the fault (or the trace does not record its signals, as traces before format 5 do not).
    /// </summary>
    private void Unanswered(Thread t)
    {
        Divergence($"fault the model answered with {t.RefusedFault}{(_signalsSeen ? ", the kernel with no signal" : "")}");
        t.RefusedFault = null;
        _refusedFaults--;
    }

    /// <summary>
    /// The SIGSEGV or SIGBUS the kernel answered the thread's last fault with. Where the model
    /// refused that fault the same way, both agree: nothing to count (the JVM's implicit null
    /// checks and safepoint polls, guard pages a runtime probes). Where the model refused it
    /// otherwise, or mapped the page, the answers differ.
    /// </summary>
    private void Signal(in TraceEvent e)
    {
        _signalsSeen = true;
        if (!_threads.TryGetValue(e.Tid, out var t) || t.RefusedFault is not { } model)
        {
            // SEGV_MAPERR, SEGV_ACCERR, SEGV_PKUERR, BUS_ADRERR answer a page fault; other codes
            // other traps (a general protection fault, a signal frame that could not be written).
            if (e.Flags is SegvMapErr or SegvAccErr or SegvPkuErr)
            {
                Divergence($"fault the kernel answered with signal {e.Result} (si_code {e.Flags}), the model mapped it");
            }

            return;
        }

        t.RefusedFault = null;
        _refusedFaults--;
        var kernel = e.Result == TraceKinds.SigBus ? FaultOutcome.Bus : e.Flags switch
        {
            SegvMapErr => FaultOutcome.SegvMapErr,
            SegvAccErr => FaultOutcome.SegvAccErr,
            SegvPkuErr => FaultOutcome.SegvPkuErr,
            _ => (FaultOutcome?)null,
        };
        if (kernel != model)
        {
            Divergence($"fault: kernel signal {e.Result} (si_code {e.Flags}), model {model}");
        }
    }

    /// <summary>si_code SEGV_MAPERR: no mapping at the address.</summary>
    private const ulong SegvMapErr = 1;

    /// <summary>si_code SEGV_ACCERR: the mapping forbids the access.</summary>
    private const ulong SegvAccErr = 2;

    /// <summary>si_code SEGV_PKUERR: the mapping's protection key forbids the access (execute-only memory on a CPU with protection keys).</summary>
    private const ulong SegvPkuErr = 4;

    /// <summary>
    /// A fault below the stack within RLIMIT_STACK grows it (expand_stack); the model's stack is a
    /// plain mapping, so the range from the page to the stack's start is mapped.
    /// </summary>
    private bool GrowStack(Thread t, Cpu cpu, ulong va)
    {
        var p = t.Proc;
        if (p.Stack is not { } s || va >= s.Start || s.Start - va > StackLimit || p.Mm.Mm.FindVma(va) is { } v && v.Start <= va)
        {
            return false;
        }

        ulong start = va & PageMask;
        var r = p.Mm.Mm.Mmap(cpu, start, s.Start - start, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace | MapFlags.NoReserve);
        if (!r.Ok)
        {
            return false;
        }

        p.Stack = (start, s.End);
        return true;
    }

    // ---- syscalls ----

    private bool Finished(in TraceEvent e)
    {
        if (e.HasResult)
        {
            return true;
        }

        Unsupported(TraceKinds.Name(e.Kind) + " still running when the recording stopped (skipped)");
        return false;
    }

    /// <summary>
    /// The start every replayed address-space call shares: its thread has left exec, a call the
    /// recording cut short is skipped (and counted), and the thread's CPU runs its address space.
    /// </summary>
    private bool BeginCall(in TraceEvent e, out Thread t, out Cpu cpu)
    {
        t = ThreadOf(e);
        t.Proc.InExec = false;
        if (!Finished(e))
        {
            cpu = null!;
            return false;
        }

        cpu = Activate(t);
        return true;
    }

    private void CompareResult(in TraceEvent e, Errno model)
    {
        long kernel = e.Result < 0 ? -e.Result : 0;
        if (kernel != (long)model)
        {
            Divergence($"{TraceKinds.Name(e.Kind)}: kernel {(kernel == 0 ? "succeeded" : "errno " + kernel)}, model {(model == Errno.None ? "succeeded" : model.ToString())}");
        }
    }

    private void Mmap(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        bool raced = NoteLayoutCall(t, e);
        var mm = t.Proc.Mm.Mm;
        var flags = (MapFlags)(int)e.Flags;
        var prot = (Prot)(e.Prot & 0xf);
        bool anonymous = (flags & MapFlags.Anonymous) != 0;
        SimFile? file = null;
        ulong offset = e.Offset;
        var asModel = flags & ~MapFlags.HugeTlb;
        if ((flags & MapFlags.HugeTlb) != 0)
        {
            if (anonymous)
            {
                HugetlbMmap(e, t, raced, cpu, mm, flags, prot);
                return;
            }

            Unsupported("MAP_HUGETLB mmap of a hugetlbfs file (replayed with base pages)");
        }

        if (!anonymous)
        {
            // The file is known from the kernel's mapping record, which precedes the syscall's return.
            var record = e.Result >= 0 && t.PendingMapping is { } pending && RecordCovers(pending, (ulong)e.Result, e.Length, e.Offset) ? pending : (TraceEvent?)null;
            if (record is { Inode: 0 })
            {
                // mmap_zero: a private mapping of /dev/zero is made anonymous (vma_set_anonymous).
                asModel = (asModel & ~(MapFlags)0x3) | MapFlags.Private | MapFlags.Anonymous;
            }
            else if (record is { } m && IsSharedZero(m))
            {
                // mmap_zero: a shared mapping of /dev/zero is shared anonymous memory (shmem_zero_setup),
                // a shmem object of its own, as MAP_SHARED | MAP_ANONYMOUS makes.
                asModel = (asModel & ~(MapFlags)0x3) | MapFlags.Shared | MapFlags.Anonymous;
                offset = 0;
            }
            else if (record is { } r)
            {
                file = FileOf(r.Dev, r.Inode, e.Offset + e.Length, r.Path, (flags & MapFlags.Shared) == 0 || (prot & Prot.Write) == 0 ? (e.Offset, e.Length) : null);
            }
            else
            {
                Unsupported(e.Result < 0 ? "file mmap the kernel refused (the file is unknown: not replayed)" : "file mmap without the kernel's mapping record (replayed as private anonymous memory)");
                if (e.Result < 0)
                {
                    return;
                }

                asModel = (asModel & ~(MapFlags)0x3) | MapFlags.Private | MapFlags.Anonymous;
            }
        }

        t.PendingMapping = null;
        var ra = file is not null && e.Fd >= 0 ? OpeningOf(t.Proc, e.Fd, file) : null;
        if (e.Result < 0 && e.Result > -4096)
        {
            var r = mm.Mmap(cpu, e.Address, e.Length, prot, asModel, file, offset, ra);
            if (r.Ok)
            {
                mm.Munmap(cpu, r.Address, e.Length);
            }

            CompareResult(e, r.Error);
            return;
        }

        ulong at = (ulong)e.Result;
        if ((flags & (MapFlags.Fixed | MapFlags.FixedNoReplace)) == 0)
        {
            if (Overlaps(mm, at, at + e.Length))
            {
                ApplyInFlightUnmapFirst(e, mm, at, e.Length);
            }

            // Where would the model have placed it? The kernel's choice stands either way.
            var own = mm.Mmap(cpu, e.Address, e.Length, prot, asModel, file, offset, ra);
            if (own.Ok && own.Address == at)
            {
                return;
            }

            PlacementDivergence(t, e, raced, own.Ok ? PlacedElsewhere(t.Proc, e) : $"mmap: kernel succeeded, model's placement failed ({own.Error})");
            if (own.Ok)
            {
                mm.Munmap(cpu, own.Address, e.Length);
            }
        }

        var fixedAt = mm.Mmap(cpu, at, e.Length, prot, (asModel & ~MapFlags.FixedNoReplace) | MapFlags.Fixed, file, offset, ra);
        CompareResult(e, fixedAt.Error);
    }

    /// <summary>
    /// An anonymous MAP_HUGETLB mmap. The model checks it as the kernel does (the size bits, the
    /// placement on a huge page, the reservation against the recorded host's pools) but maps no
    /// hugetlb memory. Where it refuses, its errno is compared with the kernel's: most hosts have
    /// no huge page reserved, and a program that tries hugetlb memory first (PostgreSQL's
    /// <c>huge_pages=try</c>, a JVM's large pages) gets ENOMEM and falls back. Where the kernel
    /// mapped it, the model stands in base pages over the huge-page-rounded length at the kernel's
    /// address (counted as unsupported), so that its faults and its munmap find it.
    /// </summary>
    private void HugetlbMmap(in TraceEvent e, Thread t, bool raced, Cpu cpu, MmStruct mm, MapFlags flags, Prot prot)
    {
        t.PendingMapping = null; // the kernel's record of the mapping's /anon_hugepage file
        bool kernelFailed = e.Result < 0 && e.Result > -4096;
        bool isFixed = (flags & (MapFlags.Fixed | MapFlags.FixedNoReplace)) != 0;
        ulong at = (ulong)e.Result;
        if (!kernelFailed && !isFixed && Overlaps(mm, at, at + e.Length))
        {
            ApplyInFlightUnmapFirst(e, mm, at, e.Length);
        }

        var check = mm.Mmap(cpu, e.Address, e.Length, prot, flags, null, e.Offset);
        if (!check.NotModelled)
        {
            CompareResult(e, check.Error);
            if (kernelFailed)
            {
                return;
            }
        }
        else if (kernelFailed)
        {
            if (-e.Result == (long)Errno.ENOMEM && _machine.Options.HugetlbPools.Any(p => p.Available is null))
            {
                Unsupported("MAP_HUGETLB mmap the kernel refused (ENOMEM) where the recording host's hugetlb pools are unknown (a trace recorded before they were kept)");
            }
            else
            {
                CompareResult(e, Errno.None);
            }

            return;
        }
        else if (!isFixed && check.Address != at)
        {
            PlacementDivergence(t, e, raced, PlacedElsewhere(t.Proc, e));
        }

        Unsupported("MAP_HUGETLB mmap (replayed with base pages)");
        ulong size = mm.HugetlbPageSize(flags) ?? PageSize; // the model granted it: the size exists
        ulong length = (e.Length + size - 1) & ~(size - 1);
        var basePages = (flags & ~(MapFlags.HugeTlb | MapFlags.FixedNoReplace | MmStruct.HugetlbSizeBits)) | MapFlags.Fixed;
        if (((int)basePages & 0xf) == (int)MapFlags.SharedValidate)
        {
            basePages = (basePages & ~(MapFlags)0xf) | MapFlags.Shared; // valid for a hugetlb file, not for anonymous memory
        }

        var standIn = mm.Mmap(cpu, at, length == 0 ? e.Length : length, prot, basePages, null, 0);
        if (!standIn.Ok)
        {
            Divergence($"mmap: kernel succeeded, the model's base pages for its hugetlb memory failed ({standIn.Error})");
        }
    }

    // The batch being applied and the row of it being applied (for the look-ahead of
    // ApplyInFlightUnmapFirst), and the rows of it applied ahead of their turn, skipped when reached.
    private TraceBatch? _batch;
    private int _batchRow;
    private readonly HashSet<int> _appliedEarly = [];

    /// <summary>
    /// An mmap (or an mremap move) whose kernel-chosen range still holds a mapping in the model:
    /// the kernel never places a mapping over another without MAP_FIXED, so the range was free
    /// when it chose it, freed by an munmap or mremap of another thread of the process that was
    /// still in flight when this call returned (it entered before, and returns after: its row
    /// comes later, as rows are stamped at return). munmap drops mmap_lock to read for its zap,
    /// and a call waiting for the lock for write can be stamped before the munmap's own return.
    /// That call is applied first (its row skipped when reached), so the mapping goes where the
    /// kernel put it and is not taken away again. Looks ahead within the current batch only.
    /// </summary>
    private void ApplyInFlightUnmapFirst(in TraceEvent e, MmStruct mm, ulong at, ulong length)
    {
        if (_batch is not { } batch)
        {
            return;
        }

        ulong end = at + ((length + PageSize - 1) & PageMask);
        var kinds = batch.Kinds;
        var times = batch.TimeNs;
        for (int j = _batchRow + 1; j < kinds.Length && times[j] - e.TimeNs <= OverlapWindowNs; j++)
        {
            if (kinds[j] is not (TraceEventKind.Munmap or TraceEventKind.Mremap) || _appliedEarly.Contains(j))
            {
                continue;
            }

            var c = batch.Event(j);
            if (c.Pid != e.Pid || c.Tid == e.Tid || !c.HasResult || c.Result < 0 || c.TimeNs - Math.Max(0, c.DurationNs) >= e.TimeNs)
            {
                continue;
            }

            var (freed, freedEnd) = Freed(c);
            if (freed < end && at < freedEnd)
            {
                _appliedEarly.Add(j);
                int row = _batchRow;
                ApplyOne(c);
                _batchRow = row;
                if (!Overlaps(mm, at, end))
                {
                    return;
                }
            }
        }
    }

    private static bool Overlaps(MmStruct mm, ulong start, ulong end) => mm.FindVma(start) is { } v && v.Start < end;

    /// <summary>
    /// The range a successful munmap or mremap row left free: the munmap's range; a moved
    /// mapping's old range (unless MREMAP_DONTUNMAP kept it); a shrunk one's tail; else nothing.
    /// </summary>
    private static (ulong Start, ulong End) Freed(in TraceEvent c)
    {
        ulong end = c.Address + ((c.Length + PageSize - 1) & PageMask);
        if (c.Kind == TraceEventKind.Munmap)
        {
            return (c.Address, end);
        }

        bool moved = (ulong)c.Result != c.Address;
        if (moved && ((MremapFlags)(int)c.Flags & MremapFlags.DontUnmap) == 0)
        {
            return (c.Address, end);
        }

        ulong kept = c.Address + ((c.NewLength + PageSize - 1) & PageMask);
        return !moved && kept < end ? (kept, end) : (0, 0);
    }

    /// <summary>
    /// The divergence key of an mmap the model would have placed elsewhere, with its likely cause:
    /// a hint the kernel did not take as the model did, an address space whose <c>mmap_base</c>
    /// the trace does not give (its exec was not recorded), or neither (a layout the model does
    /// not know, such as memory an attached process mapped before the recording).
    /// </summary>
    private static string PlacedElsewhere(Proc p, in TraceEvent e) =>
        e.Address != 0 ? "mmap placed elsewhere by the model: a hint address it took otherwise (kernel's address used)"
        : !p.Mm.MmapBaseKnown ? "mmap placed elsewhere by the model: mmap_base unknown, the exec was not recorded (kernel's address used)"
        : "mmap placed elsewhere by the model (kernel's address used)";

    /// <summary>What a placement divergence's key gains when another thread's call overlapped it.</summary>
    public const string InFlight = ", another thread's mmap, munmap, mremap or brk in flight meanwhile: the kernel's order of the two is not in the trace";

    // How long a layout call is remembered for the overlap test: far longer than any one call.
    private const long OverlapWindowNs = 1_000_000_000;

    /// <summary>
    /// Notes a call that changes where the free gaps of an address space are (mmap, munmap,
    /// mremap, brk), and returns whether it overlapped another thread's: a row is stamped when its
    /// call returned, but the kernel chose the call's addresses somewhere between entry and return,
    /// so of two calls that overlapped (an mmap with MAP_POPULATE returns long after it placed its
    /// mapping) the trace does not say which placed first, and the model, replaying by return,
    /// may find another gap. A placement divergence of an earlier row that this call overlapped is
    /// moved to the key that says so (<see cref="InFlight"/>).
    /// </summary>
    private bool NoteLayoutCall(Thread t, in TraceEvent e)
    {
        var mm = t.Proc.Mm;
        long exit = e.TimeNs;
        long enter = exit - Math.Max(0, e.DurationNs);
        mm.RecentCalls.RemoveAll(c => c.Exit < exit - OverlapWindowNs);
        int tid = e.Tid;
        bool raced = mm.RecentCalls.Exists(c => c.Tid != tid && c.Exit > enter);
        for (int i = mm.Misplaced.Count - 1; i >= 0; i--)
        {
            var m = mm.Misplaced[i];
            if (m.Exit < exit - OverlapWindowNs || (m.Tid != e.Tid && m.Exit > enter))
            {
                if (m.Exit >= exit - OverlapWindowNs)
                {
                    // This call entered before that one returned: the two overlapped.
                    Count(_divergences, m.Key, -1);
                    if (_divergences[m.Key] == 0)
                    {
                        _divergences.Remove(m.Key);
                    }

                    Divergence(m.Key + InFlight);
                }

                mm.Misplaced.RemoveAt(i);
            }
        }

        mm.RecentCalls.Add((e.Tid, exit));
        return raced;
    }

    /// <summary>
    /// Counts a call the model placed elsewhere than the kernel: with <see cref="InFlight"/> when
    /// it overlapped another thread's call seen so far, else as it is, remembered in case a later
    /// row shows a call that overlapped it.
    /// </summary>
    private void PlacementDivergence(Thread t, in TraceEvent e, bool raced, string key)
    {
        if (raced)
        {
            Divergence(key + InFlight);
            return;
        }

        Divergence(key);
        t.Proc.Mm.Misplaced.Add((e.Tid, e.TimeNs, key));
    }

    /// <summary>
    /// Whether the kernel's mapping record <paramref name="m"/> is the one of an mmap that returned
    /// <paramref name="at"/> for <paramref name="length"/> bytes at file offset <paramref name="offset"/>:
    /// the record covers that range at that offset. perf reports the VMA as it is after the call,
    /// so a mapping the kernel merged with its neighbour (the next chunk of the same file at the
    /// next offset, as allocators and JIT compilers map a memfd piece by piece) is reported whole.
    /// </summary>
    private static bool RecordCovers(in TraceEvent m, ulong at, ulong length, ulong offset)
    {
        ulong len = (length + PageSize - 1) & PageMask;
        ulong end = m.Address + m.Length;
        return at >= m.Address && at + len <= end && at + len >= at && (m.Inode == 0 || m.Offset + (at - m.Address) == offset);
    }

    /// <summary>The record of a shared mapping of /dev/zero: the shmem file shmem_zero_setup made, which d_path names "/dev/zero (deleted)".</summary>
    private static bool IsSharedZero(in TraceEvent m) => m.Flags == 1 && m.Path is "/dev/zero (deleted)";

    private void Munmap(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        if (e.Result == 0 && (e.Length == 0 || (e.Address & ~PageMask) != 0))
        {
            throw Malformed($"munmap of {(e.Length == 0 ? "nothing (length 0)" : $"unaligned 0x{e.Address:x}")} recorded as a success, which no kernel returns");
        }

        NoteLayoutCall(t, e);
        CompareResult(e, t.Proc.Mm.Mm.Munmap(cpu, e.Address, e.Length));
    }

    /// <summary>How d_path names a System V segment's shmem file: <c>/SYSV</c> and the key in 8 hex digits, then " (deleted)".</summary>
    private const string SysvPathPrefix = "/SYSV";

    /// <summary>SHM_RDONLY: attach read-only.</summary>
    private const ulong ShmRdonly = 0x1000;

    /// <summary>SHM_EXEC: attach executable.</summary>
    private const ulong ShmExec = 0x8000;

    /// <summary>
    /// shmat: <c>do_shmat</c> maps the segment's shmem file shared (<c>MAP_SHARED</c>, and
    /// <c>MAP_FIXED</c> where an address was given), read and write, or read only with SHM_RDONLY,
    /// executable with SHM_EXEC, for the whole segment from offset 0. Which segment it was the
    /// shmid does not say across processes; the kernel's mapping record of the attach does: its
    /// device and inode name the segment's one shmem file, so every process that attaches the
    /// segment maps the same pages (<c>RssShmem</c> in each, one set of pages). The kernel's address
    /// stands; a call the kernel refused changed nothing and is not replayed.
    /// </summary>
    private void Shmat(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        var pending = t.PendingMapping;
        t.PendingMapping = null;
        if (e.Result < 0)
        {
            return;
        }

        ulong at = (ulong)e.Result;
        if (pending is not { } m || m.Address != at || m.Flags != 1 || m.Path is null || !m.Path.StartsWith(SysvPathPrefix, StringComparison.Ordinal))
        {
            Unsupported("shmat without the kernel's mapping record of the segment (not replayed)");
            return;
        }

        var prot = (e.Flags & ShmRdonly) != 0 ? Prot.Read : Prot.Read | Prot.Write;
        if ((e.Flags & ShmExec) != 0)
        {
            prot |= Prot.Exec;
        }

        var file = FileOf(m.Dev, m.Inode, m.Length, m.Path, content: null);
        var r = t.Proc.Mm.Mm.Mmap(cpu, at, m.Length, prot, MapFlags.Shared | MapFlags.Fixed, file, 0, null);
        CompareResult(e, r.Error);
    }

    /// <summary>
    /// shmdt, as <c>do_shmdt</c>: the first VMA at or above the address that is a segment's
    /// mapping placed as an attach at that address (its offset in the segment is its distance
    /// from the address) is unmapped, then every later VMA of the same segment placed the same
    /// way within the segment's size from the address: the pieces of that one attach that
    /// mprotect or a partial munmap left. No such VMA: EINVAL.
    /// </summary>
    private void Shmdt(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        var mm = t.Proc.Mm.Mm;
        ulong addr = e.Address;
        bool Attach(Vma v) => v.File is { } f && _sysvSegments.Contains(f) && v.Start >= addr && (v.Start - addr) / PageSize == v.PgOff;
        var errno = Errno.EINVAL;
        if ((addr & ~PageMask) == 0)
        {
            var v = mm.FindVma(addr);
            while (v is not null && !Attach(v))
            {
                v = mm.FindVma(v.End);
            }

            if (v is { File: { } segment })
            {
                ulong size = (segment.Size + PageSize - 1) & PageMask;
                for (var next = v; next is not null && next.End - addr <= size;)
                {
                    var after = mm.FindVma(next.End);
                    if (ReferenceEquals(next.File, segment) && Attach(next))
                    {
                        mm.Munmap(cpu, next.Start, next.Length);
                    }

                    next = after;
                }

                errno = Errno.None;
            }
        }

        CompareResult(e, errno);
    }

    private void Mprotect(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        CompareResult(e, t.Proc.Mm.Mm.Mprotect(cpu, e.Address, e.Length, (Prot)e.Prot));
    }

    private void Madvise(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        if ((Advice)e.Advice == Advice.Collapse && CollapseNotModelledIn(t.Proc.Mm.Mm, e.Address, e.Length, e.Result) is { } why)
        {
            Unsupported(why); // whatever the kernel answered: the model's EINVAL would read as a divergence
            return;
        }

        long start = Stopwatch.GetTimestamp();
        var r = t.Proc.Mm.Mm.Madvise(cpu, e.Address, e.Length, (Advice)e.Advice);
        t.Proc.Latency.RecordSince(start);
        if (r == Errno.EINVAL && e.Result == 0)
        {
            Unsupported($"madvise advice {e.Advice} (not modelled)");
            return;
        }

        CompareResult(e, r);
    }

    /// <summary>
    /// process_madvise: the ranges recorded before the row, applied in order to the address space
    /// of the process the pidfd named, as <c>vector_madvise</c> does: an empty range is skipped, the
    /// first range that fails ends the call, and the result is the bytes of the ranges done before
    /// it, or its error when there are none. Another process's address space takes only the
    /// advice <c>process_madvise_remote_valid</c> allows (COLD, PAGEOUT, WILLNEED, COLLAPSE); the
    /// caller's own (Linux 6.13 on) any advice.
    /// </summary>
    private void ProcessMadvise(in TraceEvent e)
    {
        var ranges = ThreadOf(e).Ranges;
        try
        {
            if (!BeginCall(e, out var t, out var cpu) || e.Length == 0)
            {
                return;
            }

            long kernel = e.Result;
            if (ranges.Count == 0)
            {
                // Without ranges only a call that failed before reading them is known to have done nothing.
                bool early = kernel == -(long)Errno.EFAULT || (kernel == -(long)Errno.EINVAL && (e.Flags != 0 || e.Length > TraceKinds.MaxMadviseRanges));
                if (!early)
                {
                    Unsupported(UnrecordedRanges);
                }

                return;
            }

            if (kernel == -(long)Errno.EBADF || kernel == -Esrch)
            {
                return; // no such pidfd, or its process is gone: refused before any range
            }

            int target = (int)ranges[0].Result;
            var caller = t.Proc.Mm;
            var mm = target == t.Proc.Pid ? caller : _procs.TryGetValue(target, out var tp) ? tp.Mm : null;
            if (mm is null)
            {
                Unsupported("process_madvise of a process outside the trace (not replayed)");
                return;
            }

            bool remote = !ReferenceEquals(mm, caller);
            if (remote && kernel == -(long)Errno.EPERM)
            {
                return; // refused for the permission (CAP_SYS_NICE, ptrace access), before any range
            }

            var advice = (Advice)e.Advice;
            if (advice == Advice.Collapse && e.Flags == 0 && ranges.Select(r => CollapseNotModelledIn(mm.Mm, r.Address, r.Length, kernel)).FirstOrDefault(w => w is not null) is { } why)
            {
                Unsupported("process_" + why);
                return;
            }

            long model;
            if (e.Flags != 0 || (remote && advice is not (Advice.Cold or Advice.PageOut or Advice.WillNeed or Advice.Collapse)))
            {
                model = -(long)Errno.EINVAL;
            }
            else
            {
                long start = Stopwatch.GetTimestamp();
                model = VectorMadvise(cpu, mm.Mm, ranges, advice);
                t.Proc.Latency.RecordSince(start);
                if (model == -(long)Errno.EINVAL && kernel >= 0)
                {
                    Unsupported($"process_madvise advice {e.Advice} (not modelled)");
                    return;
                }
            }

            if (model != kernel)
            {
                Divergence($"process_madvise: kernel {(kernel < 0 ? "errno " + -kernel : kernel + " bytes")}, model {(model < 0 ? ((Errno)(int)-model).ToString() : model + " bytes")}");
            }
        }
        finally
        {
            ranges.Clear();
        }
    }

    /// <summary>ESRCH: the pidfd's process is gone (the model's calls never return it).</summary>
    private const long Esrch = 3;

    /// <summary>The process whose address space the process_madvise of <paramref name="caller"/>'s pending ranges advises (its own when unknown).</summary>
    private Proc AdvisedProcess(Thread caller) =>
        caller.Ranges is [var first, ..] && _procs.TryGetValue((int)first.Result, out var target) ? target : caller.Proc;

    /// <summary>
    /// The <see cref="ReplayResult.Unsupported"/> key of a MADV_COLLAPSE that reaches a shmem VMA
    /// the model does not collapse, whatever the kernel answered: a private mapping of shmem, or a
    /// shmem file mapped by another address space too (after a fork), or whose pages another VMA
    /// maps as well. The model answers EINVAL there and the range keeps its small pages and its
    /// PTE table (a shmem collapse frees the table: the replay then keeps 4 kB more per collapsed
    /// table). A shared shmem mapping whose file only this address space maps, each part by one VMA
    /// (also after mprotect or munmap split it), is collapsed as the kernel does.
    /// </summary>
    public const string CollapseShmemNotModelled = "madvise MADV_COLLAPSE of shmem mapped privately or more than once (not modelled: the range keeps its small pages)";

    /// <summary>
    /// The key of a MADV_COLLAPSE of a regular file's VMA that the kernel did (a kernel with
    /// CONFIG_READ_ONLY_THP_FOR_FS); the model answers EINVAL, as a kernel without it does.
    /// </summary>
    public const string CollapseFileNotModelled = "madvise MADV_COLLAPSE of a file (not modelled: the range keeps its small pages)";

    /// <summary>
    /// Why a MADV_COLLAPSE of [addr, addr + length) cannot be replayed, or null when every VMA it
    /// reaches is one the model collapses as the kernel does (private anonymous, or the only shared
    /// mapping of a shmem file), or a regular file's VMA the kernel refused too.
    /// </summary>
    private static string? CollapseNotModelledIn(MmStruct mm, ulong addr, ulong length, long kernel)
    {
        ulong end = addr + length;
        for (ulong a = addr; a < end && end > addr;)
        {
            var v = mm.FindVma(a);
            if (v is null || v.Start >= end)
            {
                break;
            }

            if (v.File is { IsShmem: true } && ((v.Flags & VmFlags.Shared) == 0 || !MmStruct.ShmemCollapseModelled(v, v.PgOff, v.Length / Geometry.PageSize)))
            {
                return CollapseShmemNotModelled;
            }

            if (v.File is { IsShmem: false } && kernel >= 0)
            {
                return CollapseFileNotModelled;
            }

            a = v.End;
        }

        return null;
    }

    /// <summary>MAX_RW_COUNT: import_iovec caps an iovec array's total length here, shortening the range that crosses it.</summary>
    private const ulong MaxRwCount = 0x7fff_f000;

    private static long VectorMadvise(Cpu cpu, MmStruct mm, List<TraceEvent> ranges, Advice advice)
    {
        ulong done = 0, left = MaxRwCount;
        foreach (var r in ranges)
        {
            ulong len = Math.Min(r.Length, left);
            if (len == 0)
            {
                continue;
            }

            var error = mm.Madvise(cpu, r.Address, len, advice);
            if (error != Errno.None)
            {
                return done > 0 ? (long)done : -(long)error;
            }

            done += len;
            left -= len;
        }

        return (long)done;
    }

    /// <summary>
    /// brk: the model's heap starts where the trace's first brk of this address space says the
    /// break is (exec randomises it), then each call asks the model for the recorded argument and
    /// compares the break it answers with the kernel's.
    /// </summary>
    private void Brk(in TraceEvent e)
    {
        var t = ThreadOf(e);
        var p = t.Proc;
        p.InExec = false;
        if (!Finished(e))
        {
            return;
        }

        var cpu = Activate(t);
        NoteLayoutCall(t, e);
        var mm = p.Mm.Mm;
        ulong kernel = (ulong)e.Result;
        if (p.Brk == 0)
        {
            p.Brk = kernel;
            if (mm.CurrentBrk != kernel)
            {
                mm.SetBrkBase(cpu, kernel);
            }

            if (e.Address == 0 || e.Address == kernel)
            {
                return;
            }
        }

        ulong model = mm.Brk(cpu, e.Address);
        if (model != kernel)
        {
            Divergence("brk: the model's break differs from the kernel's");
        }

        p.Brk = kernel;
    }

    /// <summary>mremap: the model moves or resizes the mapping; a move lands where the kernel put it.</summary>
    private void Mremap(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        bool raced = NoteLayoutCall(t, e);
        var mm = t.Proc.Mm.Mm;
        var flags = (MremapFlags)(int)e.Flags;
        if (e.Result > 0 && (ulong)e.Result != e.Address && (flags & MremapFlags.Fixed) == 0 && Overlaps(mm, (ulong)e.Result, (ulong)e.Result + e.NewLength))
        {
            // A move to a range the model still maps: as for mmap, another thread's call that
            // freed it was in flight.
            ApplyInFlightUnmapFirst(e, mm, (ulong)e.Result, e.NewLength);
        }

        var r = mm.Mremap(cpu, e.Address, e.Length, e.NewLength, flags, e.NewAddress);
        if (r.Ok && e.Result > 0 && r.Address != (ulong)e.Result)
        {
            // The model moved it elsewhere: move it on to the kernel's address.
            PlacementDivergence(t, e, raced, "mremap placed elsewhere by the model (kernel's address used)");
            var to = mm.Mremap(cpu, r.Address, e.NewLength, e.NewLength, MremapFlags.MayMove | MremapFlags.Fixed, (ulong)e.Result);
            if (!to.Ok)
            {
                Divergence($"mremap: the model could not move the mapping to the kernel's address ({to.Error})");
            }
        }

        if (r.Ok && e.Result > 0 && e.NewLength > e.Length)
        {
            GrowFileUnder(mm, (ulong)e.Result, e.NewLength);
        }

        CompareResult(e, r.Error);
    }

    /// <summary>
    /// A file mapping grown by mremap (a program that maps a growing file, as a database maps its
    /// file and remaps it as it writes to it) is taken to map the file's content to its new end, as
    /// a new mmap of that range is (<see cref="FileOf"/>): the file grew by writes the trace does
    /// not hold, and a fault below the kernel's end of file finds a page where a model with the
    /// size first recorded would raise SIGBUS. Not the shmem object behind shared anonymous memory
    /// (MAP_SHARED | MAP_ANONYMOUS, a shared mapping of /dev/zero): no descriptor names it, so
    /// nothing grows it, and a grown mapping's pages past its size are SIGBUS as the kernel answers.
    /// </summary>
    private static void GrowFileUnder(MmStruct mm, ulong start, ulong length)
    {
        if (mm.FindVma(start) is { File: { } file } v && v.Start <= start && file.Id.Device != FileTable.ShmemDevice)
        {
            ulong firstByte = (v.PgOff * PageSize) + (start - v.Start);
            file.Grow(firstByte + length);
        }
    }

    /// <summary>
    /// An attached recording's pages at the moment of its layout: faulted in as found (present
    /// anonymous pages written, the others read), so the replay starts from the tables they need.
    /// Swapped-out pages, and pages where the model has no VMA it can fault in, are counted.
    /// </summary>
    private void Resident(in TraceEvent e)
    {
        var t = ThreadOf(e);
        var cpu = Activate(t);
        ulong end = e.Address + e.Length;
        if ((e.Flags & TraceKinds.PageIsPresent) == 0)
        {
            long pages = (long)(e.Length >> 12);
            if ((e.Flags & TraceKinds.PageIsFile) != 0 || _machine.Phys.Swap is null)
            {
                Count(_unsupported, (e.Flags & TraceKinds.PageIsFile) != 0
                    ? "file pages swapped out (or migrating) when the recording attached (not rebuilt)"
                    : "pages swapped out when the recording attached (not rebuilt: the trace does not say how many, so the replay has no swap)", pages);
                return;
            }

            long rebuilt = SwapOutFound(t, cpu, e.Address, end);
            if (rebuilt < pages)
            {
                Count(_divergences, "pages swapped out at the attach that the model could not swap out (no writable private VMA there, or mlocked)", pages - rebuilt);
            }

            return;
        }

        bool anonymous = (e.Flags & (TraceKinds.PageIsFile | TraceKinds.PageIsPfnZero)) == 0;
        var (_, left) = t.Proc.Mm.Mm.PopulateFound(cpu, e.Address, end, anonymous);
        if (left > 0)
        {
            Count(_divergences, "pages present at the attach that the model could not fault in (no VMA, PROT_NONE or VM_IO there)", left);
        }
    }

    /// <summary>
    /// Anonymous pages an attached process had swapped out: each is written (a page of its own)
    /// and paged out at once (MADV_PAGEOUT), so the replay starts with the swap entry in its PTE,
    /// the table that holds it, and VmSwap, as the kernel had them. Returns the pages swapped.
    /// </summary>
    private static long SwapOutFound(Thread t, Cpu cpu, ulong start, ulong end)
    {
        var mm = t.Proc.Mm.Mm;
        long before = mm.Status().VmSwapKb;
        mm.PopulateFound(cpu, start, end, anonymous: true);
        mm.Madvise(cpu, start, end - start, Advice.PageOut);
        return (mm.Status().VmSwapKb - before) / 4;
    }

    /// <summary>
    /// Where an attached recording found PTE tables: after its pages were faulted in, a 2 MiB block
    /// still without a table held an empty one (a table the kernel kept when its last page went),
    /// made here as the kernel had it, under the designs that keep such tables (none, pt-reclaim,
    /// and the scanner, which frees them when it finds them). A design that counts each table's
    /// entries (atomic, pte-ref, pte-ref-batched, occupancy) frees a table with its last entry:
    /// under it the process would not have had them, and the replay starts without them.
    /// </summary>
    private void PageTables(in TraceEvent e)
    {
        var t = ThreadOf(e);
        var cpu = Activate(t);
        var mm = t.Proc.Mm.Mm;
        var (found, left) = mm.MakeFoundPteTables(cpu, e.Address, e.Address + e.Length, make: mm.Design is not IRefcountedTables);
        t.Proc.Result.EmptyTablesAtAttach += found;
        if (left > 0)
        {
            Count(_divergences, "PTE tables present at the attach that the model could not make (no VMA there)", left);
        }
    }

    private void Mlock(in TraceEvent e)
    {
        if (!BeginCall(e, out var t, out var cpu))
        {
            return;
        }

        var mm = t.Proc.Mm.Mm;
        var r = e.Kind switch
        {
            TraceEventKind.Mlock => mm.Mlock(cpu, e.Address, e.Length),
            TraceEventKind.Mlock2 => mm.Mlock2(cpu, e.Address, e.Length, (MlockFlags)(int)e.Flags),
            TraceEventKind.Munlock => mm.Munlock(cpu, e.Address, e.Length),
            TraceEventKind.Mlockall => mm.Mlockall(cpu, (MlockallFlags)(int)e.Flags),
            _ => mm.Munlockall(cpu),
        };
        CompareResult(e, r);
    }

    /// <summary>
    /// A VMA of the initial layout that was sealed when the layout was read (at exec, the system
    /// mappings of a kernel with <c>CONFIG_MSEAL_SYSTEM_MAPPINGS</c>; at attach, what the process
    /// sealed before): sealed in the model too, so that a later munmap, mprotect or mremap of it
    /// fails with EPERM as it did on the host. Not a call: a refusal is a difference of layouts.
    /// </summary>
    private void LayoutSeal(in TraceEvent e)
    {
        var t = ThreadOf(e);
        var cpu = Activate(t);
        var errno = t.Proc.Mm.Mm.Mseal(cpu, e.Address, e.Length, 0);
        if (errno != Errno.None)
        {
            Count(_divergences, $"a sealed VMA of the layout that the model could not seal ({errno})");
        }
    }

    private void Mseal(in TraceEvent e)
    {
        if (BeginCall(e, out var t, out var cpu))
        {
            CompareResult(e, t.Proc.Mm.Mm.Mseal(cpu, e.Address, e.Length, e.Flags));
        }
    }

    // ---- state ----

    private sealed class SharedMm(MmStruct mm)
    {
        public MmStruct Mm { get; } = mm;

        public int Users { get; set; } = 1;

        /// <summary>Whether the address space has the recorded process's <c>mmap_base</c> (learnt at its exec, or inherited by fork).</summary>
        public bool MmapBaseKnown { get; set; }

        /// <summary>The layout calls of the last second, by thread and return time (see NoteLayoutCall).</summary>
        public List<(int Tid, long Exit)> RecentCalls { get; } = [];

        /// <summary>Placement divergences of the last second not known to have overlapped another thread's call.</summary>
        public List<(int Tid, long Exit, string Key)> Misplaced { get; } = [];
    }

    private sealed class Proc(int pid, SharedMm mm, ReplayProcessResult result)
    {
        public int Pid { get; } = pid;

        public SharedMm Mm { get; set; } = mm;

        public ReplayProcessResult Result { get; } = result;

        public int Threads { get; set; }

        public bool InExec { get; set; }

        public ulong Brk { get; set; }

        public (ulong Start, ulong End)? Stack { get; set; }

        /// <summary>The open files the process mapped through, by descriptor (-1: its layout's) and file.</summary>
        public Dictionary<(int Fd, FileId Id), FileRaState> Files { get; set; } = [];

        public LatencyRecorder Latency { get; } = new();

        /// <summary>Indexes of samples that syscalls under way when they were taken may still change.</summary>
        public List<int> Open { get; } = [];

        /// <summary>Indexes of samples read since the process's last fault or syscall.</summary>
        public List<int> Quiet { get; } = [];

        /// <summary>Samples that an exec may have overtaken: they get the new address space's figures at the exec sample.</summary>
        public List<int> ExecPending { get; } = [];

        /// <summary>The new address space's figures with only the exec arguments on its stack.</summary>
        public MmStatus? ExecStart { get; set; }
    }

    private sealed class Thread(int tid, Proc proc, Cpu cpu)
    {
        public int Tid { get; } = tid;

        public Proc Proc { get; } = proc;

        public Cpu Cpu { get; } = cpu;

        /// <summary>The kernel's last mapping record from this thread: it names the file of the mmap that returns next.</summary>
        public TraceEvent? PendingMapping { get; set; }

        /// <summary>How the model refused this thread's last user fault, until the thread's next row says what the kernel did.</summary>
        public FaultOutcome? RefusedFault { get; set; }

        /// <summary>The ranges of the process_madvise row that comes next from this thread.</summary>
        public List<TraceEvent> Ranges { get; } = [];
    }
}
