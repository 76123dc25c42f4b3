using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/rmap.c try_to_unmap_one for a huge page mapped by the PTEs of one table: a lazy-free one is
// discarded whole (folio_unmap_pte_batch), a swap-backed one written to 512 slots of one swap
// cluster and replaced by 512 swap entries (THP_SWPOUT), neither split.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>try_to_unmap_one</c> of the lazy-free huge page <paramref name="head"/>, which reclaim
    /// isolated, where it is mapped by the 512 entries of one PTE table from
    /// <paramref name="addr"/> (<c>folio_unmap_pte_batch</c>: the whole folio in one batch, so it
    /// is never partially mapped and not queued for a deferred split). The entries are cleared and
    /// flushed, their dirty bits merged; if the folio stayed clean and nobody holds it beyond its
    /// mappings and the isolation, it is discarded whole (512 pages of RssAnon, no split, the PTE
    /// table stays). Otherwise the entries are put back (the merged bits on each, as
    /// <c>set_ptes</c> of the batch's value): a redirtied folio is made swap-backed again, one
    /// held by another reference (GUP) stays lazy-free (<see cref="UnmapOutcome.Busy"/>). Returns
    /// <see cref="UnmapOutcome.NotMapped"/> when the table no longer maps the folio whole there.
    /// </summary>
    internal UnmapOutcome TryToUnmapLazyFreeFolioPtes(Cpu cpu, long head, ulong addr, bool droppable)
    {
        var outcome = UnmapOutcome.NotMapped;
        if ((addr & ~Geometry.PmdMask) != 0 || !RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        var pteTable = TableRef.None;
        long pmdTable = -1;
        try
        {
            pteTable = RmapPteMapLock(cpu, addr, out pmdTable);
            if (pteTable.IsNone || !MapsFolioWhole(pteTable, head))
            {
                return outcome; // not mapped whole by this table: left to a later pass
            }

            // get_and_clear_full_ptes: every entry goes, their dirty and young bits merged.
            var old = new ulong[PhysMemory.HugeFrames];
            ulong merged = 0;
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                old[i] = PtepGetAndClear(cpu, pteTable, i);
                merged |= old[i] & (Entry.Dirty | Entry.Accessed);
            }

            FlushTlbRange(cpu, addr, addr + Geometry.PmdSize);
            ref var d = ref Phys.Desc(head);
            if ((merged & Entry.Dirty) != 0)
            {
                d.SetFlagsAtomic(PageFlags.Dirty); // folio_mark_dirty
            }

            if (((d.Flags & (int)PageFlags.Dirty) == 0 || droppable) && d.RefCount == 1 + PhysMemory.HugeFrames)
            {
                for (int i = 0; i < PhysMemory.HugeFrames; i++)
                {
                    Phys.Desc(head + i).AddMap(-1); // folio_remove_rmap_ptes of the whole batch
                    Phys.PutPage(head); // the mapping's reference; the isolation's keeps the folio for now
                }

                AddRssAnon(cpu, -PhysMemory.HugeFrames);
                CountPageFreed(cpu, PhysMemory.HugeFrames);
                return outcome = UnmapOutcome.Discarded;
            }

            // Redirtied or held: set_ptes of the batch back; a redirtied folio is swap-backed
            // again, a held one stays lazy-free for a later pass.
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                SetPteAt(cpu, pteTable, i, old[i] | merged);
            }

            if ((d.Flags & (int)PageFlags.Dirty) == 0 || droppable)
            {
                return outcome = UnmapOutcome.Busy;
            }

            d.SetFlagsAtomic(PageFlags.SwapBacked);
            return outcome = UnmapOutcome.Redirtied;
        }
        finally
        {
            RmapPteUnmapUnlock(cpu, addr, pmdTable, pteTable, outcome);
        }
    }

    /// <summary>
    /// <c>try_to_unmap_one</c> of the swap-backed huge page <paramref name="head"/>, which reclaim
    /// isolated, mapped by the 512 entries of one PTE table from <paramref name="addr"/>, on a swap
    /// device that gives it one free cluster (<c>folio_alloc_swap</c> of order 9,
    /// <c>swap_writepage</c> of the whole folio): every entry becomes a swap entry for its slot,
    /// 512 pages of RssAnon become VmSwap, and the folio goes once reclaim drops it; nothing is
    /// split, and zero-filled pages are written like the others. The first use of each slot stands
    /// for the swap cache's; the caller drops it (<paramref name="firstSlot"/>) after the walk.
    /// <see cref="UnmapOutcome.Busy"/>, the folio kept, when something else holds a reference to it
    /// or no free cluster is left.
    /// </summary>
    internal UnmapOutcome TryToUnmapSwapFolioPtes(Cpu cpu, long head, ulong addr, out long firstSlot)
    {
        firstSlot = -1;
        var swap = Phys.Swap;
        if (swap is null || (addr & ~Geometry.PmdMask) != 0 || !RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        long pmdTable = -1;
        var pteTable = TableRef.None;
        try
        {
            pteTable = RmapPteMapLock(cpu, addr, out pmdTable);
            if (pteTable.IsNone || !MapsFolioWhole(pteTable, head))
            {
                return UnmapOutcome.NotMapped;
            }

            if (Phys.Desc(head).RefCount != 1 + PhysMemory.HugeFrames || (firstSlot = swap.WriteOutFolio(head)) < 0)
            {
                return UnmapOutcome.Busy;
            }

            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                PtepGetAndClear(cpu, pteTable, i);
            }

            FlushTlbRange(cpu, addr, addr + Geometry.PmdSize);
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                swap.Duplicate(firstSlot + i);
                SetPteAt(cpu, pteTable, i, Entry.MakeSwap(0, firstSlot + i));
                Phys.Desc(head + i).AddMap(-1);
                Phys.PutPage(head); // the mapping's reference; the isolation's keeps the folio for now
            }

            AddSwapEnts(cpu, PhysMemory.HugeFrames);
            AddRssAnon(cpu, -PhysMemory.HugeFrames);
            CountPageFreed(cpu, PhysMemory.HugeFrames);
            return UnmapOutcome.SwappedOut;
        }
        finally
        {
            RmapPteUnmapUnlock(cpu, addr, pmdTable, pteTable, UnmapOutcome.NotMapped);
        }
    }

    /// <summary>Whether the 512 entries of the table map the pages of the folio at <paramref name="head"/> in order. Caller holds the PTE lock.</summary>
    private bool MapsFolioWhole(TableRef pteTable, long head)
    {
        var entries = Phys.Table(pteTable);
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            ulong e = Volatile.Read(ref entries[i]);
            if (!Entry.IsPresent(e) || Entry.IsSpecial(e) || Entry.Pfn(e) != head + i)
            {
                return false;
            }
        }

        return true;
    }
}
