namespace PtLab.Traces;

/// <summary>One process of a trace, as <see cref="TraceSummary"/> sees it.</summary>
public sealed class ProcessSummary
{
    /// <summary>The process id.</summary>
    public required int Pid { get; init; }

    /// <summary>Its last exec's file name, else its comm.</summary>
    public string Name { get; internal set; } = "";

    /// <summary>Distinct threads seen.</summary>
    public int Threads => ThreadIds.Count;

    internal HashSet<int> ThreadIds { get; } = [];

    /// <summary>User and kernel page faults.</summary>
    public long Faults { get; internal set; }

    /// <summary>Address-space syscalls.</summary>
    public long Syscalls { get; internal set; }

    /// <summary>Status samples of any kind.</summary>
    public long Samples { get; internal set; }

    /// <summary>Rows of its initial layout(s).</summary>
    public long InitialVmas { get; internal set; }

    /// <summary>The largest VmPTE sampled, kB.</summary>
    public long PeakVmPteKb { get; internal set; }

    /// <summary>VmPTE at its last exit sample, kB, when there is one.</summary>
    public long? ExitVmPteKb { get; internal set; }

    /// <summary>The exit status its last exit sample carries.</summary>
    public long? ExitStatus { get; internal set; }

    /// <summary>First and last row times.</summary>
    public long FirstNs { get; internal set; }

    /// <inheritdoc cref="FirstNs"/>
    public long LastNs { get; internal set; }
}

/// <summary>What <c>ptlab trace info</c> prints: counts per kind, processes, duration, losses.</summary>
public sealed class TraceSummary
{
    /// <summary>Rows per kind.</summary>
    public long[] Counts { get; } = new long[TraceKinds.Count];

    /// <summary>All rows.</summary>
    public long Rows { get; private set; }

    /// <summary>The first and last row times.</summary>
    public long FirstNs { get; private set; }

    /// <inheritdoc cref="FirstNs"/>
    public long LastNs { get; private set; }

    /// <summary>Events the lost rows count.</summary>
    public long LostEvents { get; private set; }

    /// <summary>
    /// Pages the trace puts in the page cache: those of its residency runs (<c>cache_range</c>)
    /// and of the folios its changes add (<c>cache_add</c>), deletions not subtracted: a bound on
    /// the page cache a replay holds beyond the pages its faults bring in.
    /// </summary>
    public long CachedPages { get; private set; }

    /// <summary>The processes, by pid.</summary>
    public IReadOnlyList<ProcessSummary> Processes => [.. _processes.Values.OrderBy(p => p.FirstNs).ThenBy(p => p.Pid)];

    private readonly Dictionary<int, ProcessSummary> _processes = [];

    /// <summary>Streams <paramref name="reader"/> once (every row is checked on the way).</summary>
    public static TraceSummary Compute(TraceReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var s = new TraceSummary();
        foreach (var b in reader.ReadBatches())
        {
            s.Add(b);
        }

        return s;
    }

    // Faults, nearly every row of a big trace, are counted from the columns while they come from
    // the process and thread of the row before; any other row is taken whole.
    private void Add(TraceBatch b)
    {
        var kinds = b.Kinds;
        var times = b.TimeNs;
        var pids = b.Pids;
        var tids = b.Tids;
        ProcessSummary? last = null;
        int lastTid = 0;
        for (int r = 0; r < kinds.Length; r++)
        {
            var k = kinds[r];
            if (last is not null && TraceKinds.IsFault(k) && pids[r] == last.Pid && tids[r] == lastTid)
            {
                Rows++;
                LastNs = last.LastNs = times[r];
                Counts[(int)k]++;
                last.Faults++;
                continue;
            }

            var e = b.Event(r);
            Add(e);
            last = e.Kind == TraceEventKind.Lost || TraceKinds.IsPageCacheChange(e.Kind) ? null : _processes[e.Pid];
            lastTid = e.Tid;
        }
    }

    private void Add(in TraceEvent e)
    {
        if (Rows++ == 0)
        {
            FirstNs = e.TimeNs;
        }

        LastNs = e.TimeNs;
        Counts[(int)e.Kind]++;
        if (e.Kind == TraceEventKind.Lost)
        {
            LostEvents += (long)e.Length;
            return;
        }

        if (TraceKinds.IsPageCacheChange(e.Kind))
        {
            if (e.Kind == TraceEventKind.CacheAdd && e.Flags <= TraceKinds.MaxFolioOrder)
            {
                CachedPages += 1L << (int)e.Flags;
            }

            return; // rows of no task
        }

        if (e.Kind == TraceEventKind.CacheRange)
        {
            CachedPages += (long)Math.Min(e.Length / 4096, long.MaxValue / 4);
        }

        if (!_processes.TryGetValue(e.Pid, out var p))
        {
            p = new ProcessSummary { Pid = e.Pid, FirstNs = e.TimeNs };
            _processes[e.Pid] = p;
        }

        p.LastNs = e.TimeNs;
        p.ThreadIds.Add(e.Tid);
        switch (e.Kind)
        {
            case TraceEventKind.Task when p.Name.Length == 0:
            case TraceEventKind.Exec:
                p.Name = e.Path ?? "";
                break;
            case TraceEventKind.NewTask when e.ChildPid != e.Pid:
                if (!_processes.ContainsKey(e.ChildPid))
                {
                    _processes[e.ChildPid] = new ProcessSummary { Pid = e.ChildPid, Name = e.Path ?? "", FirstNs = e.TimeNs, LastNs = e.TimeNs };
                }

                break;
            case TraceEventKind.Vma:
                p.InitialVmas++;
                break;
        }

        if (TraceKinds.IsFault(e.Kind))
        {
            p.Faults++;
        }
        else if (TraceKinds.IsSyscall(e.Kind))
        {
            p.Syscalls++;
        }
        else if (TraceKinds.IsStatus(e.Kind))
        {
            p.Samples++;
            p.PeakVmPteKb = Math.Max(p.PeakVmPteKb, e.Status.VmPteKb);
            if (e.Kind == TraceEventKind.StatusExit)
            {
                p.ExitVmPteKb = e.Status.VmPteKb;
                p.ExitStatus = e.HasResult ? e.Result : p.ExitStatus;
            }
        }
    }
}
