namespace PtLab.Mm;

/// <summary><c>PROT_*</c> values from the Linux UAPI.</summary>
[Flags]
public enum Prot
{
    /// <summary><c>PROT_NONE</c>.</summary>
    None = 0,
    /// <summary><c>PROT_READ</c>.</summary>
    Read = 0x1,
    /// <summary><c>PROT_WRITE</c>.</summary>
    Write = 0x2,
    /// <summary><c>PROT_EXEC</c>.</summary>
    Exec = 0x4,
    /// <summary><c>PROT_SEM</c>.</summary>
    Sem = 0x8,
}

/// <summary><c>MAP_*</c> values from the Linux UAPI (x86-64).</summary>
[Flags]
public enum MapFlags
{
    /// <summary>No flag (not valid alone).</summary>
    None = 0,
    /// <summary><c>MAP_SHARED</c>.</summary>
    Shared = 0x01,
    /// <summary><c>MAP_PRIVATE</c>.</summary>
    Private = 0x02,
    /// <summary><c>MAP_SHARED_VALIDATE</c>.</summary>
    SharedValidate = 0x03,
    /// <summary>
    /// <c>MAP_DROPPABLE</c> (Linux 6.11+; glibc's per-thread getrandom states): private anonymous
    /// memory whose pages reclaim may drop at any time, written or not (<see cref="VmFlags.Droppable"/>).
    /// </summary>
    Droppable = 0x08,
    /// <summary><c>MAP_FIXED</c>.</summary>
    Fixed = 0x10,
    /// <summary><c>MAP_ANONYMOUS</c>.</summary>
    Anonymous = 0x20,
    /// <summary><c>MAP_32BIT</c>: x86-64's placement in the first 2 GiB (accepted, placed as any other mapping by the model).</summary>
    Map32Bit = 0x40,
    /// <summary><c>MAP_GROWSDOWN</c>.</summary>
    GrowsDown = 0x0100,
    /// <summary><c>MAP_DENYWRITE</c> (ignored by Linux).</summary>
    DenyWrite = 0x0800,
    /// <summary><c>MAP_EXECUTABLE</c> (ignored by Linux).</summary>
    Executable = 0x1000,
    /// <summary><c>MAP_LOCKED</c>.</summary>
    Locked = 0x2000,
    /// <summary><c>MAP_NORESERVE</c>: no swap-space reservation (overcommit accounting).</summary>
    NoReserve = 0x4000,
    /// <summary><c>MAP_POPULATE</c>: prefault the mapping.</summary>
    Populate = 0x8000,
    /// <summary><c>MAP_NONBLOCK</c>.</summary>
    NonBlock = 0x10000,
    /// <summary><c>MAP_STACK</c>.</summary>
    Stack = 0x20000,
    /// <summary><c>MAP_HUGETLB</c>.</summary>
    HugeTlb = 0x40000,
    /// <summary><c>MAP_SYNC</c>.</summary>
    Sync = 0x80000,
    /// <summary><c>MAP_FIXED_NOREPLACE</c>.</summary>
    FixedNoReplace = 0x100000,
    /// <summary><c>MAP_UNINITIALIZED</c> (honoured only without an MMU; bit 26, the lowest of the hugetlb size bits).</summary>
    Uninitialized = 0x4000000,
    /// <summary><c>MAP_HUGE_2MB</c>: log2 of the hugetlb page size, 21, in bits 26-31 (<c>MAP_HUGE_SHIFT</c>).</summary>
    Huge2MB = 21 << 26,
    /// <summary><c>MAP_HUGE_1GB</c>: 30 in bits 26-31.</summary>
    Huge1GB = 30 << 26,
}

/// <summary><c>MADV_*</c> values from the Linux UAPI.</summary>
public enum Advice
{
    /// <summary><c>MADV_NORMAL</c>.</summary>
    Normal = 0,
    /// <summary><c>MADV_RANDOM</c>.</summary>
    Random = 1,
    /// <summary><c>MADV_SEQUENTIAL</c>.</summary>
    Sequential = 2,
    /// <summary><c>MADV_WILLNEED</c>.</summary>
    WillNeed = 3,
    /// <summary><c>MADV_DONTNEED</c>.</summary>
    DontNeed = 4,
    /// <summary><c>MADV_FREE</c>.</summary>
    Free = 8,
    /// <summary><c>MADV_REMOVE</c>.</summary>
    Remove = 9,
    /// <summary><c>MADV_DONTFORK</c>: fork leaves the range out of the child (<c>VM_DONTCOPY</c>).</summary>
    DontFork = 10,
    /// <summary><c>MADV_DOFORK</c>: undoes <see cref="DontFork"/> (EINVAL on a <c>VM_IO</c> mapping).</summary>
    DoFork = 11,
    /// <summary><c>MADV_MERGEABLE</c>: KSM may merge the range's pages (<c>VM_MERGEABLE</c>; only ksmd acts on it).</summary>
    Mergeable = 12,
    /// <summary><c>MADV_UNMERGEABLE</c>: undoes <see cref="Mergeable"/>.</summary>
    Unmergeable = 13,
    /// <summary><c>MADV_HUGEPAGE</c>.</summary>
    HugePage = 14,
    /// <summary><c>MADV_NOHUGEPAGE</c>.</summary>
    NoHugePage = 15,
    /// <summary><c>MADV_DONTDUMP</c>.</summary>
    DontDump = 16,
    /// <summary><c>MADV_DODUMP</c>.</summary>
    DoDump = 17,
    /// <summary>
    /// <c>MADV_WIPEONFORK</c>: the child of a fork gets the range empty, its pages faulted in anew
    /// (<c>VM_WIPEONFORK</c>; private anonymous memory only, else EINVAL).
    /// </summary>
    WipeOnFork = 18,
    /// <summary><c>MADV_KEEPONFORK</c>: undoes <see cref="WipeOnFork"/>.</summary>
    KeepOnFork = 19,
    /// <summary><c>MADV_COLD</c>.</summary>
    Cold = 20,
    /// <summary><c>MADV_PAGEOUT</c>.</summary>
    PageOut = 21,
    /// <summary><c>MADV_POPULATE_READ</c>: prefault the range readable, as read faults would.</summary>
    PopulateRead = 22,
    /// <summary><c>MADV_POPULATE_WRITE</c>: prefault the range writable, as write faults would.</summary>
    PopulateWrite = 23,
    /// <summary><c>MADV_DONTNEED_LOCKED</c>.</summary>
    DontNeedLocked = 24,
    /// <summary>
    /// <c>MADV_COLLAPSE</c>: collapse each aligned 2 MiB of the range into a transparent huge page
    /// now, whatever the THP mode (anonymous private memory; see docs/collapse.md).
    /// </summary>
    Collapse = 25,
    /// <summary>
    /// <c>MADV_GUARD_INSTALL</c> (Linux 6.13+): a guard marker in every page of the range, after
    /// zapping what was mapped there; touching one is SIGSEGV. Not on <c>VM_LOCKED</c> or
    /// <c>VM_SPECIAL</c> VMAs (EINVAL).
    /// </summary>
    GuardInstall = 102,
    /// <summary><c>MADV_GUARD_REMOVE</c> (Linux 6.13+): clears the range's guard markers, nothing else.</summary>
    GuardRemove = 103,
    /// <summary>
    /// <c>MADV_PT_RECLAIM</c>: a PtLab-specific value that no kernel defines (proposed by David
    /// Hildenbrand, never merged): synchronously free the empty PTE tables whose whole 2 MiB lies in
    /// the range. Only designs that implement <see cref="IExplicitTableReclaim"/> accept it; the
    /// others answer EINVAL, as a kernel answers an advice it does not know.
    /// </summary>
    PtReclaim = 0x7074,
}

/// <summary><c>MREMAP_*</c> values from the Linux UAPI.</summary>
[Flags]
public enum MremapFlags
{
    /// <summary>Resize in place only.</summary>
    None = 0,
    /// <summary><c>MREMAP_MAYMOVE</c>.</summary>
    MayMove = 1,
    /// <summary><c>MREMAP_FIXED</c>: move to the address given (implies a move).</summary>
    Fixed = 2,
    /// <summary><c>MREMAP_DONTUNMAP</c>: move the pages but leave the old range mapped, empty.</summary>
    DontUnmap = 4,
}

/// <summary><c>mlock2</c> flags.</summary>
[Flags]
public enum MlockFlags
{
    /// <summary>Lock and populate now.</summary>
    None = 0,
    /// <summary><c>MLOCK_ONFAULT</c>: lock pages as they are faulted in, populate nothing now.</summary>
    OnFault = 1,
}

/// <summary><c>mlockall</c> flags (<c>MCL_*</c>).</summary>
[Flags]
public enum MlockallFlags
{
    /// <summary>Not valid alone.</summary>
    None = 0,
    /// <summary><c>MCL_CURRENT</c>: lock every current mapping.</summary>
    Current = 1,
    /// <summary><c>MCL_FUTURE</c>: lock every future mapping (<c>mm-&gt;def_flags</c>).</summary>
    Future = 2,
    /// <summary><c>MCL_ONFAULT</c>: with the others, lock pages only as they fault in.</summary>
    OnFault = 4,
}

/// <summary><c>VM_*</c> flags of a VMA (64 bits, as <c>vm_flags_t</c> on x86-64).</summary>
[Flags]
public enum VmFlags : long
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary><c>VM_READ</c>.</summary>
    Read = 0x1,
    /// <summary><c>VM_WRITE</c>.</summary>
    Write = 0x2,
    /// <summary><c>VM_EXEC</c>.</summary>
    Exec = 0x4,
    /// <summary><c>VM_SHARED</c>.</summary>
    Shared = 0x8,
    /// <summary><c>VM_MAYSHARE</c>.</summary>
    MayShare = 0x80,
    /// <summary><c>VM_MAYREAD</c>.</summary>
    MayRead = 0x10,
    /// <summary><c>VM_MAYWRITE</c>.</summary>
    MayWrite = 0x20,
    /// <summary><c>VM_MAYEXEC</c>.</summary>
    MayExec = 0x40,
    /// <summary><c>VM_GROWSDOWN</c>.</summary>
    GrowsDown = 0x100,
    /// <summary><c>VM_PFNMAP</c>: raw frame numbers, no <c>struct page</c> behind the entries (pte_special; no rmap, no RSS).</summary>
    PfnMap = 0x400,
    /// <summary>
    /// <c>VM_MAYBE_GUARD</c> (smaps <c>gu</c>; Linux 6.19, and 6.18 builds that carry it):
    /// MADV_GUARD_INSTALL sets it on the whole VMA and nothing clears it. fork copies the tables
    /// of a VMA that has it, so a file-backed or shared VMA, which gets no anon_vma from the
    /// install, keeps its markers in the child; and it is sticky on merge (a merge keeps it when
    /// either side had it, and it never keeps two VMAs apart).
    /// </summary>
    MaybeGuard = 0x800,
    /// <summary><c>VM_LOCKED</c>.</summary>
    Locked = 0x2000,
    /// <summary><c>VM_IO</c>: memory-mapped I/O (never set by the model's own mappings).</summary>
    Io = 0x4000,
    /// <summary><c>VM_SEQ_READ</c> (MADV_SEQUENTIAL).</summary>
    SeqRead = 0x8000,
    /// <summary><c>VM_RAND_READ</c> (MADV_RANDOM).</summary>
    RandRead = 0x10000,
    /// <summary><c>VM_DONTCOPY</c> (<c>MADV_DONTFORK</c>): fork does not copy the VMA.</summary>
    DontCopy = 0x20000,
    /// <summary><c>VM_DONTEXPAND</c>.</summary>
    DontExpand = 0x40000,
    /// <summary><c>VM_LOCKONFAULT</c>: with VM_LOCKED, lock pages as they fault in instead of populating.</summary>
    LockOnFault = 0x80000,
    /// <summary><c>VM_NORESERVE</c>.</summary>
    NoReserve = 0x200000,
    /// <summary><c>VM_ACCOUNT</c>: committed memory charged.</summary>
    Account = 0x100000,
    /// <summary><c>VM_WIPEONFORK</c> (<c>MADV_WIPEONFORK</c>): fork gives the child the VMA without its pages.</summary>
    WipeOnFork = 0x0200_0000,
    /// <summary><c>VM_DONTDUMP</c> (<c>MADV_DONTDUMP</c>).</summary>
    DontDump = 0x0400_0000,
    /// <summary><c>VM_MIXEDMAP</c>: entries with and without a <c>struct page</c> (never set by the model's mappings).</summary>
    MixedMap = 0x1000_0000,
    /// <summary>
    /// The VMA carries the mm's execute-only protection key (x86's <c>VM_PKEY_BIT*</c> holding
    /// <c>execute_only_pkey</c>), on a host that gives one (<see cref="MachineOptions.ExecOnlyPkey"/>):
    /// set by mmap and mprotect whose prot is exactly PROT_EXEC (PROT_SEM too makes it plain),
    /// cleared by any other mprotect. As part of the flags it keeps such a VMA from merging with
    /// one that has no key.
    /// </summary>
    PkeyExecOnly = 0x0800_0000,
    /// <summary><c>VM_HUGEPAGE</c> (<c>MADV_HUGEPAGE</c>): transparent huge pages wanted, also in THP mode <c>madvise</c>.</summary>
    HugePage = 0x2000_0000,
    /// <summary><c>VM_NOHUGEPAGE</c> (<c>MADV_NOHUGEPAGE</c>, <c>MAP_STACK</c>): never a transparent huge page here.</summary>
    NoHugePage = 0x4000_0000,
    /// <summary><c>VM_MERGEABLE</c> (<c>MADV_MERGEABLE</c>): KSM may merge the pages; ksmd is not modelled, so nothing else follows.</summary>
    Mergeable = 0x8000_0000,
    /// <summary>
    /// <c>VM_DROPPABLE</c> (bit 40; smaps <c>dp</c>): set by MAP_DROPPABLE with VM_NORESERVE,
    /// VM_WIPEONFORK and VM_DONTDUMP. Its anonymous pages are never swap-backed: they live on the
    /// file LRU, and reclaim discards them even when written (a lazy-free page that never turns
    /// swap-backed again). mlock leaves such a VMA unlocked.
    /// </summary>
    Droppable = 1L << 40,
    /// <summary>
    /// <c>VM_SEALED</c> (smaps <c>sl</c>; bit 42 in Linux 6.18, bit 63 before): <c>mseal</c> set it,
    /// nothing clears it, fork copies it and exec drops it with the old mm. munmap, mremap,
    /// mprotect and MAP_FIXED over it fail with EPERM, and so do the discarding advices on
    /// private anonymous memory that is not writable. As a flag it keeps a sealed VMA from
    /// merging with an unsealed neighbour.
    /// </summary>
    Sealed = 1L << 42,
}
