namespace PtLab.Reclaim;

/// <summary>A test-only break of a protocol, which the tester must catch.</summary>
public enum Mutation
{
    /// <summary>The real protocol.</summary>
    None,

    /// <summary>Refcount designs: walkers map tables without <c>pte_tryget</c>.</summary>
    SkipTryGet,

    /// <summary>Refcount designs: one clear path forgets <c>track_pte_clear</c>.</summary>
    SkipTrackClear,

    /// <summary>pt-reclaim: <c>pte_offset_map_lock</c> without the pmd recheck.</summary>
    SkipPmdRecheck,

    /// <summary><c>free_user_pte</c> frees the table without waiting a grace period.</summary>
    SkipRcuDeferral,

    /// <summary>A percpu_ref switch to atomic folds the per-CPU counts without the grace period.</summary>
    SkipSwitchGracePeriod,

    /// <summary>
    /// A zap frees the pages it gathered without flushing the TLBs first. It breaks the address
    /// space's gather, not a design, so it applies to every design.
    /// </summary>
    SkipGatherFlush,

    /// <summary>occupancy: the slow path frees on the counts read before it dropped the PTE lock, without rechecking them.</summary>
    SkipCountRecheck,

    /// <summary>pte-ref-batched: a table whose switch to atomic is still pending is freed on its unconfirmed count.</summary>
    SkipSwitchConfirm,

    /// <summary>
    /// A PTE table is freed without the TLB flush that drops the paging-structure caches (the
    /// gather's flush stays last-level, <c>free_user_pte</c> skips its <c>flush_tlb_range</c>): a
    /// CPU that cached the pmd entry walks into the freed table. It breaks the address space's
    /// table free, which every design goes through, so it applies to every design.
    /// </summary>
    SkipTableFlush,

    /// <summary>--free-pmd: a PMD table is freed on the emptiness seen under <c>mmap_lock</c> for read, without the recheck under the pud and pmd locks.</summary>
    SkipPudRecheck,

    /// <summary>--free-pmd: a PMD table is freed right after the TLB flush, without waiting a grace period for lockless walkers.</summary>
    SkipPmdRcu,

    /// <summary>scanner: a table the lockless scan saw empty is freed without rechecking its entries under the PTE lock.</summary>
    SkipScanRecheck,

    /// <summary>scanner: the scanned table is locked and freed without checking that the pmd still points at it (<c>pmd_same</c>).</summary>
    SkipScanPmdSame,
}

/// <summary>Mutation names on the command line.</summary>
public static class Mutations
{
    private static readonly (string Name, Mutation Mutation)[] s_names =
    [
        ("none", Mutation.None),
        ("skip-tryget", Mutation.SkipTryGet),
        ("skip-track-clear", Mutation.SkipTrackClear),
        ("skip-pmd-recheck", Mutation.SkipPmdRecheck),
        ("skip-rcu-deferral", Mutation.SkipRcuDeferral),
        ("skip-switch-grace-period", Mutation.SkipSwitchGracePeriod),
        ("skip-tlb-flush", Mutation.SkipGatherFlush),
        ("skip-count-recheck", Mutation.SkipCountRecheck),
        ("skip-switch-confirm", Mutation.SkipSwitchConfirm),
        ("skip-table-flush", Mutation.SkipTableFlush),
        ("skip-pud-recheck", Mutation.SkipPudRecheck),
        ("skip-pmd-rcu", Mutation.SkipPmdRcu),
        ("skip-scan-recheck", Mutation.SkipScanRecheck),
        ("skip-scan-pmd-same", Mutation.SkipScanPmdSame),
    ];

    /// <summary>The known names.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. s_names.Select(n => n.Name)];

    /// <summary>The mutation called <paramref name="name"/>, or null.</summary>
    public static Mutation? Parse(string name) => s_names.FirstOrDefault(n => n.Name == name) is { Name: not null } hit ? hit.Mutation : null;

    /// <summary>The command-line name of <paramref name="mutation"/>.</summary>
    public static string NameOf(Mutation mutation) => s_names.First(n => n.Mutation == mutation).Name;
}
