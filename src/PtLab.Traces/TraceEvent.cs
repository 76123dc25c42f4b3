namespace PtLab.Traces;

/// <summary>The memory lines of one <c>/proc/PID/status</c> sample, in kB.</summary>
public readonly record struct StatusFigures(
    long VmSizeKb, long VmRssKb, long RssAnonKb, long RssFileKb, long RssShmemKb, long VmSwapKb, long VmPteKb);

/// <summary>
/// One row of a trace. Which fields a row carries depends on its <see cref="Kind"/> (see
/// <see cref="TraceKinds.Fields"/>); <see cref="Has"/> says which are present, the others are 0 or
/// null. A row read from a file has passed validation: the fields its kind requires are there.
/// </summary>
/// <remarks>
/// Addresses, lengths, offsets and flags are the raw 64-bit syscall arguments, unsigned; the file
/// stores them as INT64 with the same bits.
/// </remarks>
public readonly record struct TraceEvent
{
    /// <summary>CLONE_THREAD: a new task of the same process (thread group).</summary>
    public const ulong CloneThread = 0x00010000;

    /// <summary>CLONE_VM: the new task shares the creator's mm.</summary>
    public const ulong CloneVm = 0x00000100;

    /// <summary>CLONE_VFORK.</summary>
    public const ulong CloneVfork = 0x00004000;

    /// <summary>CLOCK_MONOTONIC time in nanoseconds.</summary>
    public long TimeNs { get; init; }

    /// <summary>The process (thread group) id.</summary>
    public int Pid { get; init; }

    /// <summary>The thread id.</summary>
    public int Tid { get; init; }

    /// <summary>What the row records.</summary>
    public TraceEventKind Kind { get; init; }

    /// <summary>The optional columns that are present (not null).</summary>
    public TraceFields Has { get; init; }

    /// <summary>Fault address, syscall start address, brk argument, or mapping start.</summary>
    public ulong Address { get; init; }

    /// <summary>Syscall length, mapping length, or (for <see cref="TraceEventKind.Lost"/>) the number of events lost.</summary>
    public ulong Length { get; init; }

    /// <summary>PROT_* bits, or the advice of madvise and process_madvise.</summary>
    public int Prot { get; init; }

    /// <summary>The kind's flags: mmap/mremap/mlock2/mlockall flags, clone flags, a fault's error code, MAP_SHARED (1) or MAP_PRIVATE (2) for mappings.</summary>
    public ulong Flags { get; init; }

    /// <summary>A file descriptor (mmap) or pidfd (process_madvise); -1 for none.</summary>
    public int Fd { get; init; }

    /// <summary>File offset in bytes (mmap's off, a mapping's page offset × page size).</summary>
    public ulong Offset { get; init; }

    /// <summary>mremap's new_address argument.</summary>
    public ulong NewAddress { get; init; }

    /// <summary>mremap's new_len argument.</summary>
    public ulong NewLength { get; init; }

    /// <summary>Syscall return (an address, 0, or -errno), the new tid of a newtask, the calling tid of an exec, or an exit status.</summary>
    public long Result { get; init; }

    /// <summary>Syscall enter-to-exit time in nanoseconds; the row's time is the exit's.</summary>
    public long DurationNs { get; init; }

    /// <summary>The faulting instruction's address (user faults).</summary>
    public ulong Ip { get; init; }

    /// <summary>The mapped file's device, "major:minor" in hex as /proc/PID/maps prints it.</summary>
    public string? Dev { get; init; }

    /// <summary>The mapped file's inode (0 for anonymous mappings).</summary>
    public ulong Inode { get; init; }

    /// <summary>A mapping's file or pseudo-file ("[stack]", "" for anonymous), an exec's file name, or a task's comm.</summary>
    public string? Path { get; init; }

    /// <summary>The figures of a status sample.</summary>
    public StatusFigures Status { get; init; }

    /// <summary>A fault's x86 error code (bit 0 protection, 1 write, 2 user, 4 instruction fetch).</summary>
    public int ErrorCode => (int)Flags;

    /// <summary>A fault's access was a write (error code bit 1); else a read or a fetch.</summary>
    public bool IsWriteFault => (ErrorCode & 0x2) != 0;

    /// <summary>A fault's access was an instruction fetch (error code bit 4).</summary>
    public bool IsFetchFault => (ErrorCode & 0x10) != 0;

    /// <summary>A fault on a present page (error code bit 0): a protection fault, such as a write to a read-only (COW or zero) page.</summary>
    public bool IsProtectionFault => (ErrorCode & 0x1) != 0;

    /// <summary>madvise's advice.</summary>
    public int Advice => Prot;

    /// <summary>Whether a syscall row has its result: false only for a syscall still running when the recording stopped.</summary>
    public bool HasResult => (Has & TraceFields.Result) != 0;

    /// <summary>The new task's tid (newtask rows).</summary>
    public int ChildTid => (int)Result;

    /// <summary>The new task's process id (newtask rows): the creator's for a thread, its own tid otherwise.</summary>
    public int ChildPid => (Flags & CloneThread) != 0 ? Pid : (int)Result;

    /// <summary>Whether <paramref name="field"/> is present.</summary>
    public bool Is(TraceFields field) => (Has & field) == field;

    /// <summary>A row of <paramref name="kind"/> with its required fields marked present (set them with <c>with</c>).</summary>
    public static TraceEvent Create(TraceEventKind kind, long timeNs, int pid, int tid) =>
        new() { Kind = kind, TimeNs = timeNs, Pid = pid, Tid = tid, Has = TraceKinds.Fields(kind).Required };

    /// <summary>A user page fault.</summary>
    public static TraceEvent Fault(long timeNs, int pid, int tid, ulong address, int errorCode, ulong ip) =>
        Create(TraceEventKind.Fault, timeNs, pid, tid) with { Address = address, Flags = (ulong)(uint)errorCode, Ip = ip };

    /// <summary>A kernel fault on a user address.</summary>
    public static TraceEvent KernelFault(long timeNs, int pid, int tid, ulong address, int errorCode) =>
        Create(TraceEventKind.KernelFault, timeNs, pid, tid) with { Address = address, Flags = (ulong)(uint)errorCode };

    /// <summary>A status sample.</summary>
    public static TraceEvent Sample(TraceEventKind kind, long timeNs, int pid, int tid, StatusFigures figures) =>
        Create(kind, timeNs, pid, tid) with { Status = figures };

    /// <summary>This syscall row with its return value and duration.</summary>
    public TraceEvent Returned(long result, long durationNs) =>
        this with { Result = result, DurationNs = durationNs, Has = Has | TraceFields.Result | TraceFields.Duration };

    /// <summary>This row with <paramref name="result"/> set and marked present.</summary>
    public TraceEvent WithResult(long result) => this with { Result = result, Has = Has | TraceFields.Result };
}
