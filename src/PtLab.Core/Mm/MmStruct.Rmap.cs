using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary>
    /// <c>folio_referenced_one</c> for the mapping of frame <paramref name="pfn"/> at
    /// <paramref name="addr"/>: <c>page_vma_mapped_walk</c> maps and locks the PTE table like every
    /// visitor and checks the entry still maps the page; a young entry loses its young bit (and its
    /// TLB entry). Returns whether it was young. A busy address space counts as referenced, as the
    /// kernel's try-lock walk does.
    /// </summary>
    internal bool FolioReferencedOne(Cpu cpu, long pfn, ulong addr)
    {
        if (!RmapLock.TryDownRead(cpu.Id))
        {
            return true;
        }

        var pt = TableRef.None;
        try
        {
            long pmdTable = _dead ? -1 : PmdTableOf(addr);
            pt = pmdTable < 0 ? TableRef.None : PteOffsetMapLock(cpu, pmdTable, Geometry.Index(addr, 2));
            if (pt.IsNone)
            {
                return false;
            }

            ref ulong slot = ref Phys.Table(pt)[Geometry.PteIndex(addr)];
            ulong e = Volatile.Read(ref slot);
            if (!Entry.IsPresent(e) || Entry.IsSpecial(e) || Entry.Pfn(e) != pfn || !Entry.IsYoung(e))
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref slot, Entry.MkOld(e), e) != e)
            {
                return true; // changed under us (hardware set a bit): it was in use
            }

            FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
            return true;
        }
        finally
        {
            if (!pt.IsNone)
            {
                PteUnmapUnlock(cpu, pt);
            }

            RmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <c>try_to_unmap_one</c> for the mapping of frame <paramref name="pfn"/> at
    /// <paramref name="addr"/>, reached through the page's reverse map: <c>page_vma_mapped_walk</c>
    /// maps and locks the PTE table like every visitor and checks the entry still maps the page.
    /// The entry is cleared and flushed, so nobody can write the page through it any more, and then:
    /// a page-cache page just loses the mapping (its dirty bit moves to the page); a lazy-free page
    /// is discarded if it is still clean and nobody else holds it, or mapped back and made
    /// swap-backed again; a swap-backed page gets a swap entry in its place: the first mapping
    /// unmapped writes the page to a slot (<paramref name="swapSlot"/>), whose first use stands for
    /// the swap cache's and is the caller's to drop after the walk; every mapping's entry takes one
    /// more use (<c>swap_duplicate</c>). With swap full or absent the page is mapped back.
    /// </summary>
    internal UnmapOutcome TryToUnmapOne(Cpu cpu, long pfn, ulong addr, ref long swapSlot, bool droppable)
    {
        int flags = Phys.Desc(pfn).Flags;
        bool anon = (flags & (int)PageFlags.Anon) != 0;
        bool lazyFree = anon && (flags & (int)PageFlags.SwapBacked) == 0;
        var swap = Phys.Swap;
        if ((anon && !lazyFree && swap is null) || !RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        long pmdTable = -1;
        var pteTable = TableRef.None;
        var outcome = UnmapOutcome.NotMapped;
        try
        {
            pteTable = RmapPteMapLock(cpu, addr, out pmdTable);
            if (pteTable.IsNone)
            {
                return outcome;
            }

            int index = Geometry.PteIndex(addr);
            ref ulong slot = ref Phys.Table(pteTable)[index];
            ulong e = Volatile.Read(ref slot);
            if (!Entry.IsPresent(e) || Entry.IsSpecial(e) || Entry.Pfn(e) != pfn)
            {
                return outcome;
            }

            ulong old = PtepGetAndClear(cpu, pteTable, index);
            FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
            ref var d = ref Phys.Desc(pfn);
            if (Entry.IsDirty(old) && (!anon || lazyFree))
            {
                d.SetFlagsAtomic(PageFlags.Dirty);
            }

            if (!anon)
            {
                UnmapPage(cpu, pfn);
                return outcome = UnmapOutcome.Unmapped;
            }

            if (lazyFree)
            {
                // Discard only if clean and held by nobody but its mappings and our isolation. A
                // redirtied page is mapped back and swap-backed again; one held by another
                // reference (GUP) is mapped back as it was, still lazy-free, for a later pass. A
                // droppable VMA's page goes written or not, and is never made swap-backed.
                if ((d.Flags & (int)PageFlags.Dirty) != 0 && !droppable)
                {
                    SetPteAt(cpu, pteTable, index, old);
                    d.SetFlagsAtomic(PageFlags.SwapBacked);
                    return outcome = UnmapOutcome.Redirtied;
                }

                if (d.RefCount != 1 + d.MapCount)
                {
                    SetPteAt(cpu, pteTable, index, old);
                    return outcome = UnmapOutcome.Busy;
                }

                UnmapPage(cpu, pfn);
                return outcome = UnmapOutcome.Discarded;
            }

            // The content is final here: this entry is gone, and any other left is read-only
            // (fork write-protects both; reuse needs the page's only reference, and reclaim holds one).
            if (swapSlot < 0 && (swapSlot = swap!.WriteOut(pfn)) < 0)
            {
                SetPteAt(cpu, pteTable, index, old); // swap is full: keep the page
                return outcome = UnmapOutcome.Busy;
            }

            swap!.Duplicate(swapSlot);

            SetPteAt(cpu, pteTable, index, Entry.MakeSwap(0, swapSlot));
            AddSwapEnts(cpu, 1);
            UnmapPage(cpu, pfn);
            return outcome = UnmapOutcome.SwappedOut;
        }
        finally
        {
            RmapPteUnmapUnlock(cpu, addr, pmdTable, pteTable, lazyFree ? outcome : UnmapOutcome.NotMapped);
        }
    }

    /// <summary>
    /// <c>page_vma_mapped_walk</c>'s map and lock of the PTE table holding <paramref name="addr"/>,
    /// for a reverse-map visitor holding the rmap lock (none when the address space is gone or no
    /// table is there).
    /// </summary>
    private TableRef RmapPteMapLock(Cpu cpu, ulong addr, out long pmdTable)
    {
        pmdTable = _dead ? -1 : PmdTableOf(addr);
        return pmdTable < 0 ? TableRef.None : PteOffsetMapLock(cpu, pmdTable, Geometry.Index(addr, 2));
    }

    /// <summary>
    /// The end of a reverse-map visit: unlocks the table, tells the design what became of a lazy-free
    /// mapping (<paramref name="lazyFreeOutcome"/>, discarded or redirtied), and drops the rmap lock.
    /// </summary>
    private void RmapPteUnmapUnlock(Cpu cpu, ulong addr, long pmdTable, TableRef pteTable, UnmapOutcome lazyFreeOutcome)
    {
        if (!pteTable.IsNone)
        {
            PteUnmapUnlock(cpu, pteTable);
            if (lazyFreeOutcome is UnmapOutcome.Discarded or UnmapOutcome.Redirtied)
            {
                Design.AfterLazyFreeUnmap(this, cpu, pmdTable, Geometry.Index(addr, 2), pteTable, lazyFreeOutcome == UnmapOutcome.Discarded);
            }
        }

        RmapLock.UpRead(cpu.Id);
    }

    /// <summary>The page's entry is gone: drop its mapping, its RSS and the mapping's reference.</summary>
    private void UnmapPage(Cpu cpu, long pfn)
    {
        ref var d = ref Phys.Desc(pfn);
        int left = d.AddMap(-1);
        AddRss(cpu, CounterOf(pfn), -1);
        Phys.PutPage(pfn); // the isolation reference keeps the page until reclaim drops it
        if (left == 0 && (d.Flags & (int)PageFlags.Anon) != 0)
        {
            CountPageFreed(cpu, 1);
        }
    }
}
