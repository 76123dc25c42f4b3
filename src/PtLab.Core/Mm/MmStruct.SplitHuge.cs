using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

// mm/huge_memory.c: split_folio() of an anonymous PMD-order folio (split_huge_page_to_list_to_order
// to order 0), which MADV_FREE, MADV_COLD and MADV_PAGEOUT use on a huge page they cover only in
// part, and reclaim on one it cannot swap out whole.
public sealed partial class MmStruct
{
    private long _thpSplitPage;

    /// <summary>
    /// <c>split_folio</c> of the anonymous huge page holding <paramref name="pfn"/>, which this
    /// address space maps at <paramref name="va"/>, by a PMD leaf or by PTEs. As the kernel:
    /// <c>can_split_folio</c> (no reference beyond its mappings), then <c>unmap_folio</c> (a PMD
    /// leaf is split into its deposited table first, so VmPTE does not change), the folio becomes
    /// 512 pages, and <c>remap_page</c> with <c>RMP_USE_SHARED_ZEROPAGE</c> maps each zero-filled
    /// page that is not mlocked the shared zero page instead (its RssAnon goes); pages nothing maps
    /// are freed. The pages are found through the reverse map, as the kernel finds them: after an
    /// mremap to an address of another 2 MiB alignment they lie in two PTE tables, after moves of
    /// parts of the range in several, each in the VMA of this address space whose page offset
    /// covers their index. Returns false, nothing split, when another holds it (isolated from its
    /// LRU list, as the folio lock would refuse), when it is pinned, when another address space
    /// maps a page of it (the kernel splits those too; the model leaves it whole). Its pages may lie
    /// in any number of tables: a folio's 512 pages span two where they lie together, up to one
    /// table each where mremaps moved them apart one by one.
    /// </summary>
    /// <remarks>
    /// Race-freedom: the folio is isolated by this call (the stand-in for <c>folio_trylock</c>:
    /// reclaim, collapse and other splitters only act on folios they isolated). Where the kernel
    /// replaces every mapping by a migration entry, one table at a time, the model holds the PTE
    /// locks of every table that may map the folio at once, taken in ascending address order
    /// (nested subclasses, as <c>spin_lock_nested</c>), counts the mappings and freezes the
    /// refcount at "mappings + ours" under them, so no fault, zap or rmap walk of those tables runs
    /// meanwhile, and a speculative <c>folio_try_get</c> (GUP-fast) either came first (the freeze
    /// fails and nothing is split) or fails on the frozen count until the pages are whole again.
    /// The order cannot deadlock: this is called under <c>mmap_lock</c> (read) with no PTE or PMD
    /// lock held; the only other holders of two PTE locks of one address space are mremap's
    /// <c>move_ptes</c> and fork's copy, which hold its <c>mmap_lock</c> for write, and other
    /// splitters, which take theirs in the same address order; nothing holding a PTE lock waits on
    /// a pmd lock (pt-reclaim only tries it), and the tables' addresses cannot change under
    /// <c>mmap_lock</c>. A table unhooked between its map and its lock (pt-reclaim) is seen by the
    /// pmd recheck and ends the split with nothing done, as a failed freeze would.
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

        if (SplitIsolatedFolio(cpu, vma, head, va - ((ulong)(pfn - head) << PhysMemory.PageShift)))
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
    /// <paramref name="haddr"/> in <paramref name="vma"/>, where the caller met it (and where a PMD leaf may map it).
    /// </summary>
    private bool SplitIsolatedFolio(Cpu cpu, Vma vma, long head, ulong haddr)
    {
        if ((haddr & ~Geometry.PmdMask) == 0 && PmdTableOf(haddr) is long leafTable and >= 0)
        {
            int pmdIndex = Geometry.Index(haddr, 2);
            if (PmdTransHugeLock(cpu, leafTable, pmdIndex, out ulong pmd))
            {
                // can_split_folio before unmap_folio: this leaf is its only mapping and the only
                // references are the mapping's and the isolation's.
                bool ours = Entry.Pfn(pmd) == head && Volatile.Read(ref Phys.EntireMapCount(head)) == 1 && Phys.Desc(head).RefCount == 2;
                if (ours)
                {
                    SplitHugePmdLocked(cpu, vma, leafTable, pmdIndex, haddr, pmd); // TTU_SPLIT_HUGE_PMD
                }

                PmdUnlock(cpu, leafTable);
                if (!ours)
                {
                    return false;
                }
            }
        }

        if (Volatile.Read(ref Phys.EntireMapCount(head)) != 0 || Phys.RmapOwner(head) is not AnonVma anonVma)
        {
            return false; // still mapped by a PMD somewhere
        }

        // The VMAs of this address space that may map its pages (rmap_walk_anon), and the tables
        // of their addresses, in address order.
        ulong first = Phys.Desc(head).RmapAddress;
        var vmas = anonVma.Snapshot().Where(v => ReferenceEquals(v.Mm, this)).ToArray();
        var bases = new SortedSet<ulong>();
        foreach (var v in vmas)
        {
            ulong lo = Math.Max(first, v.PgOff), hi = Math.Min(first + PhysMemory.HugeFrames, v.PgOff + (v.Length >> PhysMemory.PageShift));
            if (lo < hi && v.TryAddressOf(lo, out ulong from) && v.TryAddressOf(hi - 1, out ulong to))
            {
                for (ulong b = from & Geometry.PmdMask; b <= to; b += Geometry.PmdSize)
                {
                    bases.Add(b);
                }
            }
        }

        if (bases.Count == 0)
        {
            return false;
        }

        var tables = new (ulong Base, TableRef Table)[bases.Count];
        int locked = 0;
        long[] pages = new long[PhysMemory.HugeFrames];
        bool split = false;
        try
        {
            foreach (ulong b in bases)
            {
                var t = PteOffsetMapLockForSplit(cpu, b, locked);
                if (t is null)
                {
                    return false; // unhooked meanwhile
                }

                tables[locked++] = (b, t.Value);
            }

            split = SplitFolioLocked(cpu, head, first, vmas, tables, pages);
        }
        finally
        {
            for (int k = locked - 1; k >= 0; k--)
            {
                if (!tables[k].Table.IsNone)
                {
                    PteUnmapUnlock(cpu, tables[k].Table);
                }
            }
        }

        if (split)
        {
            // The split's reference on every page (the head's is the isolation's): what nothing maps goes.
            CountPageFreed(cpu, Phys.PutPages(pages));
        }

        return split;
    }

    /// <summary>
    /// The PTE table of the 2 MiB at <paramref name="tableBase"/>, mapped and locked as the
    /// <paramref name="subclass"/>-th PTE lock a split holds (none when no PTE table is there); null
    /// when the pmd no longer named the table once its lock was taken.
    /// </summary>
    private TableRef? PteOffsetMapLockForSplit(Cpu cpu, ulong tableBase, int subclass)
    {
        long pmdTable = PmdTableOf(tableBase);
        if (pmdTable < 0)
        {
            return TableRef.None;
        }

        int pmdIndex = Geometry.Index(tableBase, 2);
        var t = PteOffsetMap(cpu, pmdTable, pmdIndex);
        if (t.IsNone)
        {
            return t;
        }

        RawSpinLock.Lock(ref Phys.PtLock(t.Pfn), Machine.Sync, cpu.Id, LockClass.PteLock, t.Pfn, subclass);
        ulong now = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        if (!Entry.IsNone(now) && !Entry.IsHuge(now) && Entry.Pfn(now) == t.Pfn)
        {
            return t;
        }

        PteUnmapUnlock(cpu, t);
        return null;
    }

    /// <summary>
    /// Under the PTE locks of <paramref name="tables"/>: checks that every mapping of the folio is
    /// one of their entries (each page mapped at most once, in a VMA of <paramref name="vmas"/>),
    /// freezes its refcount, splits it and maps its zero-filled pages the zero page. Fills
    /// <paramref name="pages"/> with the frames whose split reference the caller drops.
    /// </summary>
    private bool SplitFolioLocked(Cpu cpu, long head, ulong first, Vma[] vmas, (ulong Base, TableRef Table)[] tables, long[] pages)
    {
        var siteTable = new int[PhysMemory.HugeFrames];
        var siteIndex = new int[PhysMemory.HugeFrames];
        var siteVma = new Vma?[PhysMemory.HugeFrames];
        int mapped = 0;
        bool dirty = false;
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            siteTable[i] = -1;
            int here = 0;
            foreach (var v in vmas)
            {
                if (!v.TryAddressOf(first + (ulong)i, out ulong vi))
                {
                    continue;
                }

                int k = Array.FindIndex(tables, x => x.Base == (vi & Geometry.PmdMask));
                if (k < 0 || tables[k].Table.IsNone)
                {
                    continue;
                }

                ulong e = Volatile.Read(ref Phys.Table(tables[k].Table)[Geometry.PteIndex(vi)]);
                if ((Entry.IsPresent(e) || Entry.IsProtNone(e)) && !Entry.IsSpecial(e) && Entry.Pfn(e) == head + i)
                {
                    here++;
                    dirty |= Entry.IsDirty(e);
                    siteTable[i] = k;
                    siteIndex[i] = Geometry.PteIndex(vi);
                    siteVma[i] = v;
                }
            }

            if (here > 1 || Phys.Desc(head + i).MapCount != here)
            {
                return false; // mapped twice, or by another address space too
            }

            mapped += here;
        }

        if (!Phys.Desc(head).TryFreezeRef(mapped + 1))
        {
            return false; // a pin or a racing reference: -EAGAIN
        }

        if (dirty)
        {
            // unmap_folio (try_to_migrate_one) moves a dirty PTE's bit to the folio, and the split
            // gives PG_dirty to every page: one write to a lazy-free huge page keeps all of it
            // from being discarded as clean.
            Phys.Desc(head).SetFlagsAtomic(PageFlags.Dirty);
        }

        Phys.SplitHugeFolioFrames(head);
        long zeroed = 0;
        var flush = new bool[tables.Length];
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            long pfn = head + i;
            pages[i] = pfn;
            int k = siteTable[i];
            if (k < 0)
            {
                continue; // freed by the last put
            }

            ref var d = ref Phys.Desc(pfn);
            if ((siteVma[i]!.Flags & VmFlags.Locked) == 0 && !d.Has(PageFlags.Mlocked) && Phys.Content.Token(pfn) == 0)
            {
                // try_to_map_unused_to_zeropage: a zero-filled page is not kept.
                var pteTable = tables[k].Table;
                ulong old = PtepGetAndClear(cpu, pteTable, siteIndex[i]);
                ulong zero = Entry.MakeZeroPagePte(Phys.ZeroPfn);
                if ((old & Entry.NoExecute) == 0)
                {
                    zero &= ~Entry.NoExecute;
                }

                SetPteAt(cpu, pteTable, siteIndex[i], Entry.IsProtNone(old) ? (zero & ~Entry.Present) | Entry.ProtNone : zero);
                d.AddMap(-1);
                Phys.PutPage(pfn); // the mapping's reference; the split's goes with the caller's put
                zeroed++;
                flush[k] = true;
                continue;
            }

            Phys.Lru.Add(pfn, LruListOf(pfn)); // lru_add_split_folio
        }

        if (zeroed > 0)
        {
            AddRssAnon(cpu, -zeroed);
            for (int k = 0; k < tables.Length; k++)
            {
                if (flush[k])
                {
                    FlushTlbRange(cpu, tables[k].Base, tables[k].Base + Geometry.PmdSize);
                }
            }
        }

        Interlocked.Increment(ref _thpSplitPage);
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
    /// than one entry (<c>folio_maybe_mapped_shared</c>): mapped by more than one PMD, by a PMD
    /// and by PTEs (after fork shared it, one address space split its PMD), or a page mapped more
    /// than once.
    /// </summary>
    private bool FolioMaybeMappedShared(long pfn)
    {
        long head = Phys.CompoundHead(pfn);
        int entire = Volatile.Read(ref Phys.EntireMapCount(head));
        if (entire > 1)
        {
            return true;
        }

        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            int n = Phys.Desc(head + i).MapCount;
            if (n > 1 || (n > 0 && entire > 0))
            {
                return true;
            }
        }

        return false;
    }
}
