namespace PtLab.Traces;

/// <summary>
/// What one row of a trace records. The name in the file's <c>kind</c> column is given by
/// <see cref="TraceKinds.Name"/>; the fields each kind carries by <see cref="TraceKinds.Fields"/>.
/// </summary>
public enum TraceEventKind : byte
{
    /// <summary><c>exceptions:page_fault_user</c>: an access from user mode faulted. Address, ErrorCode (in Flags), Ip.</summary>
    Fault,
    /// <summary><c>exceptions:page_fault_kernel</c> at a user address (copy_to_user, put_user, exec's ELF load). Address, ErrorCode.</summary>
    KernelFault,
    /// <summary>mmap(addr, len, prot, flags, fd, off): Address, Length, Prot, Flags, Fd, Offset; Result is the mapping's address or -errno.</summary>
    Mmap,
    /// <summary>munmap(addr, len).</summary>
    Munmap,
    /// <summary>mremap(old_addr, old_len, new_len, flags, new_addr): Address, Length, NewLength, Flags, NewAddress.</summary>
    Mremap,
    /// <summary>madvise(start, len, advice): Address, Length, Prot (the advice).</summary>
    Madvise,
    /// <summary>process_madvise(pidfd, iovec, vlen, advice, flags): Fd, Address (the iovec pointer), Length (vlen), Prot (the advice), Flags. perf's tracepoint has only the array's address: where the recorder read the array, its <see cref="MadviseRange"/> rows come right before this row.</summary>
    ProcessMadvise,
    /// <summary>mprotect(start, len, prot).</summary>
    Mprotect,
    /// <summary>brk(addr): Address; Result is the new break.</summary>
    Brk,
    /// <summary>mlock(start, len).</summary>
    Mlock,
    /// <summary>mlock2(start, len, flags).</summary>
    Mlock2,
    /// <summary>munlock(start, len).</summary>
    Munlock,
    /// <summary>mlockall(flags).</summary>
    Mlockall,
    /// <summary>munlockall().</summary>
    Munlockall,
    /// <summary><c>sys_enter_exit</c>: a thread exits; Result is the status argument.</summary>
    Exit,
    /// <summary><c>sys_enter_exit_group</c>: a process exits; Result is the status argument.</summary>
    ExitGroup,
    /// <summary><c>task:task_newtask</c>: the task (Pid, Tid) created a task; Flags are the clone flags, Result the new task's tid, Path its comm.</summary>
    NewTask,
    /// <summary>The task execs: a new mm starts here (at perf's exec COMM record, before the ELF is mapped). Path is the file name, Result the tid that called execve.</summary>
    Exec,
    /// <summary><c>sched:sched_process_exit</c>: the task is gone (its mm reference is dropped). Flags is 1 when its thread group died with it.</summary>
    TaskExit,
    /// <summary>A task that exists when the trace starts (the recorded command at its first exec, or a thread of an attached process). Path is its comm.</summary>
    Task,
    /// <summary><c>PERF_RECORD_MMAP2</c>: the kernel reports a mapping (at exec, mmap, mprotect or mremap). Address, Length, Prot, Flags (MAP_SHARED or MAP_PRIVATE), Offset, Dev, Inode, Path.</summary>
    Mmap2,
    /// <summary>One line of <c>/proc/PID/maps</c> read at exec or attach: the process's initial layout. Same fields as <see cref="Mmap2"/>.</summary>
    Vma,
    /// <summary>A periodic <c>/proc/PID/status</c> sample.</summary>
    Status,
    /// <summary>The status sample taken at exec, before the new program runs.</summary>
    StatusExec,
    /// <summary>The status sample taken at a thread's exit, before its mm reference is dropped; Result is the exit status (wait status form) when known.</summary>
    StatusExit,
    /// <summary>The status sample taken when the recorder attached to a running process.</summary>
    StatusAttach,
    /// <summary><c>PERF_RECORD_LOST</c>: Length events were lost here. Pid and Tid are 0.</summary>
    Lost,
    /// <summary>
    /// One range (iovec) of the <see cref="ProcessMadvise"/> row that follows: Address and Length
    /// are iov_base and iov_len, Result the process the call's pidfd named (0 when unknown). The
    /// recorder reads them at the call's entry; a call's ranges come in one run right before it,
    /// with its time and task, all vlen of them or none.
    /// </summary>
    MadviseRange,
    /// <summary>
    /// The page-cache residency of a file when it first appeared in the trace (at the exec or
    /// attach that mapped it, or at the entry of the first mmap of it): Dev and Inode name the
    /// file, Length is its size in bytes, Result the number of <see cref="CacheRange"/> rows that
    /// follow (its runs of cached pages), Path the file's path when known. The process and thread
    /// are those whose exec or mmap prompted it.
    /// </summary>
    FileCache,
    /// <summary>
    /// One run of cached pages of the <see cref="FileCache"/> row before it: Offset and Length in
    /// bytes, page-aligned, within the file's size rounded up to a page; Dev and Inode as the file's;
    /// Flags, where known, the folio order of the run's folios (0 to <see cref="TraceKinds.MaxFolioOrder"/>;
    /// the run then starts and ends on folio boundaries).
    /// A file's runs come in one run right after it, with its time and task, in increasing order.
    /// </summary>
    CacheRange,
    /// <summary>
    /// <c>signal:signal_generate</c> of SIGSEGV or SIGBUS that the kernel sent a thread for its own
    /// fault (a positive si_code, the thread its own target): the kernel's answer to the fault row
    /// before it. Result is the signal number, Flags the si_code (SEGV_MAPERR 1, SEGV_ACCERR 2, …).
    /// Version 5.
    /// </summary>
    Signal,
    /// <summary>
    /// <c>filemap:mm_filemap_add_to_page_cache</c>: a folio entered the page cache of a file the
    /// tree maps, by whatever did it (the tree's own read(), write() or readahead, another
    /// process, a kernel thread). Dev and Inode name the file as the tracepoint does (the inode
    /// that owns the cache, <c>i_sb-&gt;s_dev</c>), Offset is the folio's first byte, Flags its order,
    /// Result the process in whose context it happened (its tgid; 0 when unknown). Pid and tid are
    /// 0: the page cache belongs to no task of the trace.
    /// </summary>
    CacheAdd,
    /// <summary><c>filemap:mm_filemap_delete_from_page_cache</c>: a folio left the page cache (reclaim, truncation, invalidation). Columns as <see cref="CacheAdd"/>.</summary>
    CacheDelete,
    /// <summary>
    /// shmat(shmid, shmaddr, shmflg): Address (shmaddr), Fd (the shmid), Flags (shmflg: SHM_RDONLY,
    /// SHM_RND, SHM_REMAP, SHM_EXEC); Result is the attach's address or -errno. The segment itself
    /// (its size, and the device and inode of its shmem file, which name it for every process that
    /// attaches it) is in the <see cref="Mmap2"/> row the kernel reported for the attach, before
    /// this row. Version 5.
    /// </summary>
    Shmat,
    /// <summary>shmdt(shmaddr): Address; Result is 0 or -errno. Version 5.</summary>
    Shmdt,
    /// <summary>
    /// An attached recording (<c>record -p</c>): a range of pages the process had, present or
    /// swapped out, at the moment its threads were stopped for the layout read (the
    /// <c>PAGEMAP_SCAN</c> ioctl). Address and Length (page-aligned); Flags the kernel's
    /// <c>PAGE_IS_*</c> categories of every page in it: <see cref="TraceKinds.PageIsFile"/>,
    /// <see cref="TraceKinds.PageIsPresent"/>, <see cref="TraceKinds.PageIsSwapped"/>,
    /// <see cref="TraceKinds.PageIsPfnZero"/>, <see cref="TraceKinds.PageIsHuge"/>. Version 6.
    /// </summary>
    Resident,
    /// <summary>
    /// An attached recording (<c>record -p</c>): a range where the process had PTE tables (empty
    /// ones included) or PMD leaves at the moment of its layout (the <c>PAGEMAP_SCAN</c> ioctl's
    /// fast path). Address and Length (page-aligned). After the <see cref="Resident"/> rows, so a
    /// 2 MiB block of it without a page there held an empty table. Version 6.
    /// </summary>
    PageTables,
    /// <summary>mseal(start, len, flags): Address, Length, Flags; Result is 0 or -errno. Version 7.</summary>
    Mseal,
    /// <summary>
    /// A range of the initial layout that was sealed already (<c>VM_SEALED</c>: <c>sl</c> in
    /// <c>/proc/PID/smaps</c>' VmFlags), read with the layout at exec (the system mappings of a
    /// kernel with <c>CONFIG_MSEAL_SYSTEM_MAPPINGS</c>) or at attach (what the process sealed
    /// before): Address and Length (page-aligned), after the layout's <see cref="Vma"/> rows. Not
    /// a call: the replay seals the range as the layout's state. Version 8.
    /// </summary>
    VmaSealed,
}

/// <summary>The columns a row can carry beyond time, pid, tid and kind.</summary>
[Flags]
public enum TraceFields
{
    /// <summary>No optional column.</summary>
    None = 0,
    /// <summary><c>address</c>.</summary>
    Address = 1 << 0,
    /// <summary><c>length</c>.</summary>
    Length = 1 << 1,
    /// <summary><c>prot</c> (protection, or madvise advice).</summary>
    Prot = 1 << 2,
    /// <summary><c>flags</c> (mmap/mremap/mlock2/mlockall/shmat/mseal/clone flags, fault error code, MAP_SHARED/PRIVATE).</summary>
    Flags = 1 << 3,
    /// <summary><c>fd</c> (shmat's shmid).</summary>
    Fd = 1 << 4,
    /// <summary><c>offset</c> (file offset in bytes).</summary>
    Offset = 1 << 5,
    /// <summary><c>new_address</c>.</summary>
    NewAddress = 1 << 6,
    /// <summary><c>new_length</c>.</summary>
    NewLength = 1 << 7,
    /// <summary><c>result</c>.</summary>
    Result = 1 << 8,
    /// <summary><c>duration_ns</c>.</summary>
    Duration = 1 << 9,
    /// <summary><c>ip</c>.</summary>
    Ip = 1 << 10,
    /// <summary><c>dev</c>.</summary>
    Dev = 1 << 11,
    /// <summary><c>inode</c>.</summary>
    Inode = 1 << 12,
    /// <summary><c>path</c>.</summary>
    Path = 1 << 13,
    /// <summary>The seven <c>/proc/PID/status</c> figures.</summary>
    Status = 1 << 14,
}

/// <summary>The names of the kinds in the file, and the fields each kind requires or may carry.</summary>
public static class TraceKinds
{
    /// <summary>Number of kinds.</summary>
    public const int Count = (int)TraceEventKind.VmaSealed + 1;

    /// <summary><c>PAGE_IS_FILE</c>: a <see cref="TraceEventKind.Resident"/> range of file (page-cache or shmem) pages.</summary>
    public const ulong PageIsFile = 1 << 2;

    /// <summary><c>PAGE_IS_PRESENT</c>: a <see cref="TraceEventKind.Resident"/> range of present pages.</summary>
    public const ulong PageIsPresent = 1 << 3;

    /// <summary><c>PAGE_IS_SWAPPED</c>: a <see cref="TraceEventKind.Resident"/> range of swap (or other non-present) entries.</summary>
    public const ulong PageIsSwapped = 1 << 4;

    /// <summary><c>PAGE_IS_PFNZERO</c>: a <see cref="TraceEventKind.Resident"/> range mapping the shared zero page.</summary>
    public const ulong PageIsPfnZero = 1 << 5;

    /// <summary><c>PAGE_IS_HUGE</c>: a <see cref="TraceEventKind.Resident"/> range mapped by PMD (or larger) leaves.</summary>
    public const ulong PageIsHuge = 1 << 6;

    /// <summary>The most cache_range rows one file_cache row may announce (a file of 2^44 bytes, every other page cached).</summary>
    public const long MaxCacheRanges = 1L << 31;

    /// <summary>The largest folio order a cache_range row may give (MAX_PAGECACHE_ORDER is at most PMD order, 9, on x86-64; other architectures go higher).</summary>
    public const int MaxFolioOrder = 20;

    /// <summary>SIGBUS: a <see cref="TraceEventKind.Signal"/> row's signal.</summary>
    public const long SigBus = 7;

    /// <summary>SIGSEGV: a <see cref="TraceEventKind.Signal"/> row's signal.</summary>
    public const long SigSegv = 11;

    /// <summary>UIO_MAXIOV: the most ranges one process_madvise call takes.</summary>
    public const int MaxMadviseRanges = 1024;

    private const TraceFields Syscall = TraceFields.Result | TraceFields.Duration;
    private const TraceFields Mapping = TraceFields.Address | TraceFields.Length | TraceFields.Prot | TraceFields.Flags |
                                        TraceFields.Offset | TraceFields.Dev | TraceFields.Inode | TraceFields.Path;

    private const TraceFields PageCacheChange = TraceFields.Offset | TraceFields.Flags | TraceFields.Dev | TraceFields.Inode | TraceFields.Result;

    private static readonly string[] s_names =
    [
        "fault", "kfault", "mmap", "munmap", "mremap", "madvise", "process_madvise", "mprotect", "brk",
        "mlock", "mlock2", "munlock", "mlockall", "munlockall", "exit", "exit_group", "newtask", "exec",
        "task_exit", "task", "mmap2", "vma", "status", "status_exec", "status_exit", "status_attach", "lost",
        "madvise_range", "file_cache", "cache_range", "signal", "cache_add", "cache_delete",
        "shmat", "shmdt", "resident", "page_tables", "mseal", "vma_sealed",
    ];

    // Required fields of each kind, then the fields it may carry besides. Any other field must be null.
    private static readonly (TraceFields Required, TraceFields Optional)[] s_fields =
    [
        (TraceFields.Address | TraceFields.Flags | TraceFields.Ip, TraceFields.None),                         // fault
        (TraceFields.Address | TraceFields.Flags, TraceFields.None),                                          // kfault
        (TraceFields.Address | TraceFields.Length | TraceFields.Prot | TraceFields.Flags | TraceFields.Fd | TraceFields.Offset, Syscall),
        (TraceFields.Address | TraceFields.Length, Syscall),                                                  // munmap
        (TraceFields.Address | TraceFields.Length | TraceFields.NewLength | TraceFields.Flags | TraceFields.NewAddress, Syscall),
        (TraceFields.Address | TraceFields.Length | TraceFields.Prot, Syscall),                               // madvise
        (TraceFields.Fd | TraceFields.Address | TraceFields.Length | TraceFields.Prot | TraceFields.Flags, Syscall),
        (TraceFields.Address | TraceFields.Length | TraceFields.Prot, Syscall),                               // mprotect
        (TraceFields.Address, Syscall),                                                                       // brk
        (TraceFields.Address | TraceFields.Length, Syscall),                                                  // mlock
        (TraceFields.Address | TraceFields.Length | TraceFields.Flags, Syscall),                              // mlock2
        (TraceFields.Address | TraceFields.Length, Syscall),                                                  // munlock
        (TraceFields.Flags, Syscall),                                                                         // mlockall
        (TraceFields.None, Syscall),                                                                          // munlockall
        (TraceFields.Result, TraceFields.None),                                                               // exit
        (TraceFields.Result, TraceFields.None),                                                               // exit_group
        (TraceFields.Flags | TraceFields.Result | TraceFields.Path, TraceFields.None),                        // newtask
        (TraceFields.Path | TraceFields.Result, TraceFields.None),                                            // exec
        (TraceFields.None, TraceFields.Flags),                                                                // task_exit
        (TraceFields.Path, TraceFields.None),                                                                 // task
        (Mapping, TraceFields.None),                                                                          // mmap2
        (Mapping, TraceFields.None),                                                                          // vma
        (TraceFields.Status, TraceFields.None),                                                               // status
        (TraceFields.Status, TraceFields.None),                                                               // status_exec
        (TraceFields.Status, TraceFields.Result),                                                             // status_exit
        (TraceFields.Status, TraceFields.None),                                                               // status_attach
        (TraceFields.Length, TraceFields.None),                                                               // lost
        (TraceFields.Address | TraceFields.Length | TraceFields.Result, TraceFields.None),                    // madvise_range
        (TraceFields.Length | TraceFields.Dev | TraceFields.Inode | TraceFields.Result, TraceFields.Path),    // file_cache
        (TraceFields.Offset | TraceFields.Length | TraceFields.Dev | TraceFields.Inode, TraceFields.Flags),   // cache_range
        (TraceFields.Result | TraceFields.Flags, TraceFields.None),                                           // signal
        (PageCacheChange, TraceFields.None),                                                                  // cache_add
        (PageCacheChange, TraceFields.None),                                                                  // cache_delete
        (TraceFields.Address | TraceFields.Fd | TraceFields.Flags, Syscall),                                  // shmat
        (TraceFields.Address, Syscall),                                                                       // shmdt
        (TraceFields.Address | TraceFields.Length | TraceFields.Flags, TraceFields.None),                     // resident
        (TraceFields.Address | TraceFields.Length, TraceFields.None),                                         // page_tables
        (TraceFields.Address | TraceFields.Length | TraceFields.Flags, Syscall),                              // mseal
        (TraceFields.Address | TraceFields.Length, TraceFields.None),                                         // vma_sealed
    ];

    /// <summary>The kind's name in the <c>kind</c> column.</summary>
    public static string Name(TraceEventKind kind) => s_names[(int)kind];

    /// <summary>The kind named <paramref name="name"/>, or false.</summary>
    public static bool TryParse(ReadOnlySpan<char> name, out TraceEventKind kind)
    {
        for (int i = 0; i < s_names.Length; i++)
        {
            if (name.SequenceEqual(s_names[i]))
            {
                kind = (TraceEventKind)i;
                return true;
            }
        }

        kind = default;
        return false;
    }

    /// <summary>The fields a row of this kind must carry, and those it may carry besides.</summary>
    public static (TraceFields Required, TraceFields Optional) Fields(TraceEventKind kind) => s_fields[(int)kind];

    /// <summary>Whether the kind is an address-space syscall recorded from its enter/exit pair (it has a result and a duration).</summary>
    public static bool IsSyscall(TraceEventKind kind) => kind is >= TraceEventKind.Mmap and <= TraceEventKind.Munlockall or TraceEventKind.Shmat or TraceEventKind.Shmdt or TraceEventKind.Mseal;

    /// <summary>Whether the kind is a <c>/proc/PID/status</c> sample.</summary>
    public static bool IsStatus(TraceEventKind kind) => kind is >= TraceEventKind.Status and <= TraceEventKind.StatusAttach;

    /// <summary>Whether the kind is a change of the page cache after a file first appeared (<c>cache_add</c>, <c>cache_delete</c>): rows of no task.</summary>
    public static bool IsPageCacheChange(TraceEventKind kind) => kind is TraceEventKind.CacheAdd or TraceEventKind.CacheDelete;

    /// <summary>Whether the kind is a page fault (user or kernel).</summary>
    public static bool IsFault(TraceEventKind kind) => kind is TraceEventKind.Fault or TraceEventKind.KernelFault;
}
