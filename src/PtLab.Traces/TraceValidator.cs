using System.Globalization;

namespace PtLab.Traces;

/// <summary>
/// A trace or perf script text that is not what it claims to be. The message names the file and
/// the record (a row of a trace, a line of text) and what is wrong with it.
/// </summary>
public sealed class TraceFormatException(string message) : Exception(message);

/// <summary>
/// The rules every row of a trace obeys, checked row by row in file order by the writer, the
/// reader and the importer: the kind's fields are present (and no others), times never go back,
/// and every row belongs to a task the trace introduced (a <c>task</c> row, a <c>newtask</c>, an
/// <c>exec</c>) and that has not exited.
/// </summary>
internal sealed class TraceValidator
{
    /// <summary>PATH_MAX: the longest path (or comm, or file name) a row may carry.</summary>
    public const int MaxPath = 4096;

    private readonly Dictionary<int, int> _tasks = []; // tid -> pid of live tasks
    private long _lastTime = long.MinValue;

    // The madvise_range rows that wait for their process_madvise row: one run right before it, with its time and task.
    private int _ranges, _rangeTid;
    private long _rangeTime;

    // The cache_range rows a file_cache row announced and that have not come yet: the file, its
    // size rounded up to a page, the time and task of the announcement, and where the next run may start.
    private long _cacheRanges;
    private int _cacheTid;
    private long _cacheTime;
    private string? _cacheDev;
    private ulong _cacheInode, _cacheEnd, _cacheNext;

    /// <param name="admitUnknownTasks">Admit rows of tasks never introduced (a trace that lost events may have lost their creation).</param>
    /// <param name="allowUnfinished">Admit syscall rows without a result (a recording stopped, or attached, mid-syscall).</param>
    public TraceValidator(bool admitUnknownTasks, bool allowUnfinished)
    {
        AdmitUnknownTasks = admitUnknownTasks;
        AllowUnfinished = allowUnfinished;
    }

    /// <summary>Whether rows of tasks never introduced are admitted (they are added to the live set).</summary>
    public bool AdmitUnknownTasks { get; set; }

    public bool AllowUnfinished { get; }

    /// <summary>Syscall rows seen without a result.</summary>
    public long Unfinished { get; private set; }

    // The last task found live: rows come in runs of one thread, and the task set changes rarely.
    private int _livePid = -1, _liveTid = -1;

    /// <summary>Whether (pid, tid) is a live task now.</summary>
    public bool IsLive(int pid, int tid)
    {
        if (pid == _livePid && tid == _liveTid)
        {
            return true;
        }

        if (_tasks.TryGetValue(tid, out int p) && p == pid)
        {
            (_livePid, _liveTid) = (pid, tid);
            return true;
        }

        return false;
    }

    /// <summary>Some live thread of <paramref name="pid"/>, or 0.</summary>
    public int AnyThreadOf(int pid)
    {
        if (IsLive(pid, pid))
        {
            return pid;
        }

        foreach (var (tid, p) in _tasks)
        {
            if (p == pid)
            {
                return tid;
            }
        }

        return 0;
    }

    /// <summary>
    /// The short check of a fault row whose columns are those of its kind: true when it passes every
    /// rule (time order, a live task, an error code in 16 bits); false sends it to <see cref="Check"/>,
    /// which says what is wrong or admits it.
    /// </summary>
    public bool CheckFault(long timeNs, int pid, int tid, ulong errorCode)
    {
        if (timeNs < _lastTime || timeNs < 0 || pid <= 0 || tid <= 0 || errorCode > 0xffff || _ranges != 0 || _cacheRanges != 0 || !IsLive(pid, tid))
        {
            return false;
        }

        _lastTime = timeNs;
        return true;
    }

    /// <summary>Checks <paramref name="e"/> and applies it to the task set; returns why it is invalid, or null.</summary>
    public string? Check(in TraceEvent e)
    {
        string? bad = Fields(e);
        if (bad is not null)
        {
            return bad;
        }

        if (e.TimeNs < 0)
        {
            return $"time {e.TimeNs} is negative";
        }

        if (e.TimeNs < _lastTime)
        {
            return $"time {Ns(e.TimeNs)} is before the previous row's {Ns(_lastTime)}: rows must be in time order";
        }

        bad = Values(e) ?? Ranges(e) ?? CacheRanges(e);
        if (bad is not null)
        {
            return bad;
        }

        bad = Tasks(e);
        if (bad is not null)
        {
            return bad;
        }

        _lastTime = e.TimeNs;
        return null;
    }

    /// <summary>Why the rows end badly (a range list with no process_madvise row after it, a file_cache row missing some of its cache_range rows), or null: call after the last row.</summary>
    public string? Finish() =>
        _ranges != 0 ? $"the trace ends after {_ranges} madvise_range rows of tid {_rangeTid} with no process_madvise row after them (a truncated range list)"
        : _cacheRanges != 0 ? $"the trace ends {_cacheRanges} cache_range rows short of what the file_cache row of tid {_cacheTid} announced (a truncated residency)"
        : null;

    private string? CacheRanges(in TraceEvent e)
    {
        const ulong page = 4096;
        if (_cacheRanges > 0)
        {
            if (e.Kind != TraceEventKind.CacheRange || e.Tid != _cacheTid || e.TimeNs != _cacheTime)
            {
                return $"{TraceKinds.Name(e.Kind)} row of tid {e.Tid} where {_cacheRanges} more cache_range rows of the file_cache row of tid {_cacheTid} must come (a truncated residency)";
            }

            if (e.Dev != _cacheDev || e.Inode != _cacheInode)
            {
                return $"cache_range row names file {TraceMetadata.Trim(e.Dev ?? "")} {e.Inode}, not the file_cache row's {_cacheDev} {_cacheInode}";
            }

            if (e.Offset % page != 0 || e.Length == 0 || e.Length % page != 0 || e.Offset < _cacheNext || e.Offset > _cacheEnd || e.Length > _cacheEnd - e.Offset)
            {
                return $"cache_range row of {e.Length:x} bytes at offset 0x{e.Offset:x}: runs must be whole pages, in increasing order, not overlapping, within the file's {_cacheEnd:x} bytes";
            }

            if (e.Is(TraceFields.Flags))
            {
                if (e.Flags > TraceKinds.MaxFolioOrder || e.Offset % (page << (int)e.Flags) != 0 || e.Length % (page << (int)e.Flags) != 0)
                {
                    return $"cache_range row of {e.Length:x} bytes at offset 0x{e.Offset:x} has folio order {e.Flags}: the order must be at most {TraceKinds.MaxFolioOrder} and the run whole folios";
                }
            }

            _cacheNext = e.Offset + e.Length;
            _cacheRanges--;
            return null;
        }

        if (e.Kind == TraceEventKind.CacheRange)
        {
            return "cache_range row with no file_cache row announcing it right before";
        }

        if (e.Kind == TraceEventKind.FileCache)
        {
            if (e.Length > long.MaxValue - page)
            {
                return $"file_cache row gives the file a size of {e.Length:x} bytes";
            }

            ulong end = (e.Length + page - 1) & ~(page - 1);
            if (e.Result < 0 || e.Result > TraceKinds.MaxCacheRanges || (ulong)e.Result > end / page)
            {
                return $"file_cache row announces {e.Result} cache_range rows for a file of {e.Length} bytes (at most one per page, at most {TraceKinds.MaxCacheRanges})";
            }

            if (!IsDev(e.Dev!))
            {
                return $"file_cache row has dev '{TraceMetadata.Trim(e.Dev!)}' (must be hex major:minor)";
            }

            (_cacheRanges, _cacheTid, _cacheTime, _cacheDev, _cacheInode, _cacheEnd, _cacheNext) = (e.Result, e.Tid, e.TimeNs, e.Dev, e.Inode, end, 0);
        }

        return null;
    }

    private string? Ranges(in TraceEvent e)
    {
        if (_ranges > 0 && (e.Tid != _rangeTid || e.TimeNs != _rangeTime || e.Kind is not (TraceEventKind.MadviseRange or TraceEventKind.ProcessMadvise)))
        {
            return $"{TraceKinds.Name(e.Kind)} row of tid {e.Tid} where the process_madvise row of the {_ranges} madvise_range rows of tid {_rangeTid} before it must come (a truncated range list)";
        }

        if (e.Kind == TraceEventKind.MadviseRange)
        {
            if (_ranges == TraceKinds.MaxMadviseRanges)
            {
                return $"more than {TraceKinds.MaxMadviseRanges} madvise_range rows in a row (UIO_MAXIOV)";
            }

            (_ranges, _rangeTid, _rangeTime) = (_ranges + 1, e.Tid, e.TimeNs);
        }
        else if (e.Kind == TraceEventKind.ProcessMadvise && _ranges > 0)
        {
            if ((ulong)_ranges != e.Length)
            {
                return $"process_madvise row has vlen {e.Length} but {_ranges} madvise_range rows before it (all of a call's ranges or none)";
            }

            _ranges = 0;
        }

        return null;
    }

    private string? Fields(in TraceEvent e)
    {
        if ((uint)e.Kind >= TraceKinds.Count)
        {
            return $"unknown kind {(int)e.Kind}";
        }

        var (required, optional) = TraceKinds.Fields(e.Kind);
        var missing = required & ~e.Has;
        if (missing != 0)
        {
            return $"{TraceKinds.Name(e.Kind)} row has no {ColumnNames(missing)}";
        }

        var extra = e.Has & ~(required | optional);
        if (extra != 0)
        {
            return $"{TraceKinds.Name(e.Kind)} row has {ColumnNames(extra)}, which a {TraceKinds.Name(e.Kind)} row does not carry";
        }

        if (TraceKinds.IsSyscall(e.Kind))
        {
            bool result = e.Is(TraceFields.Result), duration = e.Is(TraceFields.Duration);
            if (result != duration)
            {
                return $"{TraceKinds.Name(e.Kind)} row has a {(result ? "result" : "duration_ns")} but no {(result ? "duration_ns" : "result")}";
            }

            if (!result)
            {
                if (!AllowUnfinished)
                {
                    return $"{TraceKinds.Name(e.Kind)} row has no result, but the trace is neither truncated nor attached: every syscall returned";
                }

                Unfinished++;
            }
        }

        return null;
    }

    private static string? Values(in TraceEvent e)
    {
        if (e.Kind == TraceEventKind.Lost)
        {
            if (e.Pid != 0 || e.Tid != 0)
            {
                return "lost row has a pid or tid (both must be 0)";
            }

            return e.Length is 0 or > long.MaxValue ? $"lost row counts {(long)e.Length} events (must be positive)" : null;
        }

        if (TraceKinds.IsPageCacheChange(e.Kind))
        {
            return PageCacheChange(e);
        }

        if (e.Pid <= 0 || e.Tid <= 0)
        {
            return $"pid {e.Pid} / tid {e.Tid}: both must be positive";
        }

        if (e.Path is { Length: > MaxPath })
        {
            return $"path of {e.Path.Length} characters (at most {MaxPath})";
        }

        if (e.Is(TraceFields.Duration) && e.DurationNs < 0)
        {
            return $"duration_ns {e.DurationNs} is negative";
        }

        switch (e.Kind)
        {
            case TraceEventKind.Mmap2 or TraceEventKind.Vma:
                if (e.Length == 0 || e.Address + e.Length < e.Address)
                {
                    return $"{TraceKinds.Name(e.Kind)} row maps {e.Length:x} bytes at 0x{e.Address:x}: empty or past the end of the address space";
                }

                if (e.Prot is < 0 or > 7)
                {
                    return $"{TraceKinds.Name(e.Kind)} row has prot {e.Prot} (must be PROT_READ|PROT_WRITE|PROT_EXEC bits)";
                }

                if (e.Flags is not (1 or 2))
                {
                    return $"{TraceKinds.Name(e.Kind)} row has flags {e.Flags} (must be 1, MAP_SHARED, or 2, MAP_PRIVATE)";
                }

                if (!IsDev(e.Dev!))
                {
                    return $"{TraceKinds.Name(e.Kind)} row has dev '{TraceMetadata.Trim(e.Dev!)}' (must be hex major:minor)";
                }

                break;
            case TraceEventKind.NewTask when e.Result is <= 0 or > int.MaxValue:
                return $"newtask row creates tid {e.Result} (must be positive)";
            case TraceEventKind.Exec when e.Result is <= 0 or > int.MaxValue:
                return $"exec row's calling tid {e.Result} is not positive";
            case TraceEventKind.Exec when e.Tid != e.Pid:
                return $"exec row has tid {e.Tid} in pid {e.Pid}: after exec the task is its process's leader";
            case TraceEventKind.MadviseRange when e.Result is < 0 or > int.MaxValue:
                return $"madvise_range row names target pid {e.Result} (must be a pid, or 0 for unknown)";
            case TraceEventKind.TaskExit when e.Is(TraceFields.Flags) && e.Flags > 1:
                return $"task_exit row has flags {e.Flags} (must be 0 or 1, group_dead)";
            case TraceEventKind.Signal when e.Result is not (TraceKinds.SigBus or TraceKinds.SigSegv) || e.Flags is 0 or > int.MaxValue:
                return $"signal row has signal {e.Result} and si_code {e.Flags} (must be SIGBUS 7 or SIGSEGV 11, with a positive code)";
            case TraceEventKind.Resident when (e.Flags & ~(TraceKinds.PageIsFile | TraceKinds.PageIsPresent | TraceKinds.PageIsSwapped | TraceKinds.PageIsPfnZero | TraceKinds.PageIsHuge)) != 0
                                              || (e.Flags & (TraceKinds.PageIsPresent | TraceKinds.PageIsSwapped)) == 0:
                return $"resident row has categories 0x{e.Flags:x} (must be PAGE_IS_PRESENT 0x8 or PAGE_IS_SWAPPED 0x10, with FILE 0x4, PFNZERO 0x20, HUGE 0x40)";
            case TraceEventKind.Resident or TraceEventKind.PageTables or TraceEventKind.VmaSealed when e.Length == 0 || ((e.Address | e.Length) & 0xfff) != 0 || e.Address + e.Length > PerfScriptImporter.UserAddressLimit || e.Address + e.Length < e.Address:
                return $"{TraceKinds.Name(e.Kind)} row has range 0x{e.Address:x}+0x{e.Length:x} (must be whole pages of the user address space)";
            case TraceEventKind.Fault or TraceEventKind.KernelFault when e.Flags > 0xffff:
                return $"{TraceKinds.Name(e.Kind)} row has error code 0x{e.Flags:x} (must fit in 16 bits)";
        }

        if (TraceKinds.IsStatus(e.Kind))
        {
            var s = e.Status;
            if (s.VmSizeKb < 0 || s.VmRssKb < 0 || s.RssAnonKb < 0 || s.RssFileKb < 0 || s.RssShmemKb < 0 || s.VmSwapKb < 0 || s.VmPteKb < 0)
            {
                return $"{TraceKinds.Name(e.Kind)} row has a negative figure";
            }
        }

        return null;
    }

    /// <summary>A cache_add or cache_delete row: no task, a folio of a valid order at an offset aligned to its size, a hex device, a context pid.</summary>
    private static string? PageCacheChange(in TraceEvent e)
    {
        string kind = TraceKinds.Name(e.Kind);
        if (e.Pid != 0 || e.Tid != 0)
        {
            return $"{kind} row has a pid or tid (both must be 0: the page cache belongs to no task; result names the process)";
        }

        if (e.Flags > TraceKinds.MaxFolioOrder)
        {
            return $"{kind} row has folio order {e.Flags} (at most {TraceKinds.MaxFolioOrder})";
        }

        ulong size = 4096UL << (int)e.Flags;
        if (e.Offset % size != 0 || e.Offset > long.MaxValue - size)
        {
            return $"{kind} row has a folio of order {e.Flags} at offset 0x{e.Offset:x} (must be aligned to its {size} bytes, below 2^63)";
        }

        if (!IsDev(e.Dev!))
        {
            return $"{kind} row has dev '{TraceMetadata.Trim(e.Dev!)}' (must be hex major:minor)";
        }

        return e.Result is < 0 or > int.MaxValue ? $"{kind} row names process {e.Result} (must be a pid, or 0 for unknown)" : null;
    }

    private string? Tasks(in TraceEvent e)
    {
        if (TraceKinds.IsPageCacheChange(e.Kind))
        {
            return null;
        }

        switch (e.Kind)
        {
            case TraceEventKind.Lost:
                return null;
            case TraceEventKind.Task:
                if (_tasks.TryGetValue(e.Tid, out int owner))
                {
                    return $"task row for tid {e.Tid}, which is already a live task of pid {owner}";
                }

                _livePid = _liveTid = -1;
                _tasks[e.Tid] = e.Pid;
                return null;
            case TraceEventKind.Exec:
                {
                    int caller = (int)e.Result;
                    if (!IsLive(e.Pid, e.Tid) && !IsLive(e.Pid, caller) && !AdmitUnknownTasks)
                    {
                        return $"exec in pid {e.Pid} by tid {caller}, which is not a live task of pid {e.Pid}";
                    }

                    // Exec leaves the process one thread, the leader: every other thread is gone.
                    int pid = e.Pid;
                    foreach (int tid in _tasks.Where(p => p.Value == pid).Select(p => p.Key).ToList())
                    {
                        _livePid = _liveTid = -1;
                        _tasks.Remove(tid);
                    }

                    _livePid = _liveTid = -1;
                    _tasks[e.Pid] = e.Pid;
                    return null;
                }
        }

        if (!IsLive(e.Pid, e.Tid))
        {
            if (!AdmitUnknownTasks)
            {
                return _tasks.TryGetValue(e.Tid, out int other)
                    ? $"tid {e.Tid} belongs to pid {other}, not pid {e.Pid}"
                    : $"unknown task: pid {e.Pid} tid {e.Tid} was never introduced (by a task, newtask or exec row) or has exited";
            }

            _livePid = _liveTid = -1;
            _tasks[e.Tid] = e.Pid;
        }

        switch (e.Kind)
        {
            case TraceEventKind.NewTask:
                int child = e.ChildTid;
                if (_tasks.TryGetValue(child, out int existing))
                {
                    if (!AdmitUnknownTasks)
                    {
                        return $"newtask creates tid {child}, which is already a live task of pid {existing}";
                    }
                }

                _livePid = _liveTid = -1;
                _tasks[child] = e.ChildPid;
                break;
            case TraceEventKind.TaskExit:
                _livePid = _liveTid = -1;
                _tasks.Remove(e.Tid);
                break;
        }

        return null;
    }

    private static bool IsDev(string dev)
    {
        int colon = dev.IndexOf(':', StringComparison.Ordinal);
        return colon > 0 && colon < dev.Length - 1 && dev.Length <= 17 &&
               dev.AsSpan(0, colon).ContainsAnyExcept("0123456789abcdef") is false &&
               dev.AsSpan(colon + 1).ContainsAnyExcept("0123456789abcdef") is false;
    }

    internal static string ColumnNames(TraceFields fields) =>
        string.Join(", ", TraceSchema.Columns.Where(c => c.Field != TraceFields.None && (fields & c.Field) != 0)
                                            .Select(c => c.Field == TraceFields.Status ? "status figures" : c.Name)
                                            .Distinct());

    internal static string Ns(long ns) =>
        (ns / 1_000_000_000).ToString(CultureInfo.InvariantCulture) + "." + (Math.Abs(ns) % 1_000_000_000).ToString("D9", CultureInfo.InvariantCulture);
}
