using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/huge_memory.c: split_folio() of an anonymous PMD-order folio (split_huge_page_to_list_to_order
// to order 0), which MADV_FREE, MADV_COLD and MADV_PAGEOUT use on a huge page they cover only in
// part, and reclaim on one it cannot swap out whole.
public sealed partial class MmStruct
{
    private long _thpSplitPage;

    /// <summary>
    /// <c>split_folio</c> of the anonymous huge page holding <paramref name="pfn"/>, which this
    /// address space maps at <paramref name="va"/>, by a PMD leaf or by PTEs of the table there. As the kernel: <c>can_split_folio</c> (no reference beyond its mappings), then
    /// <c>unmap_folio</c> (a PMD leaf is split into its deposited table first, so VmPTE does not
    /// change), the folio becomes 512 pages, and <c>remap_page</c> with
    /// <c>RMP_USE_SHARED_ZEROPAGE</c> maps each zero-filled page that is not mlocked the shared zero
    /// page instead (its RssAnon goes); pages nothing maps are freed. Returns false, nothing split,
    /// when another holds it (isolated from its LRU list, as the folio lock would refuse), when it
    /// is pinned or mapped elsewhere, or when some of its mapped pages lie outside that PTE table
    /// (moved by mremap to an address of another alignment, or by MREMAP_DONTUNMAP: the kernel
    /// finds them by the reverse map; the model, which would need a second PTE lock, does not
    /// split those).
    /// </summary>
    /// <remarks>
    /// Race-freedom: the folio is isolated by this call (the stand-in for <c>folio_trylock</c>:
    /// reclaim, collapse and other splitters only act on folios they isolated); its mappings are
    /// counted and its refcount frozen at "mappings + ours" under the PTE lock of the one table
    /// that maps it, so no fault, zap or rmap walk of that table runs meanwhile, and a speculative
    /// <c>folio_try_get</c> (GUP-fast) either came first (the freeze fails and nothing is split) or
    /// fails on the frozen count until the pages are whole again. Called under <c>mmap_lock</c>
    /// (read) with no PTE or PMD lock held.
    /// </remarks>
    internal bool SplitFolio(Cpu cpu, Vma vma, long pfn, ulong va)
    {
        MmapLock.AssertHeld(cpu.Id);
        long head = Phys.CompoundHead(pfn);
        if (head == Phys.HugeZeroPfn || !Phys.Desc(head).Has(PageFlags.Head) || !IsAnonPage(head))
        {
            return false;
        }

        if (!Phys.Lru.Isolate(head))
        {
            return false; // folio_trylock failed: someone else works on it
        }

        if (SplitIsolatedFolio(cpu, vma, head, va - ((ulong)(pfn - head) << PhysMemory.PageShift), va & Geometry.PmdMask))
        {
            return true;
        }

        Phys.Lru.Add(head, LruListOf(head)); // folio_putback_lru
        Phys.PutPage(head);
        return false;
    }

    /// <summary>The LRU list a page of the given flags belongs on (<c>folio_lru_list</c>).</summary>
    private LruList LruListOf(long pfn)
    {
        ref var d = ref Phys.Desc(pfn);
        return d.Has(PageFlags.Mlocked) ? LruList.Unevictable : d.Has(PageFlags.SwapBacked) ? LruList.Anon : LruList.File;
    }

    /// <summary>
    /// The split proper, of a folio this CPU isolated, whose first page would be at
    /// <paramref name="haddr"/> and whose mappings must all lie in the PTE table (or PMD leaf)
    /// that covers <paramref name="tableBase"/>.
    /// </summary>
    private bool SplitIsolatedFolio(Cpu cpu, Vma vma, long head, ulong haddr, ulong tableBase)
    {
        long pmdTable = PmdTableOf(tableBase);
        if (pmdTable < 0)
        {
            return false;
        }

        int pmdIndex = Geometry.Index(tableBase, 2);
        if (haddr == tableBase && PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong pmd))
        {
            // can_split_folio before unmap_folio: this leaf is its only mapping and the only
            // references are the mapping's and the isolation's.
            bool ours = Entry.Pfn(pmd) == head && Volatile.Read(ref Phys.EntireMapCount(head)) == 1 && Phys.Desc(head).RefCount == 2;
            if (ours)
            {
                SplitHugePmdLocked(cpu, vma, pmdTable, pmdIndex, haddr, pmd); // TTU_SPLIT_HUGE_PMD
            }

            PmdUnlock(cpu, pmdTable);
            if (!ours)
            {
                return false;
            }
        }

        var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        if (pteTable.IsNone)
        {
            return false;
        }

        long[] pages = new long[PhysMemory.HugeFrames];
        try
        {
            var entries = Phys.Table(pteTable);
            int mapped = 0;
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                // An mremap may have moved the folio to an address of another alignment: only
                // the part in this table can be seen under its lock.
                ulong vi = haddr + ((ulong)i << PhysMemory.PageShift);
                ulong e = (vi & Geometry.PmdMask) == tableBase ? Volatile.Read(ref entries[Geometry.PteIndex(vi)]) : 0;
                bool here = (Entry.IsPresent(e) || Entry.IsProtNone(e)) && !Entry.IsSpecial(e) && Entry.Pfn(e) == head + i;
                if (Phys.Desc(head + i).MapCount != (here ? 1 : 0))
                {
                    return false; // mapped twice, or somewhere else too
                }

                mapped += here ? 1 : 0;
            }

            if (Volatile.Read(ref Phys.EntireMapCount(head)) != 0 || !Phys.Desc(head).TryFreezeRef(mapped + 1))
            {
                return false; // a pin or a racing reference: -EAGAIN
            }

            Phys.SplitHugeFolioFrames(head);
            long zeroed = 0;
            bool locked = (vma.Flags & VmFlags.Locked) != 0;
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                long pfn = head + i;
                pages[i] = pfn;
                ref var d = ref Phys.Desc(pfn);
                if (d.MapCount == 0)
                {
                    continue; // freed by the last put below
                }

                if (!locked && !d.Has(PageFlags.Mlocked) && Phys.Content.Token(pfn) == 0)
                {
                    // try_to_map_unused_to_zeropage: a zero-filled page is not kept.
                    int index = Geometry.PteIndex(haddr + ((ulong)i << PhysMemory.PageShift));
                    ulong old = PtepGetAndClear(cpu, pteTable, index);
                    ulong zero = Entry.MakeZeroPagePte(Phys.ZeroPfn);
                    if ((old & Entry.NoExecute) == 0)
                    {
                        zero &= ~Entry.NoExecute;
                    }

                    SetPteAt(cpu, pteTable, index, Entry.IsProtNone(old) ? (zero & ~Entry.Present) | Entry.ProtNone : zero);
                    d.AddMap(-1);
                    Phys.PutPage(pfn); // the mapping's reference; the split's goes below
                    zeroed++;
                    continue;
                }

                Phys.Lru.Add(pfn, LruListOf(pfn)); // lru_add_split_folio
            }

            if (zeroed > 0)
            {
                AddRssAnon(cpu, -zeroed);
                FlushTlbRange(cpu, tableBase, tableBase + Geometry.PmdSize);
            }

            Interlocked.Increment(ref _thpSplitPage);
        }
        finally
        {
            PteUnmapUnlock(cpu, pteTable);
        }

        // The split's reference on every page (the head's is the isolation's): what nothing maps goes.
        CountPageFreed(cpu, Phys.PutPages(pages));
        return true;
    }

    /// <summary>
    /// The PTE walks' <c>split_folio</c> of the huge page that maps <paramref name="pfn"/> at
    /// <paramref name="va"/>: drops the PTE lock, splits, takes it again and returns the table
    /// (none if it went meanwhile). On success <paramref name="nr"/> becomes 0, so that the walk
    /// looks at the same entry again, now a 4 KiB page; on failure it skips the batch.
    /// </summary>
    private TableRef SplitFolioUnderPte(Cpu cpu, Vma vma, TableRef pteTable, long pmdTable, int pmdIndex, long pfn, ulong va, ref int nr)
    {
        PteUnmapUnlock(cpu, pteTable);
        if (SplitFolio(cpu, vma, pfn, va))
        {
            nr = 0;
        }

        return PteOffsetMapLock(cpu, pmdTable, pmdIndex);
    }

    /// <summary>
    /// <c>folio_pte_batch</c> as madvise uses it: how many entries from <paramref name="index"/>
    /// up to <paramref name="endIndex"/> map consecutive pages of the huge page that the entry at
    /// <paramref name="index"/> maps. Caller holds the PTE lock.
    /// </summary>
    private int FolioPteBatch(TableEntries entries, int index, int endIndex, long pfn)
    {
        long head = Phys.CompoundHead(pfn);
        int n = 1;
        while (index + n < endIndex && pfn + n < head + PhysMemory.HugeFrames)
        {
            ulong e = Volatile.Read(ref entries[index + n]);
            if (!Entry.IsPresent(e) || Entry.Pfn(e) != pfn + n)
            {
                break;
            }

            n++;
        }

        return n;
    }

    /// <summary>
    /// Whether some page of the huge page holding <paramref name="pfn"/> may be mapped by more
    /// than one entry (<c>folio_maybe_mapped_shared</c>): mapped by more than one PMD, or a page
    /// mapped more than once.
    /// </summary>
    private bool FolioMaybeMappedShared(long pfn)
    {
        long head = Phys.CompoundHead(pfn);
        if (Volatile.Read(ref Phys.EntireMapCount(head)) > 1)
        {
            return true;
        }

        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            if (Phys.Desc(head + i).MapCount > 1)
            {
                return true;
            }
        }

        return false;
    }
}
