using System.Globalization;

namespace PtLab.Traces;

/// <summary>How a perf script text was recorded, and what of it to keep.</summary>
public sealed record PerfImportOptions
{
    /// <summary>
    /// perf attached to running processes (<c>perf record -p</c>): a syscall already running at the
    /// start shows only its exit (dropped and counted), one running at the end only its enter (kept
    /// without a result). Tasks are introduced by perf's synthesized COMM records.
    /// </summary>
    public bool Attached { get; init; }

    /// <summary>The recording was stopped early: syscalls still running at the end are kept without a result.</summary>
    public bool Truncated { get; init; }

    /// <summary>A process whose events are all dropped (the recorder's own tracer).</summary>
    public int? DropPid { get; init; }

    /// <summary>A process whose events before its first exec are dropped, and which the trace introduces at that exec (the recorded command, forked by the tracer).</summary>
    public int? RootPid { get; init; }

    /// <summary>
    /// The latest time perf's synthesized records (stamped 0: the tasks and mappings that exist
    /// when it starts) may take: an attached recording's first row of its own (the moment the
    /// layout was read), so that the tasks are introduced before the rows that name them even
    /// when the process is idle and its first real event comes long after. Without it they take
    /// the first real event's time.
    /// </summary>
    public long? StartTimeNs { get; init; }
}

/// <summary>What an import read, kept and dropped.</summary>
public sealed record PerfImportStats
{
    /// <summary>Lines read.</summary>
    public long Lines { get; set; }

    /// <summary>Rows produced.</summary>
    public long Rows { get; set; }

    /// <summary>Well-formed lines of events a trace does not hold (other tracepoints, PERF_RECORD_EXIT, kernel MMAP, …).</summary>
    public long Ignored { get; set; }

    /// <summary>Events of the dropped pid, and of the root before its exec.</summary>
    public long Dropped { get; set; }

    /// <summary>Kernel faults above the user address space.</summary>
    public long KernelAddressFaults { get; set; }

    /// <summary>Syscall exits whose enter preceded an attached recording.</summary>
    public long InFlightExits { get; set; }

    /// <summary>Syscalls still running at the end (rows without a result).</summary>
    public long Unfinished { get; set; }

    /// <summary>Events perf reported lost.</summary>
    public long LostEvents { get; set; }

    /// <summary>New tasks that perf announced (FORK) without a task_newtask event: their rows carry inferred clone flags.</summary>
    public long InferredTasks { get; set; }

    /// <summary>The stats as trace notes (<c>import_*</c> keys).</summary>
    public Dictionary<string, string> ToNotes() => new()
    {
        ["import_lines"] = Lines.ToString(CultureInfo.InvariantCulture),
        ["import_ignored_lines"] = Ignored.ToString(CultureInfo.InvariantCulture),
        ["import_dropped_events"] = Dropped.ToString(CultureInfo.InvariantCulture),
        ["import_kernel_address_faults"] = KernelAddressFaults.ToString(CultureInfo.InvariantCulture),
        ["import_in_flight_exits"] = InFlightExits.ToString(CultureInfo.InvariantCulture),
        ["import_unfinished_syscalls"] = Unfinished.ToString(CultureInfo.InvariantCulture),
        ["import_inferred_tasks"] = InferredTasks.ToString(CultureInfo.InvariantCulture),
    };
}

/// <summary>One imported row and the line it came from.</summary>
public readonly record struct ImportedEvent(TraceEvent Event, long Line);

/// <summary>
/// Converts the text of
/// <c>perf script --ns --show-task-events --show-mmap-events --show-lost-events -F comm,pid,tid,cpu,time,event,trace</c>
/// into trace rows, in time order: each syscall's enter and exit become one row at the exit's
/// time; an exec becomes a row at perf's exec COMM record, where the new mm starts. Every line
/// must parse and every row must be valid; otherwise a <see cref="TraceFormatException"/> names
/// the file and line.
/// </summary>
public sealed class PerfScriptImporter
{
    /// <summary>Kernel faults at or above this address (the x86-64 user space limit with 4-level paging) are not the process's.</summary>
    public const ulong UserAddressLimit = 0x0000_8000_0000_0000;

    private const int MaxHeldRows = 100_000;

    private readonly TextReader _text;
    private readonly string _file;
    private readonly PerfImportOptions _options;
    private readonly TraceValidator _validator;
    private readonly Queue<ImportedEvent> _out = new();
    private readonly Dictionary<int, PendingSyscall> _pending = [];
    private readonly HashSet<int> _sawSyscall = [];
    private readonly Dictionary<int, (int Pid, long Line)> _announced = [];
    private readonly Dictionary<int, string> _comm = [];
    private readonly Dictionary<int, int> _live = [];
    // Execs whose COMM record came and whose sched_process_exec has not yet: one per process, in
    // the order of their COMM records (processes exec at once on different CPUs).
    private readonly List<PendingExec> _execs = [];

    // Processes whose exec row went out before its sched_process_exec (too many rows held): that
    // event then names no new mm.
    private readonly HashSet<int> _execReleasedEarly = [];
    private bool _holdingStart;
    private bool _rootStarted;
    private long _line;
    private long _lastTime = long.MinValue;
    private readonly List<string> _fields = new(8);

    /// <summary>Reads perf script text from <paramref name="text"/>; <paramref name="fileName"/> names it in errors.</summary>
    public PerfScriptImporter(TextReader text, string fileName, PerfImportOptions? options = null)
    {
        _text = text;
        _file = fileName;
        _options = options ?? new PerfImportOptions();
        _validator = new TraceValidator(admitUnknownTasks: false, allowUnfinished: _options.Attached || _options.Truncated);
    }

    /// <summary>What was read so far.</summary>
    public PerfImportStats Stats { get; } = new();

    /// <summary>Whether rows of unknown tasks were admitted (after perf lost events): the trace is incomplete.</summary>
    public bool AdmittedUnknownTasks => _validator.AdmitUnknownTasks;

    /// <summary>The time of the last line read, in ns (the end of the recording).</summary>
    public long LastTimeNs => _lastTime;

    // The synthesized rows held at the start take the first real event's time, or the start
    // time the options give where that is earlier.
    private void ReleaseHeldStart(long time)
    {
        _holdingStart = false;
        long stamp = _options.StartTimeNs is { } start && start < time ? start : time;
        foreach (var held in _out.ToList())
        {
            _out.Enqueue(held with { Event = held.Event with { TimeNs = stamp } });
            _out.Dequeue();
        }
    }

    /// <summary>Streams the rows.</summary>
    /// <exception cref="TraceFormatException">A line does not parse, or a row is invalid; the message names the line.</exception>
    public IEnumerable<ImportedEvent> Read()
    {
        while (_text.ReadLine() is { } line)
        {
            _line++;
            Stats.Lines++;
            Parse(line);
            while (_out.Count > 0 && _execs.Count == 0 && !_holdingStart)
            {
                yield return Checked(_out.Dequeue());
            }
        }

        while (_execs.Count > 0)
        {
            ReleaseExec(_execs[0]);
        }

        if (_holdingStart)
        {
            ReleaseHeldStart(_options.StartTimeNs ?? 0);
        }

        while (_out.Count > 0)
        {
            yield return Checked(_out.Dequeue());
        }

        foreach (var (tid, p) in _pending.OrderBy(p => p.Value.Line))
        {
            if (!_options.Attached && !_options.Truncated)
            {
                throw Error(p.Line, $"sys_enter_{p.Name} of tid {tid} never returned, and the recording is neither truncated nor attached");
            }

            var e = p.Row with { TimeNs = Math.Max(_lastTime, p.Row.TimeNs) };
            Stats.Unfinished++;
            yield return Checked(Emit(e, p.Line, queue: false));
        }
    }

    // Rows are checked in output order: an exec's row moves ahead of the rows queued behind it.
    private ImportedEvent Checked(ImportedEvent e)
    {
        string? error = _validator.Check(e.Event);
        if (error is not null)
        {
            throw Error(e.Line, error);
        }

        Stats.Rows++;
        return e;
    }

    private void Parse(string line)
    {
        if (line.Length == 0 || line.AsSpan().Trim().Length == 0)
        {
            return;
        }

        if (!Header(line, out int pid, out int tid, out long time, out int rest))
        {
            throw Error(_line, $"not a perf script line (expected 'COMM PID/TID [CPU] SECONDS.NANOS: EVENT: ...', from perf script -F comm,pid,tid,cpu,time,event,trace): '{TraceMetadata.Trim(line)}'");
        }

        if (time == 0 && _lastTime <= 0)
        {
            // perf synthesizes the tasks and mappings that exist when it starts (an attach) at time 0:
            // they take the time of the first real event, so the trace's span is the recording's.
            _holdingStart = true;
        }
        else if (_holdingStart)
        {
            ReleaseHeldStart(time);
        }

        if (time < _lastTime)
        {
            throw Error(_line, $"time {TraceValidator.Ns(time)} is before the previous line's {TraceValidator.Ns(_lastTime)}: perf script output is in time order");
        }

        _lastTime = time;
        var body = line.AsSpan(rest);
        if (body.StartsWith("PERF_RECORD_"))
        {
            Record(body, pid, tid, time);
            return;
        }

        int colon = body.IndexOf(':');
        int colon2 = colon < 0 ? -1 : body[(colon + 1)..].IndexOf(':');
        if (colon <= 0 || colon2 < 0)
        {
            throw Error(_line, $"no 'system:event:' after the time: '{TraceMetadata.Trim(line)}'");
        }

        var system = body[..colon];
        var name = body[(colon + 1)..(colon + 1 + colon2)];
        var payload = body[(colon + 2 + colon2)..].Trim();
        if (Dropped(pid))
        {
            Stats.Dropped++;
            return;
        }

        switch (system)
        {
            case "exceptions":
                Fault(name, payload, pid, tid, time);
                break;
            case "syscalls":
                Syscall(name, payload, pid, tid, time);
                break;
            case "task" when name.SequenceEqual("task_newtask"):
                NewTask(payload, pid, tid, time);
                break;
            case "signal" when name.SequenceEqual("signal_generate"):
                Signal(payload, pid, tid, time);
                break;
            case "sched" when name.SequenceEqual("sched_process_exec"):
                ExecDone(payload, pid, time);
                break;
            case "sched" when name.SequenceEqual("sched_process_exit"):
                {
                    var group = Field(payload, "group_dead=", ' ', last: true);
                    var e = TraceEvent.Create(TraceEventKind.TaskExit, time, pid, tid);
                    if (group.Length > 0)
                    {
                        if (group is not ("true" or "false" or "1" or "0"))
                        {
                            throw Error(_line, $"sched_process_exit group_dead is '{group}'");
                        }

                        e = e with { Flags = group is "true" or "1" ? 1UL : 0, Has = e.Has | TraceFields.Flags };
                    }

                    if (_pending.Remove(tid, out var open))
                    {
                        // A syscall's exit always precedes its task's exit: only a cut recording loses it.
                        if (!_options.Attached && !_options.Truncated)
                        {
                            throw Error(_line, $"tid {tid} exits while its sys_enter_{open.Name} (line {open.Line}) has not returned");
                        }

                        Stats.Unfinished++;
                        Emit(open.Row with { TimeNs = time }, open.Line);
                    }

                    Emit(e, _line);
                    break;
                }

            default:
                Stats.Ignored++;
                break;
        }
    }

    /// <summary>
    /// <c>signal_generate</c> ("sig=11 errno=0 code=1 comm=COMM pid=TID grp=1 res=0"): kept only as
    /// the kernel's answer to a fault, a SIGSEGV or SIGBUS with a positive si_code that the thread
    /// sent itself (force_sig_fault); a kill or a signal queued by another task is ignored. The
    /// comm may hold spaces, so the target is read from the last " pid=".
    /// </summary>
    private void Signal(ReadOnlySpan<char> payload, int pid, int tid, long time)
    {
        var sig = Field(payload, "sig=", ' ');
        var code = Field(payload, "code=", ' ');
        var target = Field(payload, " pid=", ' ', last: true);
        if (sig.Length == 0 || code.Length == 0 || target.Length == 0)
        {
            throw Error(_line, $"signal_generate fields '{TraceMetadata.Trim(payload.ToString())}'");
        }

        long signal = Int64(sig, "signal_generate sig");
        bool negative = code[0] == '-';
        long si = negative ? 0 : Int64(code, "signal_generate code");
        if (signal is not (TraceKinds.SigSegv or TraceKinds.SigBus) || si <= 0 || Int(target, "signal_generate pid") != tid)
        {
            Stats.Ignored++;
            return;
        }

        Emit(TraceEvent.Create(TraceEventKind.Signal, time, pid, tid) with { Result = signal, Flags = (ulong)si }, _line);
    }

    private bool Dropped(int pid) =>
        pid == _options.DropPid || (pid == _options.RootPid && !_rootStarted);

    private void Fault(ReadOnlySpan<char> name, ReadOnlySpan<char> payload, int pid, int tid, long time)
    {
        bool user = name.SequenceEqual("page_fault_user");
        if (!user && !name.SequenceEqual("page_fault_kernel"))
        {
            Stats.Ignored++;
            return;
        }

        ulong address = Hex(Field(payload, "address=", ' '), "address");
        ulong code = Hex(Field(payload, "error_code=", ' '), "error_code");
        if (code > 0xffff)
        {
            throw Error(_line, $"fault error_code 0x{code:x} does not fit in 16 bits");
        }

        if (user)
        {
            ReleaseExecFor(pid);
            ulong ip = Hex(Field(payload, "ip=", ' '), "ip");
            Emit(TraceEvent.Fault(time, pid, tid, address, (int)code, ip), _line);
        }
        else if (address >= UserAddressLimit)
        {
            Stats.KernelAddressFaults++;
        }
        else
        {
            Emit(TraceEvent.KernelFault(time, pid, tid, address, (int)code), _line);
        }
    }

    private static readonly Dictionary<string, (TraceEventKind Kind, int Args)> s_syscalls = new(StringComparer.Ordinal)
    {
        ["mmap"] = (TraceEventKind.Mmap, 6),
        ["munmap"] = (TraceEventKind.Munmap, 2),
        ["mremap"] = (TraceEventKind.Mremap, 5),
        ["madvise"] = (TraceEventKind.Madvise, 3),
        ["process_madvise"] = (TraceEventKind.ProcessMadvise, 5),
        ["mprotect"] = (TraceEventKind.Mprotect, 3),
        ["brk"] = (TraceEventKind.Brk, 1),
        ["mlock"] = (TraceEventKind.Mlock, 2),
        ["mlock2"] = (TraceEventKind.Mlock2, 3),
        ["munlock"] = (TraceEventKind.Munlock, 2),
        ["mlockall"] = (TraceEventKind.Mlockall, 1),
        ["munlockall"] = (TraceEventKind.Munlockall, 0),
        ["shmat"] = (TraceEventKind.Shmat, 3),
        ["shmdt"] = (TraceEventKind.Shmdt, 1),
        ["mseal"] = (TraceEventKind.Mseal, 3),
        ["exit"] = (TraceEventKind.Exit, 1),
        ["exit_group"] = (TraceEventKind.ExitGroup, 1),
    };

    private void Syscall(ReadOnlySpan<char> name, ReadOnlySpan<char> payload, int pid, int tid, long time)
    {
        bool enter = name.StartsWith("sys_enter_");
        bool exit = name.StartsWith("sys_exit_");
        if (!enter && !exit)
        {
            Stats.Ignored++;
            return;
        }

        string call = name[(enter ? 10 : 9)..].ToString();
        if (!s_syscalls.TryGetValue(call, out var sc))
        {
            Stats.Ignored++;
            return;
        }

        ReleaseExecFor(pid);
        if (enter)
        {
            var args = Args(payload, sc.Args, call);
            var e = TraceEvent.Create(sc.Kind, time, pid, tid);
            e = sc.Kind switch
            {
                TraceEventKind.Mmap => e with { Address = args[0], Length = args[1], Prot = (int)args[2], Flags = args[3], Fd = (int)args[4], Offset = args[5] },
                TraceEventKind.Mremap => e with { Address = args[0], Length = args[1], NewLength = args[2], Flags = args[3], NewAddress = args[4] },
                TraceEventKind.Madvise or TraceEventKind.Mprotect => e with { Address = args[0], Length = args[1], Prot = (int)args[2] },
                TraceEventKind.ProcessMadvise => e with { Fd = (int)args[0], Address = args[1], Length = args[2], Prot = (int)args[3], Flags = args[4] },
                TraceEventKind.Brk => e with { Address = args[0] },
                TraceEventKind.Mlock2 => e with { Address = args[0], Length = args[1], Flags = args[2] },
                TraceEventKind.Mlockall => e with { Flags = args[0] },
                TraceEventKind.Shmat => e with { Fd = (int)args[0], Address = args[1], Flags = args[2] },
                TraceEventKind.Shmdt => e with { Address = args[0] },
                TraceEventKind.Mseal => e with { Address = args[0], Length = args[1], Flags = args[2] },
                TraceEventKind.Exit or TraceEventKind.ExitGroup => e with { Result = (int)args[0] },
                TraceEventKind.Munlockall => e,
                _ => e with { Address = args[0], Length = args[1] },
            };
            if (sc.Kind is TraceEventKind.Exit or TraceEventKind.ExitGroup)
            {
                Emit(e, _line);
                return;
            }

            if (_pending.TryGetValue(tid, out var open))
            {
                throw Error(_line, $"sys_enter_{call} of tid {tid} while its sys_enter_{open.Name} (line {open.Line}) has not returned");
            }

            _pending[tid] = new PendingSyscall(call, e, _line);
            _sawSyscall.Add(tid);
            return;
        }

        if (sc.Kind is TraceEventKind.Exit or TraceEventKind.ExitGroup)
        {
            throw Error(_line, $"sys_exit_{call}: {call} does not return");
        }

        long ret = (long)Hex(payload, "return value");
        if (!_pending.Remove(tid, out var p))
        {
            if (_options.Attached && _sawSyscall.Add(tid))
            {
                Stats.InFlightExits++;
                return;
            }

            throw Error(_line, $"sys_exit_{call} of tid {tid} without its sys_enter_{call}");
        }

        if (p.Name != call)
        {
            throw Error(_line, $"sys_exit_{call} of tid {tid}, but its open syscall is sys_enter_{p.Name} (line {p.Line})");
        }

        Emit((p.Row with { TimeNs = time }).Returned(ret, time - p.Row.TimeNs), _line);
    }

    private ulong[] Args(ReadOnlySpan<char> payload, int count, string call)
    {
        var args = new ulong[count];
        int i = 0;
        foreach (var range in payload.Split(','))
        {
            var part = payload[range].Trim();
            if (part.Length == 0 && count == 0)
            {
                continue;
            }

            int colon = part.IndexOf(':');
            if (i >= count || colon <= 0)
            {
                throw Error(_line, $"sys_enter_{call} arguments '{TraceMetadata.Trim(payload.ToString())}': expected {count} 'name: value' fields");
            }

            args[i++] = Hex(part[(colon + 1)..].Trim(), part[..colon].ToString());
        }

        if (i != count)
        {
            throw Error(_line, $"sys_enter_{call} has {i} arguments, expected {count}");
        }

        return args;
    }

    private void NewTask(ReadOnlySpan<char> payload, int pid, int tid, long time)
    {
        // "pid=N comm=NAME clone_flags=HEX oom_score_adj=N": the comm may hold spaces.
        int child = Int(Field(payload, "pid=", ' '), "pid");
        int commAt = payload.IndexOf(" comm=");
        int flagsAt = payload.LastIndexOf(" clone_flags=");
        if (commAt < 0 || flagsAt < commAt)
        {
            throw Error(_line, $"task_newtask fields '{TraceMetadata.Trim(payload.ToString())}'");
        }

        string comm = payload[(commAt + 6)..flagsAt].ToString();
        ulong flags = Hex(Field(payload, "clone_flags=", ' ', last: true), "clone_flags");
        _announced.Remove(child);
        _comm[child] = comm;
        Emit(TraceEvent.Create(TraceEventKind.NewTask, time, pid, tid) with { Flags = flags, Result = child, Path = comm }, _line);
    }

    private void Record(ReadOnlySpan<char> body, int pid, int tid, long time)
    {
        int space = body.IndexOfAny(' ', ':', '(');
        var kind = space < 0 ? body : body[..space];
        var rest = space < 0 ? [] : body[space..];
        switch (kind)
        {
            case "PERF_RECORD_COMM":
                Comm(rest, time);
                break;
            case "PERF_RECORD_FORK":
                {
                    // "(pid:tid):(ppid:ptid)"
                    var (cpid, ctid) = PidPair(rest, 0, "PERF_RECORD_FORK");
                    var (ppid, _) = PidPair(rest, rest.IndexOf("):(", StringComparison.Ordinal) + 2, "PERF_RECORD_FORK");
                    if (Dropped(ppid))
                    {
                        Stats.Dropped++;
                        return;
                    }

                    _announced[ctid] = (cpid, _line);
                    break;
                }

            case "PERF_RECORD_MMAP2":
                Mmap2(rest, time);
                break;
            case "PERF_RECORD_LOST" or "PERF_RECORD_LOST_SAMPLES":
                {
                    var digits = rest.TrimEnd();
                    int at = digits.LastIndexOf(' ');
                    long lost = Int64(digits[(at + 1)..], "lost count");
                    if (lost <= 0)
                    {
                        throw Error(_line, $"{kind} of {lost} events");
                    }

                    Stats.LostEvents += lost;
                    // Lost events may include task creations: from here on, unknown tasks are admitted.
                    _validator.AdmitUnknownTasks = true;
                    Emit(TraceEvent.Create(TraceEventKind.Lost, time, 0, 0) with { Length = (ulong)lost }, _line);
                    break;
                }

            default:
                Stats.Ignored++;
                break;
        }
    }

    private void Comm(ReadOnlySpan<char> rest, long time)
    {
        // " exec: NAME:PID/TID" or ": NAME:PID/TID" (synthesized for running tasks, or a rename).
        bool exec = rest.StartsWith(" exec:");
        int start = rest.IndexOf(':') + 1;
        var text = rest[start..].Trim();
        int sep = text.LastIndexOf(':');
        if (sep < 0)
        {
            throw Error(_line, $"PERF_RECORD_COMM '{TraceMetadata.Trim(rest.ToString())}'");
        }

        string comm = text[..sep].ToString();
        var (pid, tid) = PidPair(text[(sep + 1)..], -1, "PERF_RECORD_COMM");
        if (pid == _options.DropPid)
        {
            Stats.Dropped++;
            return;
        }

        _comm[tid] = comm;
        if (exec)
        {
            ReleaseExecFor(pid);
            _execReleasedEarly.Remove(pid);
            if (pid == _options.RootPid && !_rootStarted)
            {
                _rootStarted = true;
                Emit(TraceEvent.Create(TraceEventKind.Task, time, pid, pid) with { Path = comm }, _line);
            }

            // The new mm starts here; its file name comes with sched_process_exec, a little later.
            // Rows are held (none leaves the queue) while any exec is pending, so a position in the queue stays valid.
            _execs.Add(new PendingExec(TraceEvent.Create(TraceEventKind.Exec, time, pid, pid) with { Path = comm, Result = tid }, _line, _out.Count));
            return;
        }

        if (Dropped(pid))
        {
            Stats.Dropped++;
            return;
        }

        if (!IsLive(pid, tid) && !_announced.ContainsKey(tid))
        {
            Emit(TraceEvent.Create(TraceEventKind.Task, time, pid, tid) with { Path = comm }, _line);
        }
    }

    private void ExecDone(ReadOnlySpan<char> payload, int pid, long time)
    {
        // "filename=NAME pid=N old_pid=N": the file name may hold spaces.
        int pidAt = payload.LastIndexOf(" pid=");
        if (!payload.StartsWith("filename=") || pidAt < 0)
        {
            throw Error(_line, $"sched_process_exec fields '{TraceMetadata.Trim(payload.ToString())}'");
        }

        string file = payload[9..pidAt].ToString();
        int newPid = Int(Field(payload, " pid=", ' ', last: true), "pid");
        int oldPid = Int(Field(payload, "old_pid=", ' ', last: true), "old_pid");
        int pending = _execs.FindIndex(x => x.Row.Pid == newPid);
        if (pending >= 0)
        {
            var x = _execs[pending];
            ReleaseExec(x with { Row = x.Row with { Path = file, Result = oldPid } }, pending);
            return;
        }

        if (_execReleasedEarly.Remove(newPid))
        {
            // Its exec row, at the COMM record, is out already (with the comm as its file name).
            return;
        }

        // No exec COMM record for it (perf run without --show-task-events): the mm starts here.
        Emit(TraceEvent.Create(TraceEventKind.Exec, time, newPid, newPid) with { Path = file, Result = oldPid }, _line);
    }

    private void ReleaseExecFor(int pid)
    {
        // The program runs (a fault or syscall in user mode) before its sched_process_exec: the recording has no such event.
        int pending = _execs.FindIndex(x => x.Row.Pid == pid);
        if (pending >= 0)
        {
            ReleaseExec(_execs[pending], pending);
        }
    }

    private void ReleaseExec(PendingExec x, int index = 0)
    {
        _execs.RemoveAt(index);
        // Rows queued after the exec record move behind it; rows queued before stay ahead; the
        // execs still pending whose COMM records came later move one row further.
        for (int i = index; i < _execs.Count; i++)
        {
            _execs[i] = _execs[i] with { QueuedBefore = _execs[i].QueuedBefore + 1 };
        }

        var held = _out.ToList();
        _out.Clear();
        foreach (var e in held.Take(x.QueuedBefore))
        {
            _out.Enqueue(e);
        }

        _out.Enqueue(Emit(x.Row, x.Line, queue: false));
        foreach (var e in held.Skip(x.QueuedBefore))
        {
            _out.Enqueue(e);
        }
    }

    private void Mmap2(ReadOnlySpan<char> rest, long time)
    {
        // " PID/TID: [0xSTART(0xLEN) @ PGOFF MAJ:MIN INO GEN]: PERMS PATH" (or "@ PGOFF BUILDID]" with build ids)
        int colon = rest.IndexOf(": [", StringComparison.Ordinal);
        int close = rest.IndexOf("]: ", StringComparison.Ordinal);
        if (colon < 0 || close < colon)
        {
            throw Error(_line, $"PERF_RECORD_MMAP2 '{TraceMetadata.Trim(rest.ToString())}'");
        }

        var (pid, tid) = PidPair(rest[..colon].Trim(), -1, "PERF_RECORD_MMAP2");
        if (Dropped(pid))
        {
            Stats.Dropped++;
            return;
        }

        var inside = rest[(colon + 3)..close];
        int paren = inside.IndexOf('(');
        int parenEnd = inside.IndexOf(')');
        int at = inside.IndexOf(" @ ", StringComparison.Ordinal);
        if (paren < 0 || parenEnd < paren || at < parenEnd)
        {
            throw Error(_line, $"PERF_RECORD_MMAP2 range '{TraceMetadata.Trim(inside.ToString())}'");
        }

        ulong start = Hex(inside[..paren], "start");
        ulong length = Hex(inside[(paren + 1)..parenEnd], "length");
        var words = inside[(at + 3)..].Trim();
        _fields.Clear();
        foreach (var r in words.Split(' '))
        {
            if (words[r].Length > 0)
            {
                _fields.Add(words[r].ToString());
            }
        }

        if (_fields.Count is not (2 or 4))
        {
            throw Error(_line, $"PERF_RECORD_MMAP2 '@ {TraceMetadata.Trim(words.ToString())}': expected PGOFF MAJ:MIN INO GEN or PGOFF BUILDID");
        }

        ulong offset = Hex(_fields[0], "pgoff");
        string dev = _fields.Count == 4 ? _fields[1] : "0:0";
        ulong inode = _fields.Count == 4 ? Dec(_fields[2], "inode") : 0;
        var tail = rest[(close + 3)..];
        if (tail.Length < 4)
        {
            throw Error(_line, $"PERF_RECORD_MMAP2 permissions '{tail}'");
        }

        var perms = tail[..4];
        int prot = (perms[0] == 'r' ? 1 : 0) | (perms[1] == 'w' ? 2 : 0) | (perms[2] == 'x' ? 4 : 0);
        if (perms[0] is not ('r' or '-') || perms[1] is not ('w' or '-') || perms[2] is not ('x' or '-') || perms[3] is not ('s' or 'p'))
        {
            throw Error(_line, $"PERF_RECORD_MMAP2 permissions '{perms}'");
        }

        string path = tail.Length > 5 ? tail[5..].ToString() : "";
        Emit(TraceEvent.Create(TraceEventKind.Mmap2, time, pid, tid) with
        {
            Address = start,
            Length = length,
            Prot = prot,
            Flags = perms[3] == 's' ? 1UL : 2UL,
            Offset = offset,
            Dev = dev,
            Inode = inode,
            Path = path,
        }, _line);
    }

    private ImportedEvent Emit(TraceEvent e, long line, bool queue = true)
    {
        if (e.Kind is not (TraceEventKind.Lost or TraceEventKind.Task or TraceEventKind.Exec) && !IsLive(e.Pid, e.Tid) &&
            _announced.Remove(e.Tid, out var announced) && announced.Pid == e.Pid)
        {
            // perf announced this task (FORK) but recorded no task_newtask for it: introduce it here,
            // as a thread of its process or, for a new process, as a task of its own.
            Stats.InferredTasks++;
            int creator = e.Pid == e.Tid ? 0 : AnyThreadOf(e.Pid);
            var task = creator != 0
                ? TraceEvent.Create(TraceEventKind.NewTask, e.TimeNs, e.Pid, creator) with { Flags = TraceEvent.CloneThread | TraceEvent.CloneVm, Result = e.Tid, Path = _comm.GetValueOrDefault(e.Tid, "") }
                : TraceEvent.Create(TraceEventKind.Task, e.TimeNs, e.Pid, e.Tid) with { Path = _comm.GetValueOrDefault(e.Tid, "") };
            Emit(task, announced.Line, queue);
        }
        else if (_options.Attached && e.Kind is not (TraceEventKind.Lost or TraceEventKind.Task or TraceEventKind.Exec) && !IsLive(e.Pid, e.Tid))
        {
            // Attached: a thread created while perf was starting (after it listed the process's
            // threads, before its events were enabled) has no COMM, FORK or newtask record.
            Stats.InferredTasks++;
            Emit(TraceEvent.Create(TraceEventKind.Task, e.TimeNs, e.Pid, e.Tid) with { Path = _comm.GetValueOrDefault(e.Tid, "") }, line, queue);
        }

        Track(e);
        var imported = new ImportedEvent(e, line);
        if (queue)
        {
            _out.Enqueue(imported);
            if (_execs.Count > 0 && _out.Count > MaxHeldRows)
            {
                _execReleasedEarly.Add(_execs[0].Row.Pid);
                ReleaseExec(_execs[0]);
            }
        }

        return imported;
    }

    // The tasks the emitted rows introduce, kept as rows are emitted (the validator sees them later, in output order).
    private void Track(in TraceEvent e)
    {
        switch (e.Kind)
        {
            case TraceEventKind.Task:
                _live[e.Tid] = e.Pid;
                break;
            case TraceEventKind.NewTask:
                _live[e.ChildTid] = e.ChildPid;
                break;
            case TraceEventKind.Exec:
                int pid = e.Pid;
                foreach (int tid in _live.Where(p => p.Value == pid).Select(p => p.Key).ToList())
                {
                    _live.Remove(tid);
                }

                _live[pid] = pid;
                break;
            case TraceEventKind.TaskExit:
                _live.Remove(e.Tid);
                break;
        }
    }

    private bool IsLive(int pid, int tid) => _live.TryGetValue(tid, out int p) && p == pid;

    private int AnyThreadOf(int pid)
    {
        foreach (var (tid, p) in _live)
        {
            if (p == pid)
            {
                return tid;
            }
        }

        return 0;
    }

    /// <summary>Parses "COMM PID/TID [CPU] SEC.NANOS: " and returns where the event starts.</summary>
    private static bool Header(string line, out int pid, out int tid, out long time, out int rest)
    {
        pid = tid = 0;
        time = 0;
        rest = 0;
        var s = line.AsSpan();
        // The time is the first token "DIGITS.DIGITS:" followed by a space (or the end).
        int i = 0;
        while (true)
        {
            int colon = s[i..].IndexOf(": ");
            if (colon < 0)
            {
                return false;
            }

            colon += i;
            int start = colon;
            while (start > 0 && s[start - 1] != ' ')
            {
                start--;
            }

            var token = s[start..colon];
            int dot = token.IndexOf('.');
            if (dot > 0 && dot < token.Length - 1 && token.Length - dot - 1 <= 9 &&
                !token[..dot].ContainsAnyExceptInRange('0', '9') && !token[(dot + 1)..].ContainsAnyExceptInRange('0', '9') &&
                long.TryParse(token[..dot], NumberStyles.None, CultureInfo.InvariantCulture, out long sec) && sec < 9_000_000_000L)
            {
                long frac = long.Parse(token[(dot + 1)..], NumberStyles.None, CultureInfo.InvariantCulture);
                for (int k = token.Length - dot - 1; k < 9; k++)
                {
                    frac *= 10;
                }

                time = (sec * 1_000_000_000L) + frac;
                // Before the time: "COMM PID/TID" and optionally "[CPU]".
                var before = s[..start].TrimEnd();
                if (before.EndsWith("]"))
                {
                    int open = before.LastIndexOf('[');
                    if (open < 0)
                    {
                        return false;
                    }

                    before = before[..open].TrimEnd();
                }

                int sp = before.LastIndexOf(' ');
                var ids = before[(sp + 1)..];
                int slash = ids.IndexOf('/');
                if (slash <= 0 ||
                    !int.TryParse(ids[..slash], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out pid) ||
                    !int.TryParse(ids[(slash + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out tid))
                {
                    return false;
                }

                rest = colon + 2;
                while (rest < s.Length && s[rest] == ' ')
                {
                    rest++;
                }

                return true;
            }

            i = colon + 2;
        }
    }

    private (int Pid, int Tid) PidPair(ReadOnlySpan<char> text, int from, string what)
    {
        // "PID/TID" (from = -1) or "(PID:TID)" starting at from.
        ReadOnlySpan<char> inner;
        char sep;
        if (from < 0)
        {
            inner = text.Trim();
            sep = '/';
        }
        else
        {
            if (from >= text.Length || text[from] != '(')
            {
                throw Error(_line, $"{what} '{TraceMetadata.Trim(text.ToString())}'");
            }

            int end = text[from..].IndexOf(')');
            if (end < 0)
            {
                throw Error(_line, $"{what} '{TraceMetadata.Trim(text.ToString())}'");
            }

            inner = text[(from + 1)..(from + end)];
            sep = ':';
        }

        int at = inner.IndexOf(sep);
        if (at <= 0 ||
            !int.TryParse(inner[..at], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int pid) ||
            !int.TryParse(inner[(at + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int tid))
        {
            throw Error(_line, $"{what}: '{TraceMetadata.Trim(inner.ToString())}' is not PID{sep}TID");
        }

        return (pid, tid);
    }

    private static ReadOnlySpan<char> Field(ReadOnlySpan<char> payload, string key, char end, bool last = false)
    {
        int at = last ? payload.LastIndexOf(key) : payload.IndexOf(key);
        if (at < 0 || (at > 0 && key[0] != ' ' && payload[at - 1] != ' '))
        {
            return [];
        }

        var value = payload[(at + key.Length)..];
        int stop = value.IndexOf(end);
        return stop < 0 ? value : value[..stop];
    }

    private ulong Hex(ReadOnlySpan<char> text, string what)
    {
        var t = text.Trim();
        if (t.StartsWith("0x") || t.StartsWith("0X"))
        {
            t = t[2..];
        }

        if (t.Length == 0 || t.Length > 16 || !ulong.TryParse(t, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong v))
        {
            throw Error(_line, $"{what} '{TraceMetadata.Trim(text.ToString())}' is not a hexadecimal number");
        }

        return v;
    }

    private ulong Dec(string text, string what) =>
        ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong v)
            ? v
            : throw Error(_line, $"{what} '{TraceMetadata.Trim(text)}' is not a decimal number");

    private int Int(ReadOnlySpan<char> text, string what) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0
            ? v
            : throw Error(_line, $"{what} '{TraceMetadata.Trim(text.ToString())}' is not a positive number");

    private long Int64(ReadOnlySpan<char> text, string what) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long v)
            ? v
            : throw Error(_line, $"{what} '{TraceMetadata.Trim(text.ToString())}' is not a number");

    private TraceFormatException Error(long line, string message) => new($"{_file}:{line}: {message}");

    private sealed record PendingSyscall(string Name, TraceEvent Row, long Line);

    private sealed record PendingExec(TraceEvent Row, long Line, int QueuedBefore);
}
