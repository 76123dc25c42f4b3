using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Reclaim;

/// <summary>
/// A design that keeps, per PTE table, a count of its zero-page entries next to its count of
/// non-none entries, so the invariant checks can compare both with the entries.
/// </summary>
public interface IZeroPageCounted
{
    /// <summary>The table's count of entries that map the shared zero page.</summary>
    long ZeroPageCount(MmStruct mm, long pteTable);
}

/// <summary>
/// The <c>occupancy</c> design (Qi Zheng's August 2022 RFC "Try to free empty and zero user PTE
/// page table pages"): a plain, non-atomic count per PTE table of its non-none entries and of its
/// zero-page entries, changed only under the table's split PTE lock by the set and clear
/// primitives. No reference is taken by visitors: walkers use upstream's protocol
/// (<see cref="UpstreamWalkerReclaim"/>), so the fault path pays nothing but the count.
/// </summary>
/// <remarks>
/// Any MADV_DONTNEED or munmap zap, however small, after which every remaining entry of the table
/// maps the zero page (or none remains) frees the table in O(1): under the PTE lock it reads the
/// counts, clears the remaining zero-page entries, takes the pmd lock without waiting and clears
/// the pmd (or, when the trylock fails, retakes the pmd lock and the PTE lock in order and rechecks
/// the counts), and hands the table to the zap's gather, which frees it after the TLB flush of its
/// 2 MiB and a grace period. A later read fault maps the zero page again in a fresh table. As the
/// RFC proposed, memory reclaim frees too: when it discards the last lazy-free (MADV_FREE) page of
/// a table, the same O(1) test under the locks frees the table.
/// </remarks>
public sealed class OccupancyReclaim : UpstreamWalkerReclaim, IRefcountedTables, IZeroPageCounted, IExplicitTableReclaim
{
    // One slot per CPU: the zap on that CPU found the table freeable under its PTE lock but could
    // not take the pmd lock there, so the slow path must run after the unlock.
    private readonly bool[] _slowPending = new bool[MaxCpus];
    private long _fastPath;
    private long _slowPath;
    private long _slowPathAborted;
    private long _reclaimFrees;

    private const int MaxCpus = 64;

    /// <inheritdoc/>
    public override string Name => "occupancy";

    /// <summary>Tables unhooked under the PTE lock (the pmd trylock succeeded).</summary>
    public long FastPathFrees => Volatile.Read(ref _fastPath);

    /// <summary>Tables freed after retaking both locks in order.</summary>
    public long SlowPathFrees => Volatile.Read(ref _slowPath);

    /// <summary>Slow paths that found the table repopulated meanwhile and kept it.</summary>
    public long SlowPathAborted => Volatile.Read(ref _slowPathAborted);

    /// <summary>Tables freed by memory reclaim after it discarded their last lazy-free page.</summary>
    public long ReclaimFrees => Volatile.Read(ref _reclaimFrees);

    /// <summary>Test-only mutation: one clear path forgets to decrement the count.</summary>
    internal bool SkipTrackClearForTesting { get; set; }

    /// <summary>Test-only mutation: the slow path frees on the counts it read before dropping the PTE lock.</summary>
    internal bool SkipCountRecheckForTesting { get; set; }

    /// <summary><c>pgtable_pte_page_ctor</c>: both counts start at zero.</summary>
    public override void PteTableCtor(MmStruct mm, Cpu cpu, long pteTable) => mm.Phys.SetTableState(pteTable, new Occupancy());

    /// <inheritdoc/>
    public long? ExactCount(MmStruct mm, long pteTable) => Of(mm, pteTable).Mapped;

    /// <inheritdoc/>
    public long ZeroPageCount(MmStruct mm, long pteTable) => Of(mm, pteTable).ZeroPage;

    /// <inheritdoc/>
    public override bool TracksEntries => true;

    /// <summary>Counts the entry's none/non-none and zero-page transitions, under the PTE lock.</summary>
    public override void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry)
    {
        mm.AssertPtlHeld(cpu, pteTable.Pfn);
        var o = Of(mm, pteTable.Pfn);
        o.Mapped += (Entry.IsNone(newEntry) ? 0 : 1) - (Entry.IsNone(oldEntry) ? 0 : 1);
        o.ZeroPage += (IsZeroPage(newEntry) ? 1 : 0) - (IsZeroPage(oldEntry) ? 1 : 0);
    }

    /// <summary>Uncounts a cleared entry, under the PTE lock.</summary>
    public override void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry)
    {
        mm.AssertPtlHeld(cpu, pteTable.Pfn);
        if (SkipTrackClearForTesting || Entry.IsNone(oldEntry))
        {
            return;
        }

        var o = Of(mm, pteTable.Pfn);
        o.Mapped--;
        if (IsZeroPage(oldEntry))
        {
            o.ZeroPage--;
        }
    }

    /// <summary>
    /// The end of <c>zap_pte_range</c>, PTE lock held: if only zero-page entries (or none) remain,
    /// clear them and try the pmd lock to unhook the table at once.
    /// </summary>
    public override bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable)
    {
        mm.AssertPtlHeld(cpu, pteTable.Pfn);
        if (!Freeable(mm, pteTable.Pfn))
        {
            return false;
        }

        if (!mm.PmdTryLock(cpu, zap.PmdTable))
        {
            MarkSlow(cpu, true);
            return false;
        }

        ClearZeroPageEntries(mm, cpu, pteTable);
        mm.PmdClear(zap.PmdTable, zap.PmdIndex);
        mm.PmdUnlock(cpu, zap.PmdTable);
        Interlocked.Increment(ref _fastPath);
        return true;
    }

    /// <summary>
    /// After the PTE lock is dropped: free the unhooked table through the gather, or, when the
    /// trylock failed, take the pmd lock and then the PTE lock and recheck the counts.
    /// </summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb)
    {
        if (unhooked)
        {
            mm.PteFreeTlb(tlb, pteTable.Pfn, zap.Start);
            return;
        }

        if (!TakeSlow(cpu))
        {
            return;
        }

        if (FreeLocked(mm, cpu, zap.PmdTable, zap.PmdIndex, tlb, SkipCountRecheckForTesting) is not { } freed)
        {
            return;
        }

        if (freed)
        {
            Interlocked.Increment(ref _slowPath);
        }
        else
        {
            Interlocked.Increment(ref _slowPathAborted);
        }
    }

    /// <summary>
    /// MADV_PT_RECLAIM: the same O(1) test as after a zap, under the pmd lock and the PTE lock, for a
    /// table nobody zapped (a zero-page-only table, or one emptied by a zap that lost a race).
    /// </summary>
    public bool ReclaimPteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, MmuGather tlb) =>
        FreeLocked(mm, cpu, pmdTable, pmdIndex, tlb, trustStaleCounts: false) == true;

    /// <summary>
    /// Takes the pmd lock, then the PTE lock of the table there now, and unhooks it if only zero-page
    /// entries (or none) remain, or at once when <paramref name="trustStaleCounts"/> (the mutation);
    /// the gather frees it. Null when there was no table.
    /// </summary>
    private static bool? FreeLocked(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, MmuGather tlb, bool trustStaleCounts)
    {
        mm.PmdLock(cpu, pmdTable);
        ulong pmd = Volatile.Read(ref mm.Phys.Table(pmdTable)[pmdIndex]);
        if (Entry.IsNone(pmd) || Entry.IsHuge(pmd))
        {
            mm.PmdUnlock(cpu, pmdTable);
            return null;
        }

        // The pmd lock keeps the table hooked, and so alive, while we hold it.
        var now = mm.Phys.Ref(Entry.Pfn(pmd));
        mm.PtlLock(cpu, now.Pfn);
        bool free = trustStaleCounts || Freeable(mm, now.Pfn);
        if (free)
        {
            ClearZeroPageEntries(mm, cpu, now);
            mm.PmdClear(pmdTable, pmdIndex);
        }

        mm.PtlUnlock(cpu, now.Pfn);
        mm.PmdUnlock(cpu, pmdTable);
        if (free)
        {
            mm.PteFreeTlb(tlb, now.Pfn, mm.PmdBase(pmdTable, pmdIndex));
        }

        return free;
    }

    /// <summary>
    /// The RFC's reclaim path: after memory reclaim discarded a lazy-free page, free its table if
    /// only zero-page entries (or none) remain. Reclaim holds the rmap lock, not <c>mmap_lock</c>,
    /// which the walker protocol does not need: the pmd is cleared under the pmd and PTE locks,
    /// every TLB flushed for the 2 MiB, and the table freed after a grace period.
    /// </summary>
    public override void AfterLazyFreeUnmap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable, bool discarded)
    {
        if (!discarded)
        {
            return;
        }

        mm.PmdLock(cpu, pmdTable);
        var now = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (now.IsNone)
        {
            mm.PmdUnlock(cpu, pmdTable);
            return;
        }

        mm.PtlLock(cpu, now.Pfn);
        bool free = Freeable(mm, now.Pfn);
        ulong start = mm.PmdBase(pmdTable, pmdIndex);
        if (free)
        {
            ClearZeroPageEntries(mm, cpu, now);
            mm.PmdClear(pmdTable, pmdIndex);
        }

        mm.PtlUnlock(cpu, now.Pfn);
        PteUnmap(mm, cpu, now);
        if (!free)
        {
            mm.PmdUnlock(cpu, pmdTable);
            return;
        }

        if (!mm.SkipTableFlushForTesting)
        {
            mm.FlushTlbRange(cpu, start, start + Geometry.PmdSize);
        }

        mm.PmdUnlock(cpu, pmdTable);
        Interlocked.Increment(ref _reclaimFrees);
        mm.DecTables(1);
        var phys = mm.Phys;
        mm.Rcu.CallRcu(() =>
        {
            PteTableDtor(mm, now.Pfn);
            phys.FreeTable(now.Pfn);
        });
    }

    private static bool IsZeroPage(ulong e) => Entry.IsPresent(e) && Entry.IsSpecial(e);

    /// <summary>Every non-none entry maps the zero page: O(1) from the counts, PTE lock held.</summary>
    private static bool Freeable(MmStruct mm, long pteTable)
    {
        var o = Of(mm, pteTable);
        return o.Mapped == o.ZeroPage;
    }

    /// <summary>
    /// Clears the zero-page entries of a table about to be unhooked, PTE lock held. They hold no
    /// page and no RSS; the gather's flush of the table's 2 MiB drops their TLB entries before the
    /// table is freed.
    /// </summary>
    private static void ClearZeroPageEntries(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        if (Of(mm, pteTable.Pfn).ZeroPage == 0)
        {
            return;
        }

        var entries = mm.Phys.Table(pteTable);
        for (int i = 0; i < entries.Length; i++)
        {
            if (Volatile.Read(ref entries[i]) != 0)
            {
                mm.PtepGetAndClear(cpu, pteTable, i);
            }
        }
    }

    private void MarkSlow(Cpu cpu, bool value)
    {
        if (cpu.Id < MaxCpus)
        {
            _slowPending[cpu.Id] = value;
        }
    }

    // A CPU beyond the slots always takes the slow path, which rechecks everything under the locks.
    private bool TakeSlow(Cpu cpu)
    {
        if (cpu.Id >= MaxCpus)
        {
            return true;
        }

        bool pending = _slowPending[cpu.Id];
        _slowPending[cpu.Id] = false;
        return pending;
    }

    // The counts live in the table's descriptor, as the RFC keeps them in the page-table page's struct page.
    private static Occupancy Of(MmStruct mm, long pteTable) =>
        mm.Phys.TableState(pteTable) as Occupancy
        ?? throw new UseAfterFreeException($"PTE table {pteTable:x} has no occupancy count: it was freed", Environment.StackTrace, null);

    /// <summary>The RFC's two counters: non-none entries, and those of them that map the zero page.</summary>
    private sealed class Occupancy
    {
        public int Mapped;
        public int ZeroPage;

        public override string ToString() => $"mapped {Mapped}, zero page {ZeroPage}";
    }
}
