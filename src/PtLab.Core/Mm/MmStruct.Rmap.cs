using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary>
    /// <c>try_to_unmap_one</c>, reached through the page's reverse map (its owner and address):
    /// <c>page_vma_mapped_walk</c> maps and locks the PTE table like every visitor and checks the
    /// entry still maps the page. A young entry only loses its young bit (<c>folio_referenced</c>).
    /// Otherwise the entry is cleared and flushed, so nobody can write the page any more, and then:
    /// a lazy-free page is discarded if it is still clean and nobody else holds it, or mapped back
    /// and made swap-backed again; a swap-backed page is written to a swap slot and a swap entry
    /// takes its place (or it is mapped back when swap is full or absent).
    /// </summary>
    internal UnmapOutcome TryToUnmapOne(Cpu cpu, long pfn, ulong addr)
    {
        bool lazyFree = (Phys.Desc(pfn).Flags & (int)PageFlags.SwapBacked) == 0;
        var swap = Phys.Swap;
        if ((!lazyFree && swap is null) || !RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        long pmdTable = -1;
        int pmdIndex = Geometry.Index(addr, 2);
        var pteTable = TableRef.None;
        var outcome = UnmapOutcome.NotMapped;
        try
        {
            pmdTable = _dead ? -1 : PmdTableOf(addr);
            pteTable = pmdTable < 0 ? TableRef.None : Design.PteOffsetMapLock(this, cpu, pmdTable, pmdIndex);
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

            if (Entry.IsYoung(e) && Interlocked.CompareExchange(ref slot, Entry.MkOld(e), e) == e)
            {
                FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
                return outcome = UnmapOutcome.Referenced;
            }

            ulong old = PtepGetAndClear(cpu, pteTable, ref slot);
            FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
            ref var d = ref Phys.Desc(pfn);
            if (lazyFree)
            {
                if (Entry.IsDirty(old))
                {
                    Interlocked.Or(ref d.Flags, (int)PageFlags.Dirty);
                }

                // Discard only if clean and held by nobody but its mappings and our isolation.
                if ((d.Flags & (int)PageFlags.Dirty) == 0 && Volatile.Read(ref d.RefCount) == 1 + Volatile.Read(ref d.MapCount))
                {
                    UnmapPage(cpu, pfn);
                    return outcome = UnmapOutcome.Discarded;
                }

                SetPteAt(cpu, pteTable, index, old);
                Interlocked.Or(ref d.Flags, (int)PageFlags.SwapBacked);
                return outcome = UnmapOutcome.Redirtied;
            }

            long swapSlot = swap!.WriteOut(pfn);
            if (swapSlot < 0)
            {
                SetPteAt(cpu, pteTable, index, old); // swap is full: keep the page
                return outcome = UnmapOutcome.Busy;
            }

            SetPteAt(cpu, pteTable, index, Entry.MakeSwap(0, swapSlot));
            AddSwapEnts(cpu, 1);
            UnmapPage(cpu, pfn);
            return outcome = UnmapOutcome.SwappedOut;
        }
        finally
        {
            if (!pteTable.IsNone)
            {
                Design.PteUnmapUnlock(this, cpu, pteTable);
                if (lazyFree && outcome is UnmapOutcome.Discarded or UnmapOutcome.Redirtied)
                {
                    Design.AfterLazyFreeUnmap(this, cpu, pmdTable, pmdIndex, pteTable, outcome == UnmapOutcome.Discarded);
                }
            }

            RmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>The page's entry is gone: drop its mapping, its RSS and the mapping's reference.</summary>
    private void UnmapPage(Cpu cpu, long pfn)
    {
        Interlocked.Decrement(ref Phys.Desc(pfn).MapCount);
        AddRssAnon(cpu, -1);
        Phys.PutPage(pfn); // the isolation reference keeps the page until reclaim drops it
        CountPageFreed(cpu, 1);
    }
}
