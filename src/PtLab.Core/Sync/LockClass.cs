namespace PtLab.Sync;

/// <summary>How a lock class behaves for the lock checker.</summary>
public enum LockKind
{
    /// <summary>A spin lock: holding it is atomic context, where sleeping is a bug.</summary>
    Spin,

    /// <summary>A sleeping lock (rw-semaphore, mutex): taking it may sleep.</summary>
    Sleeping,
}

/// <summary>
/// A lock class, lockdep's unit of ordering: every PTE lock is one class, every pmd lock another.
/// Instances are immutable and compared by identity.
/// </summary>
public sealed class LockClass
{
    /// <summary>Creates a lock class.</summary>
    /// <param name="name">The kernel's name for it, used in reports.</param>
    /// <param name="kind">Spin or sleeping.</param>
    /// <param name="isLeaf">Whether no other lock may be taken while one of this class is held.</param>
    public LockClass(string name, LockKind kind, bool isLeaf = false)
    {
        Name = name;
        Kind = kind;
        IsLeaf = isLeaf;
    }

    /// <summary><c>mmap_lock</c>, the outermost.</summary>
    public static LockClass MmapLock { get; } = new("mmap_lock", LockKind.Sleeping);

    /// <summary>The split pmd lock (<c>pmd_lock</c>): taken under <c>mmap_lock</c>, before any PTE lock.</summary>
    public static LockClass PmdLock { get; } = new("pmd_lock", LockKind.Spin);

    /// <summary>The split PTE lock (<c>pte_lockptr</c>): taken under the pmd lock when both are held.</summary>
    public static LockClass PteLock { get; } = new("pte_lock", LockKind.Spin);

    /// <summary><c>mm-&gt;page_table_lock</c>: guards PGD and PUD population; a leaf.</summary>
    public static LockClass PageTableLock { get; } = new("page_table_lock", LockKind.Spin, isLeaf: true);

    /// <summary>
    /// A simulated CPU's TLB lock: held by that CPU across a TLB lookup and hardware walk, and by a
    /// flusher that waits for the access in flight. Only an RCU read section nests inside; a leaf.
    /// </summary>
    public static LockClass TlbLock { get; } = new("tlb_lock", LockKind.Spin, isLeaf: true);

    /// <summary>The free-frame list lock (the model's <c>zone-&gt;lock</c>); a leaf.</summary>
    public static LockClass FreeListLock { get; } = new("zone_lock", LockKind.Spin, isLeaf: true);

    /// <summary>A <see cref="PercpuRef"/>'s own switch lock (the seed's patch 03).</summary>
    public static LockClass PercpuRefSwitchLock { get; } = new("percpu_ref_switch_lock", LockKind.Spin);

    /// <summary>The kernel's name for the class.</summary>
    public string Name { get; }

    /// <summary>Spin or sleeping.</summary>
    public LockKind Kind { get; }

    /// <summary>Whether taking any lock while holding this one is a bug.</summary>
    public bool IsLeaf { get; }

    /// <inheritdoc/>
    public override string ToString() => Name;
}
