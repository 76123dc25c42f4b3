namespace PtLab.Mm;

/// <summary>The Linux errno values the modelled system calls return.</summary>
public enum Errno
{
    /// <summary>Success.</summary>
    None = 0,
    /// <summary>Operation not permitted.</summary>
    EPERM = 1,
    /// <summary>Bad file descriptor.</summary>
    EBADF = 9,
    /// <summary>Try again.</summary>
    EAGAIN = 11,
    /// <summary>Out of memory, or a range not fully mapped.</summary>
    ENOMEM = 12,
    /// <summary>Permission denied.</summary>
    EACCES = 13,
    /// <summary>Bad address.</summary>
    EFAULT = 14,
    /// <summary>File exists (MAP_FIXED_NOREPLACE over a mapping).</summary>
    EEXIST = 17,
    /// <summary>Invalid argument.</summary>
    EINVAL = 22,
    /// <summary>Value too large (a file offset plus length that wraps).</summary>
    EOVERFLOW = 75,
    /// <summary>Operation not supported (unknown flags with MAP_SHARED_VALIDATE).</summary>
    EOPNOTSUPP = 95,
}

/// <summary>Outcome of a user memory access or a page fault.</summary>
public enum FaultOutcome
{
    /// <summary>The access completed.</summary>
    Ok,
    /// <summary>SIGSEGV with <c>SEGV_MAPERR</c>: no mapping at the address.</summary>
    SegvMapErr,
    /// <summary>SIGSEGV with <c>SEGV_ACCERR</c>: the mapping forbids the access.</summary>
    SegvAccErr,
    /// <summary>SIGSEGV with <c>SEGV_PKUERR</c>: the VMA's protection key forbids data access (an execute-only mapping on a host with protection keys).</summary>
    SegvPkuErr,
    /// <summary>SIGBUS.</summary>
    Bus,
    /// <summary><c>VM_FAULT_OOM</c>: no memory could be found for the fault.</summary>
    Oom,
}

/// <summary>The result of a user access: the outcome and the faulting address when it failed.</summary>
/// <param name="Outcome">What happened.</param>
/// <param name="Address">The address that faulted, when the outcome is not <see cref="FaultOutcome.Ok"/>.</param>
public readonly record struct AccessResult(FaultOutcome Outcome, ulong Address)
{
    /// <summary>A completed access.</summary>
    public static AccessResult Success => default;

    /// <summary>Whether the access completed.</summary>
    public bool Ok => Outcome == FaultOutcome.Ok;

    /// <inheritdoc/>
    public override string ToString() => Ok ? "ok" : $"{Outcome} at 0x{Address:x}";
}

/// <summary>The result of <c>mmap</c>: an address or an errno.</summary>
/// <param name="Address">The mapping's start, when <see cref="Error"/> is <see cref="Errno.None"/>.</param>
/// <param name="Error">The errno.</param>
public readonly record struct MmapResult(ulong Address, Errno Error)
{
    /// <summary>Whether it succeeded.</summary>
    public bool Ok => Error == Errno.None;

    /// <summary>
    /// A mapping the kernel would have made and the model cannot: hugetlb memory (<c>MAP_HUGETLB</c>)
    /// that passed every check, its reservation included. <see cref="Error"/> is then EINVAL and
    /// nothing was mapped; a MAP_FIXED call has unmapped what was in its range, as the kernel has.
    /// </summary>
    public bool NotModelled { get; init; }

    /// <inheritdoc/>
    public override string ToString() => Ok ? $"0x{Address:x}" : Error.ToString();
}
