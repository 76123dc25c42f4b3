using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary>
    /// <c>try_to_unmap_one</c> for a swap-backed anonymous page when a swap device exists: a young
    /// entry only loses its young bit; otherwise the entry is cleared and flushed (so nobody can
    /// write the page any more), the page is written to a slot, and a swap entry takes its place.
    /// </summary>
    internal UnmapOutcome TryToUnmapToSwap(Cpu cpu, long pfn, ulong addr)
    {
        var swap = Phys.Swap;
        if (swap is null || !RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        try
        {
            long pmdTable = _dead ? -1 : PmdTableOf(addr);
            if (pmdTable < 0)
            {
                return UnmapOutcome.NotMapped;
            }

            var pt = Design.PteOffsetMapLock(this, cpu, pmdTable, Geometry.Index(addr, 2));
            if (pt.IsNone)
            {
                return UnmapOutcome.NotMapped;
            }

            try
            {
                int index = Geometry.PteIndex(addr);
                ref ulong slot = ref Phys.Table(pt)[index];
                ulong e = Volatile.Read(ref slot);
                if (!Entry.IsPresent(e) || Entry.IsSpecial(e) || Entry.Pfn(e) != pfn)
                {
                    return UnmapOutcome.NotMapped;
                }

                if (Entry.IsYoung(e) && Interlocked.CompareExchange(ref slot, Entry.MkOld(e), e) == e)
                {
                    FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
                    return UnmapOutcome.Referenced;
                }

                ulong old = PtepGetAndClear(cpu, pt, ref slot);
                FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
                long swapSlot = swap.WriteOut(pfn);
                if (swapSlot < 0)
                {
                    SetPteAt(cpu, pt, index, old); // swap is full: keep the page
                    return UnmapOutcome.Busy;
                }

                SetPteAt(cpu, pt, index, Entry.MakeSwap(0, swapSlot));
                Interlocked.Decrement(ref Phys.Desc(pfn).MapCount);
                AddRssAnon(cpu, -1);
                AddSwapEnts(cpu, 1);
                Phys.PutPage(pfn); // the mapping's reference; the isolation reference frees it
                CountPageFreed(cpu, 1);
                return UnmapOutcome.SwappedOut;
            }
            finally
            {
                Design.PteUnmapUnlock(this, cpu, pt);
            }
        }
        finally
        {
            RmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <c>try_to_unmap_one</c> for a lazy-free anonymous page, found through
    /// <c>page_vma_mapped_walk</c> at its rmap address: a young entry only loses its young bit
    /// (<c>folio_referenced</c>); otherwise the entry is cleared and flushed, and the page is
    /// discarded if it is still clean and nobody else holds it, or else mapped back and made
    /// swap-backed again.
    /// </summary>
    internal UnmapOutcome TryToUnmapLazyFree(Cpu cpu, long pfn, ulong addr)
    {
        if (!RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        try
        {
            if (_dead)
            {
                return UnmapOutcome.NotMapped;
            }

            long pmdTable = PmdTableOf(addr);
            if (pmdTable < 0)
            {
                return UnmapOutcome.NotMapped;
            }

            int pmdIndex = Geometry.Index(addr, 2);
            var pt = Design.PteOffsetMapLock(this, cpu, pmdTable, pmdIndex);
            if (pt.IsNone)
            {
                return UnmapOutcome.NotMapped;
            }

            var outcome = UnmapOutcome.NotMapped;
            try
            {
                int index = Geometry.PteIndex(addr);
                ref ulong slot = ref Phys.Table(pt)[index];
                ulong e = Volatile.Read(ref slot);
                if (!Entry.IsPresent(e) || Entry.IsSpecial(e) || Entry.Pfn(e) != pfn)
                {
                    return UnmapOutcome.NotMapped;
                }

                if (Entry.IsYoung(e) && Interlocked.CompareExchange(ref slot, Entry.MkOld(e), e) == e)
                {
                    FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
                    return UnmapOutcome.Referenced;
                }

                ulong old = PtepGetAndClear(cpu, pt, ref slot);
                FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
                ref var d = ref Phys.Desc(pfn);
                if (Entry.IsDirty(old))
                {
                    Interlocked.Or(ref d.Flags, (int)PageFlags.Dirty);
                }

                int refs = Volatile.Read(ref d.RefCount);
                int maps = Volatile.Read(ref d.MapCount);
                if ((d.Flags & (int)(PageFlags.SwapBacked | PageFlags.Dirty)) == 0 && refs == 1 + maps)
                {
                    Interlocked.Decrement(ref d.MapCount);
                    AddRssAnon(cpu, -1);
                    Phys.PutPage(pfn); // the mapping's reference; the isolation reference frees it
                    CountPageFreed(cpu, 1);
                    return outcome = UnmapOutcome.Discarded;
                }

                SetPteAt(cpu, pt, index, old);
                Interlocked.Or(ref d.Flags, (int)PageFlags.SwapBacked);
                return outcome = UnmapOutcome.Redirtied;
            }
            finally
            {
                Design.PteUnmapUnlock(this, cpu, pt);
                if (outcome is UnmapOutcome.Discarded or UnmapOutcome.Redirtied)
                {
                    Design.AfterLazyFreeUnmap(this, cpu, pmdTable, pmdIndex, pt, outcome == UnmapOutcome.Discarded);
                }
            }
        }
        finally
        {
            RmapLock.UpRead(cpu.Id);
        }
    }
}
