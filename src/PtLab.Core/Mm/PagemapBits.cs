namespace PtLab.Mm;

/// <summary>
/// The bits of a <c>/proc/PID/pagemap</c> entry (<c>fs/proc/task_mmu.c</c>), for the model's own
/// pagemap and for the readers of the host's.
/// </summary>
public static class PagemapBits
{
    /// <summary><c>PM_PRESENT</c>: a page is mapped.</summary>
    public const ulong Present = 1UL << 63;

    /// <summary><c>PM_SWAP</c>: a swap entry, or a marker that reads as one.</summary>
    public const ulong Swapped = 1UL << 62;

    /// <summary><c>PM_FILE</c>: a page-cache page or shared anonymous memory (not <c>PageAnon</c>).</summary>
    public const ulong File = 1UL << 61;

    /// <summary><c>PM_GUARD_REGION</c>: a guard marker (Linux 6.14+).</summary>
    public const ulong GuardRegion = 1UL << 58;

    /// <summary><c>PM_MMAP_EXCLUSIVE</c>: the page is mapped once.</summary>
    public const ulong Exclusive = 1UL << 56;

    /// <summary><c>PM_PFRAME_MASK</c>: the frame number (zero without CAP_SYS_ADMIN), or swap type and offset.</summary>
    public const ulong PfnMask = (1UL << 55) - 1;
}
