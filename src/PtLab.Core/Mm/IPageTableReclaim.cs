using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>
/// The points where the kernel's page-table reclaim designs differ. <c>Mm/</c> stays
/// design-agnostic and calls these hooks; each design is one class in <c>Reclaim/</c>, the layer
/// above, which implements them.
/// </summary>
public interface IPageTableReclaim
{
    /// <summary>The design's name on the command line.</summary>
    string Name { get; }

    /// <summary>PTE table constructor (<c>pgtable_pte_page_ctor</c>, where the seed calls <c>pte_ref_init</c>).</summary>
    void PteTableCtor(MmStruct mm, Cpu cpu, long pteTable);

    /// <summary>PTE table destructor (<c>pgtable_pte_page_dtor</c>, where the seed calls <c>pte_ref_free</c>).</summary>
    void PteTableDtor(MmStruct mm, long pteTable);

    /// <summary>
    /// Whether <see cref="TrackPteSet"/> and <see cref="TrackPteClear"/> do anything: when not, the
    /// set and clear primitives skip the calls, as the kernel compiles the hooks out.
    /// </summary>
    bool TracksEntries => true;

    /// <summary>
    /// Whether <see cref="PteOffsetMap"/>, <see cref="PteUnmap"/>, <see cref="PteOffsetMapLock"/> and
    /// <see cref="PteUnmapUnlock"/> are the plain ones: a visitor holding <c>mmap_lock</c> maps a table
    /// with neither RCU nor a reference (tables go only under <c>mmap_lock</c> for write), and
    /// <c>pte_unmap</c> does nothing. When so, <c>Mm/</c> maps tables itself and skips the calls, as
    /// the kernel's <c>pte_offset_map</c> has no hook to call.
    /// </summary>
    bool PlainPteMap => false;

    /// <summary>
    /// Non-null for a design whose PTE tables each carry a <see cref="Sync.PercpuRef"/> as their
    /// design state, taken by <c>pte_tryget_map</c> and held by every visitor and every non-none
    /// entry, the same reference for both (so that <see cref="TrackPteSetHandOver"/> hands the
    /// visitor's over whenever an entry goes from none to non-none): <c>Mm/</c> then runs the
    /// returned percpu fast path itself, as the kernel's <c>pte_tryget_map</c> is a direct call,
    /// and calls the design's mapping hooks only when that path leaves the work to them.
    /// </summary>
    PercpuPteMap? PercpuPteMap => null;

    /// <summary>Called by <c>set_pte_at</c> with the entry it replaces (<c>track_pte_set</c>).</summary>
    void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry);

    /// <summary>
    /// <see cref="TrackPteSet"/> for a store that the caller follows, under the same PTE lock and
    /// with nothing in between, by <see cref="PteUnmapUnlock"/> of the visit that mapped the table.
    /// A design whose visitors and entries hold the same reference may hand the visitor's
    /// reference to the new entry instead of taking one and dropping the other; it returns true
    /// when it did, and the caller then ends the visit with the unlock alone.
    /// </summary>
    bool TrackPteSetHandOver(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry);

    /// <summary>Called by <c>ptep_get_and_clear</c> and <c>pte_clear</c> with the entry cleared (<c>track_pte_clear</c>).</summary>
    void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry);

    /// <summary>
    /// <c>pte_offset_map</c> (or the seed's <c>pte_tryget_map</c>): gives a visitor the PTE table under a
    /// pmd entry, or <see cref="TableRef.None"/> when there is none to visit (none, huge, or going away).
    /// </summary>
    TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex);

    /// <summary><c>pte_unmap</c>: ends a visit begun by <see cref="PteOffsetMap"/>.</summary>
    void PteUnmap(MmStruct mm, Cpu cpu, TableRef pteTable);

    /// <summary>
    /// <c>handle_pte_fault</c>'s first look: <see cref="PteOffsetMap"/>, read entry
    /// <paramref name="index"/> into <paramref name="orig"/>, and when it is none end the visit
    /// (<see cref="PteUnmap"/>) and return <see cref="TableRef.None"/>. Otherwise the table stays
    /// mapped for the caller, who ends the visit. <paramref name="orig"/> is 0 whenever
    /// <see cref="TableRef.None"/> comes back. A design may do the same with less, as long as no
    /// one can tell the difference.
    /// </summary>
    TableRef PteOffsetMapEntry(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig);

    /// <summary>
    /// <c>pte_offset_map_lock</c> (or <c>pte_tryget_map_lock</c>): maps and takes the split PTE lock.
    /// Returns <see cref="TableRef.None"/> when there is no table to lock; the caller treats that like <c>pmd_none</c>.
    /// </summary>
    TableRef PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex);

    /// <summary><c>pte_unmap_unlock</c>.</summary>
    void PteUnmapUnlock(MmStruct mm, Cpu cpu, TableRef pteTable);

    /// <summary>
    /// Runs at the end of <c>zap_pte_range</c> with the PTE lock still held. Returns true when the
    /// design unhooked the table from its pmd here (pt-reclaim's trylock fast path).
    /// </summary>
    bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable);

    /// <summary>
    /// Runs after a zap cleared entries of one PTE table, outside its lock. This is where a design
    /// may free the now-empty table; <paramref name="unhooked"/> says the fast path already
    /// cleared the pmd, and <paramref name="tlb"/> is the zap's gather.
    /// </summary>
    void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb);

    /// <summary>
    /// Runs after <c>madvise_free_pte_range</c> finished one PTE table, outside its lock;
    /// <paramref name="markedLazyFree"/> says whether any page in it was marked lazy-free.
    /// </summary>
    void AfterMadvFreePteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, bool markedLazyFree);

    /// <summary>
    /// Runs after reclaim's <c>try_to_unmap_one</c> dealt with a lazy-free page through
    /// <c>page_vma_mapped_walk</c>, outside the PTE lock: <paramref name="discarded"/> when the
    /// entry was cleared, false when the page was dirty again and its entry restored.
    /// </summary>
    void AfterLazyFreeUnmap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable, bool discarded);

    /// <summary>
    /// Runs at the end of a <c>madvise</c> call that walked tables (after its gather finished), with
    /// <c>mmap_lock</c> still held for read: where a design finishes work it started asynchronously.
    /// </summary>
    void AfterMadvise(MmStruct mm, Cpu cpu);

    /// <summary>
    /// Whether MADV_DONTNEED also frees the PMD tables its zaps left empty (<c>--free-pmd</c>), and
    /// with which test-only protocol break; null when it does not.
    /// </summary>
    PmdTableFreeing? FreesPmdTables => null;
}

/// <summary>
/// How a design frees empty PMD tables (see <c>MmStruct.FreeEmptyPmdTables</c>): the real protocol
/// when both flags are false.
/// </summary>
/// <param name="SkipRecheckForTesting">Mutation: free on the emptiness seen under <c>mmap_lock</c> for read, without rechecking the 512 entries under the locks.</param>
/// <param name="SkipRcuForTesting">Mutation: free the PMD table right after the TLB flush, without waiting a grace period for lockless walkers.</param>
public sealed record PmdTableFreeing(bool SkipRecheckForTesting = false, bool SkipRcuForTesting = false);

/// <summary>A design that frees empty PTE tables on request (<see cref="Advice.PtReclaim"/>).</summary>
public interface IExplicitTableReclaim
{
    /// <summary>
    /// Frees the PTE table under entry <paramref name="pmdIndex"/> of <paramref name="pmdTable"/> if
    /// the design would free it now, through <paramref name="tlb"/>; <c>mmap_lock</c> is held for read.
    /// Returns whether it was freed.
    /// </summary>
    bool ReclaimPteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, MmuGather tlb);
}

/// <summary>What a zap did to one PTE table.</summary>
/// <param name="PmdTable">The PMD table holding the entry that points to the PTE table.</param>
/// <param name="PmdIndex">The entry's index in that PMD table.</param>
/// <param name="Start">Start of the zapped range within the table's 2 MiB.</param>
/// <param name="End">End of the zapped range.</param>
/// <param name="Reason">Why the zap ran.</param>
/// <param name="AnySkipped">
/// Whether the zap left an entry in place in the range (<c>any_skipped</c>): a guard marker, which
/// only an unmap clears, or a private copy a hole punch (<see cref="ZapReason.Truncate"/>) keeps.
/// Upstream's pt-reclaim then does not free the table.
/// </param>
public readonly record struct ZapInfo(long PmdTable, int PmdIndex, ulong Start, ulong End, ZapReason Reason, bool AnySkipped = false);

/// <summary>Why entries are being zapped.</summary>
public enum ZapReason
{
    /// <summary><c>madvise(MADV_DONTNEED)</c>.</summary>
    DontNeed,
    /// <summary><c>munmap</c> or exit (<c>unmap_vmas</c>); <c>free_pgtables</c> follows.</summary>
    Unmap,
    /// <summary>
    /// <c>unmap_mapping_range</c> for a hole punched in a file (MADV_REMOVE): only page-cache pages
    /// go, private copies and their swap entries stay.
    /// </summary>
    Truncate,
    /// <summary>
    /// <c>zap_page_range_single</c> with no <c>zap_details</c>, as <c>MADV_GUARD_INSTALL</c> clears
    /// the pages in its way: every page and swap entry goes, guard markers stay, and no design
    /// frees a table after it.
    /// </summary>
    NoDetails,
}
