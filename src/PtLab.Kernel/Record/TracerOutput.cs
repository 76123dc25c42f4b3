using System.Globalization;
using PtLab.Traces;

namespace PtLab.Kernel.Record;

/// <summary>
/// Reads what the ptrace tracer (Record/tracer.c) wrote: status samples, the layouts read at exec
/// or attach, exit statuses, and the pids of the tracer and the command. Its header comment
/// documents the lines.
/// </summary>
internal sealed class TracerOutput
{
    public int TracerPid { get; private set; }

    public int RootPid { get; private set; }

    /// <summary>
    /// Attach: the moment every thread was stopped for the layout read (ns, CLOCK_MONOTONIC); 0 in
    /// exec mode. Faults and address-space calls perf stamped before it are in the layout.
    /// </summary>
    public long AttachMomentNs { get; private set; }

    /// <summary>The root process's wait status when the tracer saw it reaped.</summary>
    public int? RootWaitStatus { get; private set; }

    /// <summary>
    /// The status the root process's leader exited with (its X line): an attached process's exit
    /// status, which the tracer, not its parent, cannot reap.
    /// </summary>
    public int? RootExitStatus { get; private set; }

    /// <summary>Why the command could not start (the tracer's own words), or null.</summary>
    public string? StartError { get; private set; }

    public List<string> Errors { get; } = [];

    public bool Interrupted { get; private set; }

    public bool Done { get; private set; }

    /// <summary>The rows, in time order.</summary>
    public List<TraceEvent> Rows { get; } = [];

    /// <summary>Whether the tracer captured the ranges of process_madvise calls (an F line said "on").</summary>
    public bool ProcessMadviseRanges { get; private set; }

    /// <summary>Why the ranges were not captured (the F line's words), or null.</summary>
    public string? ProcessMadviseRangesOff { get; private set; }

    /// <summary>
    /// The processes the command left running when it exited (daemons, background jobs, build servers), which the
    /// tracer followed to their exit; empty when there were none.
    /// </summary>
    public IReadOnlyList<int> DaemonsLeft { get; private set; } = [];

    /// <summary>When the tracer named <see cref="DaemonsLeft"/> (the U line), or null.</summary>
    public long? DaemonsLeftAtNs { get; private set; }

    /// <summary>When the tracer was asked to stop (the I line), or null.</summary>
    public long? InterruptedAtNs { get; private set; }

    /// <summary>
    /// Whether the command itself ran to its end: it exited, and any interrupt came after the
    /// tracer had named the processes it left running, which the interrupt then stopped.
    /// </summary>
    public bool CommandWhole => RootWaitStatus is not null && DaemonsLeftAtNs is { } left && (InterruptedAtNs is not { } stop || left <= stop);

    /// <summary>
    /// The ptrace calls the tracer's own presence refused (A lines): a debugger, tracer or
    /// LeakSanitizer of the tree tried to trace a task the tracer already traces.
    /// </summary>
    public List<PtraceRefusal> PtraceRefused { get; } = [];

    /// <summary>Attach: the ranges of pages the process had at the layout's moment (Q lines).</summary>
    public long ResidentRanges { get; private set; }

    /// <summary>Anonymous pages the attached process had swapped out (<c>Q</c> lines with <c>PAGE_IS_SWAPPED</c> and not <c>PAGE_IS_FILE</c>).</summary>
    public long SwappedPages { get; private set; }

    /// <summary>Attach: why those ranges could not be read (no PAGEMAP_SCAN), or null.</summary>
    public string? ResidentOff { get; private set; }

    /// <summary>Attach: the ranges where PTE tables (empty ones too) or PMD leaves were (T lines).</summary>
    public long PageTableRanges { get; private set; }

    /// <summary>Attach: why those could not be read, or null.</summary>
    public string? PageTablesOff { get; private set; }

    /// <summary>The process_madvise calls the tracer stopped at, by thread, in time order.</summary>
    public Dictionary<int, Queue<ProcessMadviseCall>> ProcessMadviseCalls { get; } = [];

    /// <summary>Files whose page-cache residency the tracer wrote (C lines).</summary>
    public long FileCacheRows { get; private set; }

    /// <summary>Whether the tracer recorded page-cache changes (a G line said "on"; P lines follow).</summary>
    public bool PageCacheChanges { get; private set; }

    /// <summary>Why page-cache changes were not recorded (the G line's words), or null.</summary>
    public string? PageCacheChangesOff { get; private set; }

    /// <summary>Whether the tracer could read folio orders (an O line said "on"); null when it did not say.</summary>
    public bool? FolioOrders { get; private set; }

    /// <summary>Why folio orders could not be read (the O line's words), or null.</summary>
    public string? FolioOrdersOff { get; private set; }

    /// <summary>Page-cache changes the tracer read (P lines).</summary>
    public long PageCacheChangeRows { get; private set; }

    /// <summary>Page-cache changes lost in the tracer's rings (L lines).</summary>
    public long PageCacheChangesLost { get; private set; }

    /// <summary>Calls in <see cref="ProcessMadviseCalls"/>.</summary>
    public long ProcessMadviseCallCount { get; private set; }

    /// <summary>
    /// What the tracer wrote to <paramref name="path"/> since <paramref name="offset"/> (which moves
    /// past the complete lines read) that the user should hear of while the recording still runs:
    /// the daemons a <c>U</c> line names (null where none came), and the ptrace calls refused
    /// (<c>A</c> lines).
    /// </summary>
    public static (IReadOnlyList<int>? DaemonsLeft, List<PtraceRefusal> PtraceRefused) ReadLiveNotices(string path, ref long offset)
    {
        IReadOnlyList<int>? daemons = null;
        var refused = new List<PtraceRefusal>();
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Seek(offset, SeekOrigin.Begin);
            using var reader = new StreamReader(stream);
            string text = reader.ReadToEnd();
            int end = text.LastIndexOf('\n');
            if (end < 0)
            {
                return (null, refused);
            }

            offset += System.Text.Encoding.UTF8.GetByteCount(text.AsSpan(0, end + 1));
            foreach (string line in text[..end].Split('\n'))
            {
                if (line.StartsWith("U ", StringComparison.Ordinal))
                {
                    daemons = [.. line.Split(' ')[2..].Select(Int)];
                }
                else if (line.StartsWith("A ", StringComparison.Ordinal) && PtraceRefusal.Parse(line.Split(' ')) is { } r)
                {
                    refused.Add(r);
                }
            }
        }
        catch (Exception e) when (e is IOException or FormatException or OverflowException)
        {
            // a notice missed now is still in the file at the end
        }

        return (daemons, refused);
    }

    /// <summary>Reads the header lines only (the tracer's and the command's pids), from a file still being written.</summary>
    public static (int TracerPid, int RootPid) ReadHeader(string path)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            int tracer = 0, root = 0;
            for (int i = 0; i < 3 && reader.ReadLine() is { } line; i++)
            {
                string[] f = line.Split(' ');
                if (f is ["H", "ptlab-tracer", _, var pid])
                {
                    tracer = int.Parse(pid, CultureInfo.InvariantCulture);
                }
                else if (f is ["R", _, var r, _])
                {
                    root = int.Parse(r, CultureInfo.InvariantCulture);
                }
            }

            return (tracer, root);
        }
        catch (Exception e) when (e is IOException or FormatException or OverflowException)
        {
            return (0, 0);
        }
    }

    public static TracerOutput Read(string path)
    {
        var output = new TracerOutput();
        int lineNo = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNo++;
            try
            {
                output.Parse(line);
            }
            catch (Exception e) when (e is FormatException or OverflowException or IndexOutOfRangeException)
            {
                throw new TraceFormatException($"{path}:{lineNo}: the tracer's line '{TraceMetadata.Trim(line)}' does not parse: {e.Message}");
            }
        }

        // The tracer writes page-cache changes in batches, after lines stamped later: the rows go
        // in time order (a stable sort keeps each residency row with its runs).
        if (output.PageCacheChangeRows > 0)
        {
            var sorted = output.Rows.OrderBy(r => r.TimeNs).ToList();
            output.Rows.Clear();
            output.Rows.AddRange(sorted);
        }

        return output;
    }

    private void Parse(string line)
    {
        if (line.Length < 2)
        {
            return;
        }

        string[] f = line.Split(' ');
        switch (line[0])
        {
            case 'H':
                TracerPid = Int(f[3]);
                break;
            case 'R':
                RootPid = Int(f[2]);
                if (f is [_, _, _, "attach"])
                {
                    AttachMomentNs = Long(f[1]);
                }

                break;
            case 'S':
                {
                    var kind = f[4] switch
                    {
                        "tick" => TraceEventKind.Status,
                        "exec" => TraceEventKind.StatusExec,
                        "exit" => TraceEventKind.StatusExit,
                        "attach" => TraceEventKind.StatusAttach,
                        _ => throw new FormatException($"sample reason '{f[4]}'"),
                    };
                    var figures = new StatusFigures(Long(f[5]), Long(f[6]), Long(f[7]), Long(f[8]), Long(f[9]), Long(f[10]), Long(f[11]));
                    Rows.Add(TraceEvent.Sample(kind, Long(f[1]), Int(f[2]), Int(f[3]), figures));
                    break;
                }

            case 'X':
                {
                    // The exit status belongs to the exit sample just taken of the same thread.
                    int tid = Int(f[3]);
                    int status = Int(f[4]);
                    if (tid == RootPid && Int(f[2]) == RootPid)
                    {
                        RootExitStatus = status;
                    }

                    int last = Rows.Count - 1;
                    if (last >= 0 && Rows[last] is { Kind: TraceEventKind.StatusExit } sample && sample.Tid == tid)
                    {
                        Rows[last] = sample.WithResult(status);
                    }

                    break;
                }

            case 'M':
                {
                    // "M TIME PID start-end perms offset dev inode [path]"
                    long time = Long(f[1]);
                    int pid = Int(f[2]);
                    string maps = line[(line.IndexOf(' ', line.IndexOf(' ', 2) + 1) + 1)..];
                    Rows.Add(Vma(maps, time, pid));
                    break;
                }

            case 'W':
                if (Int(f[2]) == RootPid)
                {
                    RootWaitStatus = Int(f[3]);
                }

                break;
            case 'I':
                Interrupted = true;
                InterruptedAtNs ??= Long(f[1]);
                break;
            case 'E':
                {
                    string message = line[(line.IndexOf(' ', 2) + 1)..];
                    if (message.StartsWith("cannot run ", StringComparison.Ordinal))
                    {
                        StartError = message;
                    }

                    Errors.Add(message);
                    break;
                }

            case 'C':
                {
                    // "C TIME PID TID DEV INODE SIZE N FIRST:COUNT[:ORDER]... PATH"
                    int n = Int(f[7]);
                    if (n < 0 || f.Length < 8 + n)
                    {
                        throw new FormatException($"{n} runs with {f.Length - 8} fields after them");
                    }

                    long time = Long(f[1]);
                    int pid = Int(f[2]), tid = Int(f[3]);
                    string dev = f[4];
                    ulong inode = ulong.Parse(f[5], NumberStyles.None, CultureInfo.InvariantCulture);
                    ulong size = ulong.Parse(f[6], NumberStyles.None, CultureInfo.InvariantCulture);
                    string path = string.Join(' ', f[(8 + n)..]);
                    var file = TraceEvent.Create(TraceEventKind.FileCache, time, pid, tid) with { Length = size, Dev = dev, Inode = inode, Result = n };
                    Rows.Add(path.Length == 0 ? file : file with { Path = path, Has = file.Has | TraceFields.Path });
                    for (int i = 0; i < n; i++)
                    {
                        // FIRST:COUNT[:ORDER], hex.
                        string[] r = f[8 + i].Split(':');
                        var run = TraceEvent.Create(TraceEventKind.CacheRange, time, pid, tid) with { Offset = checked(Hex(r[0]) * 4096), Length = checked(Hex(r[1]) * 4096), Dev = dev, Inode = inode };
                        Rows.Add(r.Length == 3 ? run with { Flags = Hex(r[2]), Has = run.Has | TraceFields.Flags } : run);
                    }

                    FileCacheRows++;
                    break;
                }

            case 'D':
                Done = true;
                break;
            case 'G':
                PageCacheChanges = f[2] == "on";
                PageCacheChangesOff = PageCacheChanges ? null : string.Join(' ', f[3..]);
                break;
            case 'O':
                FolioOrders = f[2] == "on";
                FolioOrdersOff = FolioOrders == true ? null : string.Join(' ', f[3..]);
                break;
            case 'P':
                {
                    // "P TIME PID TID a|d DEV INODE INDEX ORDER": pid and tid of the context, any process.
                    if (f.Length != 9 || f[4] is not ("a" or "d"))
                    {
                        throw new FormatException($"{f.Length} fields, change '{(f.Length > 4 ? f[4] : "")}'");
                    }

                    var kind = f[4] == "a" ? TraceEventKind.CacheAdd : TraceEventKind.CacheDelete;
                    ulong order = ulong.Parse(f[8], NumberStyles.None, CultureInfo.InvariantCulture);
                    ulong index = Hex(f[7]);
                    if (order > TraceKinds.MaxFolioOrder || index > (ulong.MaxValue >> 13))
                    {
                        throw new FormatException($"a folio of order {order} at index {index:x}");
                    }

                    Rows.Add(TraceEvent.Create(kind, Long(f[1]), 0, 0) with
                    {
                        Offset = index * 4096,
                        Flags = order,
                        Dev = f[5],
                        Inode = ulong.Parse(f[6], NumberStyles.None, CultureInfo.InvariantCulture),
                        Result = Int(f[2]),
                    });
                    PageCacheChangeRows++;
                    break;
                }

            case 'L':
                PageCacheChangesLost += Long(f[2]);
                break;
            case 'Q' when f[2] == "off":
                ResidentOff = string.Join(' ', f[3..]);
                break;
            case 'Q':
                // "Q TIME PID START END CATEGORIES" (hex): pages of the process at the attach.
                {
                    var range = AttachRange(f, TraceEventKind.Resident) with { Flags = Hex(f[5]) };
                    Rows.Add(range);
                    ResidentRanges++;
                    if ((range.Flags & (TraceKinds.PageIsSwapped | TraceKinds.PageIsFile)) == TraceKinds.PageIsSwapped)
                    {
                        SwappedPages += (long)(range.Length >> 12);
                    }

                    break;
                }
            case 'T' when f[2] == "off":
                PageTablesOff = string.Join(' ', f[3..]);
                break;
            case 'T':
                // "T TIME PID START END" (hex): where PTE tables or PMD leaves were at the attach.
                Rows.Add(AttachRange(f, TraceEventKind.PageTables));
                PageTableRanges++;
                break;
            case 'U':
                // "U TIME PID...": the command exited; these processes it started are left.
                DaemonsLeft = [.. f[2..].Select(Int)];
                DaemonsLeftAtNs ??= Long(f[1]);
                break;
            case 'A':
                // "A TIME PID TID REQUEST TARGET": a ptrace call of the tree the tracer's presence refused.
                PtraceRefused.Add(PtraceRefusal.Parse(f) ?? throw new FormatException($"malformed A line: {string.Join(' ', f)}"));
                break;
            case 'K':
                {
                    // "K TIME PID START END" (hex): a sealed VMA of the layout just read. The
                    // vsyscall page a kernel with CONFIG_MSEAL_SYSTEM_MAPPINGS seals lies above the
                    // user address space, where the model has no VMA to seal (its vma row is
                    // replayed as unsupported).
                    var seal = AttachRange(f, TraceEventKind.VmaSealed);
                    if (seal.Address + seal.Length <= PerfScriptImporter.UserAddressLimit)
                    {
                        Rows.Add(seal);
                    }

                    break;
                }

            case 'F':
                ProcessMadviseRanges = f[2] == "on";
                ProcessMadviseRangesOff = ProcessMadviseRanges ? null : string.Join(' ', f[3..]);
                break;
            case 'V':
                {
                    // "V TIME PID TID PIDFD TARGET ADVICE FLAGS IOVEC VLEN N BASE:LEN..."
                    int n = Int(f[10]);
                    if (n < 0 || n > TraceKinds.MaxMadviseRanges || f.Length != 11 + n)
                    {
                        throw new FormatException($"{n} ranges with {f.Length - 11} given");
                    }

                    var ranges = new (ulong Start, ulong Length)[n];
                    for (int i = 0; i < n; i++)
                    {
                        string[] r = f[11 + i].Split(':');
                        ranges[i] = (Hex(r[0]), Hex(r[1]));
                    }

                    var call = new ProcessMadviseCall(Long(f[1]), Int(f[2]), Int(f[3]), Int(f[4]), Int(f[5]), Int(f[6]), ulong.Parse(f[7], CultureInfo.InvariantCulture),
                        Hex(f[8].StartsWith("0x", StringComparison.Ordinal) ? f[8][2..] : f[8]), ulong.Parse(f[9], CultureInfo.InvariantCulture), ranges);
                    if (!ProcessMadviseCalls.TryGetValue(call.Tid, out var queue))
                    {
                        ProcessMadviseCalls[call.Tid] = queue = new Queue<ProcessMadviseCall>();
                    }

                    queue.Enqueue(call);
                    ProcessMadviseCallCount++;
                    break;
                }

        }
    }

    /// <summary>One /proc/PID/maps line as a <see cref="TraceEventKind.Vma"/> row.</summary>
    internal static TraceEvent Vma(string maps, long time, int pid)
    {
        // "7f566ae85000-7f566ae89000 r--p 00000000 00:00 0          [vvar]"
        string[] parts = maps.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length < 5)
        {
            throw new FormatException($"maps line '{maps}'");
        }

        string[] range = parts[0].Split('-');
        ulong start = ulong.Parse(range[0], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        ulong end = ulong.Parse(range[1], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        string perms = parts[1];
        if (perms.Length != 4)
        {
            throw new FormatException($"permissions '{perms}'");
        }

        int prot = (perms[0] == 'r' ? 1 : 0) | (perms[1] == 'w' ? 2 : 0) | (perms[2] == 'x' ? 4 : 0);
        return TraceEvent.Create(TraceEventKind.Vma, time, pid, pid) with
        {
            Address = start,
            Length = end - start,
            Prot = prot,
            Flags = perms[3] == 's' ? 1UL : 2UL,
            Offset = ulong.Parse(parts[2], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture),
            Dev = parts[3],
            Inode = ulong.Parse(parts[4], NumberStyles.None, CultureInfo.InvariantCulture),
            Path = parts.Length > 5 ? parts[5].Trim() : "",
        };
    }

    /// <summary>A Q or T line's range ("X TIME PID START END ..."), as a row of <paramref name="kind"/>.</summary>
    private static TraceEvent AttachRange(string[] f, TraceEventKind kind)
    {
        ulong start = Hex(f[3]), end = Hex(f[4]);
        if (end <= start)
        {
            throw new FormatException($"{TraceKinds.Name(kind)} range {f[3]}-{f[4]} is empty");
        }

        int pid = Int(f[2]);
        return TraceEvent.Create(kind, Long(f[1]), pid, pid) with { Address = start, Length = end - start };
    }

    private static ulong Hex(string s) => ulong.Parse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

    private static int Int(string s) => int.Parse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);

    private static long Long(string s) => long.Parse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
}

/// <summary>
/// A process_madvise call as the tracer saw it at its entry (a PTRACE_EVENT_SECCOMP stop): the
/// arguments, the process the pidfd named (0 when unknown) and the ranges of its iovec array (none
/// when the array could not be read).
/// </summary>
internal sealed record ProcessMadviseCall(long TimeNs, int Pid, int Tid, int Pidfd, int Target, int Advice, ulong Flags, ulong Iovec, ulong Vlen, (ulong Start, ulong Length)[] Ranges)
{
    /// <summary>Whether perf's row of the call (<paramref name="e"/>) has these arguments.</summary>
    public bool Matches(in TraceEvent e) =>
        e.Fd == Pidfd && e.Address == Iovec && e.Length == Vlen && e.Prot == Advice && e.Flags == Flags;

    /// <summary>The call's <see cref="TraceEventKind.MadviseRange"/> rows, stamped with perf's row of the call (they go right before it).</summary>
    public IEnumerable<TraceEvent> Rows(TraceEvent call) =>
        Ranges.Select(r => TraceEvent.Create(TraceEventKind.MadviseRange, call.TimeNs, call.Pid, call.Tid) with { Address = r.Start, Length = r.Length, Result = Target });
}

/// <summary>
/// A ptrace call of a recorded process that failed because the recorder's tracer already traces
/// its target (a task has one tracer): <c>PTRACE_TRACEME</c> from a task of the tree, or
/// <c>PTRACE_ATTACH</c>/<c>PTRACE_SEIZE</c> of one.
/// </summary>
/// <param name="Pid">The calling process.</param>
/// <param name="Tid">The calling thread.</param>
/// <param name="Request">The ptrace request (0, 16 or 0x4206).</param>
/// <param name="Target">The task it would have traced (the caller itself for TRACEME).</param>
internal readonly record struct PtraceRefusal(int Pid, int Tid, long Request, int Target)
{
    /// <summary>The request's name.</summary>
    public string RequestName => Request switch
    {
        0 => "PTRACE_TRACEME",
        16 => "PTRACE_ATTACH",
        0x4206 => "PTRACE_SEIZE",
        _ => "ptrace request " + Request.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>The fields of an <c>A</c> line ("A TIME PID TID REQUEST TARGET"), or null when malformed.</summary>
    internal static PtraceRefusal? Parse(string[] f) =>
        f.Length == 6 && int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
        && int.TryParse(f[3], NumberStyles.None, CultureInfo.InvariantCulture, out int tid)
        && long.TryParse(f[4], NumberStyles.None, CultureInfo.InvariantCulture, out long request)
        && int.TryParse(f[5], NumberStyles.None, CultureInfo.InvariantCulture, out int target)
            ? new PtraceRefusal(pid, tid, request, target)
            : null;
}
