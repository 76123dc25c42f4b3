using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/khugepaged.c: MADV_COLLAPSE (madvise_collapse) of anonymous memory. Each 2 MiB the range
// covers whole, aligned, is scanned (hpage_collapse_scan_pmd) and collapsed
// (collapse_huge_page): a new huge page gets a copy of every present page (zeros for none and
// zero-page entries, swapped pages are read in first), the PTE table is unhooked, emptied and
// deposited beside the new PMD leaf (it stays in VmPTE), and the small pages are freed.
//
// Race argument. The kernel drops mmap_lock to allocate and then takes it for write; the model
// holds it for write through the whole call, which is the stronger exclusion: no fault, zap or
// design freer that runs under mmap_lock can reach the table. Reclaim's rmap walk runs without
// mmap_lock, so the collapse takes the rmap lock for write (anon_vma_lock_write) before it
// unhooks the table. The table is unhooked under the pmd lock, the TLB and paging-structure
// caches are flushed for the 2 MiB (pmdp_collapse_flush), and a grace period passes (the model of
// tlb_remove_table_sync_one: GUP-fast walks in an RCU read section) before its entries are read
// for the last time under its PTE lock: from then on no CPU and no lockless walker can reach it.
// The kernel deposits that same table. The model deposits a table fresh from the design's
// constructor instead and frees the unhooked one at once (pte_free, no gather needed: nothing can
// reach it): to every design a deposit is a constructed table that a split fills through
// set_pte_at and a zap of the leaf frees with pte_free, whereas the unhooked table still carries
// the design's count of the entries it held (atomic's count would claim it at zero, pte-ref's
// per-CPU cache knows its frame and generation). VmPTE is the same either way: one table left the
// pmd, one is deposited. A design that queued the old table for a later free finds its frame's
// generation changed or the pmd a leaf, as it must for any racing free.
public sealed partial class MmStruct
{
    private long _thpCollapseAlloc;
    private long _thpCollapseAllocFailed;

    /// <summary><c>thp_collapse_alloc</c>: huge pages allocated for MADV_COLLAPSE.</summary>
    public long ThpCollapseAlloc => Volatile.Read(ref _thpCollapseAlloc);

    /// <summary><c>thp_collapse_alloc_failed</c>: MADV_COLLAPSE ranges that found no huge page.</summary>
    public long ThpCollapseAllocFailed => Volatile.Read(ref _thpCollapseAllocFailed);

    /// <summary>The <c>enum scan_result</c> values the model can produce.</summary>
    private enum ScanResult
    {
        Fail,
        Succeed,
        PmdNull,
        PmdNone,
        PmdMapped,
        PteNonPresent,
        PageNull,
        PageCount,
        PageLru,
        PageAnon,
        AddressRange,
        VmaCheck,
        AllocHugePageFail,
    }

    /// <summary>
    /// <c>madvise(MADV_COLLAPSE)</c> over [start, end): <c>madvise_collapse</c> for each VMA part
    /// (<c>madvise_walk_vmas</c>), under <c>mmap_lock</c> for write (see the race argument above).
    /// </summary>
    private Errno MadviseCollapse(Cpu cpu, ulong start, ulong end)
    {
        MmapLock.DownWrite(cpu.Id);
        try
        {
            return MadviseWalkVmas(start, end, Advice.Collapse, (vma, from, to) => MadviseCollapseVma(cpu, vma, from, to));
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
            Rcu.Poll();
        }
    }

    /// <summary>
    /// <c>thp_vma_allowable_order(vma, vm_flags, TVA_FORCED_COLLAPSE, PMD_ORDER)</c>: the sysfs
    /// <c>enabled</c> mode and VM_HUGEPAGE do not matter; MADV_NOHUGEPAGE and
    /// <c>PR_SET_THP_DISABLE</c> refuse. A regular file's VMA is refused: collapsing the page cache
    /// needs <c>CONFIG_READ_ONLY_THP_FOR_FS</c>, which the measured host lacks. A shared shmem
    /// mapping is allowed (the kernel refuses only with <c>shmem_enabled</c> deny, which the model
    /// does not have; see MmStruct.KhugepagedShmem.cs); a private mapping of shmem is not modelled
    /// and answers EINVAL.
    /// Outside the fault path the VMA must also hold one whole 2 MiB suitable for a leaf: the one
    /// below its end (<c>thp_vma_suitable_order</c> at <c>vm_end - HPAGE_PMD_SIZE</c>), and an
    /// anonymous VMA must have its anon_vma (only a fault or smaps may go without): a VMA nothing
    /// ever wrote to, or that only read the zero page, is refused even where the range covers no
    /// whole 2 MiB.
    /// </summary>
    private bool CollapseVmaAllowable(Vma vma) =>
        (vma.IsAnonymous ? vma.AnonVma is not null : IsShmemCollapseVma(vma)) && !ThpDisabled && (vma.Flags & VmFlags.NoHugePage) == 0 &&
        vma.End >= Geometry.PmdSize && ThpVmaSuitable(vma, (vma.End - Geometry.PmdSize) & Geometry.PmdMask);

    /// <summary>
    /// <c>madvise_collapse</c> of [start, end) inside one VMA: only the aligned 2 MiB ranges the
    /// range covers whole are collapsed. A range that is already a PMD leaf counts as done. The
    /// call succeeds when every one of them is a leaf at the end; otherwise the last failure gives
    /// the errno (<c>madvise_collapse_errno</c>). Some failures go on to the next 2 MiB (no PMD
    /// table, a page with an extra reference or off the LRU), the others end the walk (a pmd
    /// without a PTE table, no huge page). A range inside one 2 MiB that covers none whole but
    /// straddles no boundary either gives EINVAL, as the kernel's unsigned count of ranges does.
    /// </summary>
    private Errno MadviseCollapseVma(Cpu cpu, Vma vma, ulong start, ulong end)
    {
        if (!CollapseVmaAllowable(vma))
        {
            return Errno.EINVAL;
        }

        ulong hstart = (start + Geometry.PmdSize - 1) & Geometry.PmdMask;
        ulong hend = end & Geometry.PmdMask;
        ulong thps = 0;
        var lastFail = ScanResult.Fail;
        for (ulong addr = hstart; addr < hend; addr += Geometry.PmdSize)
        {
            bool swapped = false;
            var result = vma.IsAnonymous ? CollapseScanPmd(cpu, vma, addr, out swapped) : CollapseShmem(cpu, vma, addr);
            if (result == ScanResult.Succeed && vma.IsAnonymous)
            {
                result = CollapseHugePage(cpu, vma, addr, swapped);
            }

            if (result is ScanResult.Succeed or ScanResult.PmdMapped)
            {
                thps++;
                continue;
            }

            lastFail = result;
            if (result is not (ScanResult.PmdNull or ScanResult.PteNonPresent or ScanResult.PageNull or ScanResult.PageCount or ScanResult.PageLru))
            {
                break;
            }
        }

        // (hend - hstart) wraps when the range lies inside one 2 MiB without reaching its end.
        return thps == (hend - hstart) >> Geometry.PmdShift ? Errno.None : CollapseErrno(lastFail);
    }

    /// <summary><c>madvise_collapse_errno</c>.</summary>
    private static Errno CollapseErrno(ScanResult r) => r switch
    {
        ScanResult.AllocHugePageFail => Errno.ENOMEM,
        ScanResult.PageCount or ScanResult.PageLru => Errno.EAGAIN,
        _ => Errno.EINVAL,
    };

    /// <summary>
    /// <c>hpage_collapse_scan_pmd</c> for MADV_COLLAPSE: no limit on none, zero-page, swapped or
    /// shared entries (those apply to khugepaged only), no writable or young entry needed. A page
    /// must be on an LRU list and have no reference beyond its mappings
    /// (<c>is_refcount_suitable</c>); a pin makes it fail with EAGAIN.
    /// </summary>
    private ScanResult CollapseScanPmd(Cpu cpu, Vma vma, ulong haddr, out bool swapped)
    {
        swapped = false;
        long pmdTable = PmdTableOf(haddr);
        if (pmdTable < 0)
        {
            return ScanResult.PmdNull; // mm_find_pmd: no PMD table
        }

        int pmdIndex = Geometry.Index(haddr, 2);
        ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        if (Entry.IsNone(pmd))
        {
            return ScanResult.PmdNone;
        }

        if (Entry.IsHuge(pmd))
        {
            return ScanResult.PmdMapped;
        }

        var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        if (pteTable.IsNone)
        {
            return ScanResult.PmdNull;
        }

        var result = CheckCollapsePtes(pteTable, out swapped);
        PteUnmapUnlock(cpu, pteTable);
        return result;
    }

    /// <summary>
    /// The per-entry checks shared by the scan and <c>__collapse_huge_page_isolate</c>: the first
    /// page that cannot be collapsed gives the result. With <paramref name="swapped"/> the caller
    /// learns whether swap entries must be read in first (the isolate, after the swap-in, refuses
    /// any entry that is not present).
    /// </summary>
    private ScanResult CheckCollapsePtes(TableRef pteTable, out bool swapped)
    {
        swapped = false;
        var entries = Phys.Table(pteTable);
        long lastHead = -1;
        for (int i = 0; i < PhysMemory.EntriesPerTable; i++)
        {
            ulong e = Volatile.Read(ref entries[i]);
            if (Entry.IsNone(e) || (Entry.IsPresent(e) && Entry.IsSpecial(e)))
            {
                continue; // none or the zero page: filled with zeros
            }

            if (!Entry.IsPresent(e))
            {
                swapped = true;
                continue;
            }

            long head = Phys.CompoundHead(Entry.Pfn(e));
            if (head == lastHead)
            {
                continue; // a PTE-mapped huge page, checked at its first entry
            }

            lastHead = head;
            ref var d = ref Phys.Desc(head);
            if ((d.Flags & (int)PageFlags.Anon) == 0)
            {
                return ScanResult.PageAnon;
            }

            if (d.RefCount != FolioMapCount(head))
            {
                return ScanResult.PageCount;
            }

            if (!d.OnLru)
            {
                return ScanResult.PageLru;
            }
        }

        return ScanResult.Succeed;
    }

    /// <summary><c>folio_mapcount</c>: a small page's mapcount, or a huge page's PMD and PTE mappings together.</summary>
    private int FolioMapCount(long head)
    {
        if (!Phys.IsHugeFrame(head))
        {
            return Phys.Desc(head).MapCount;
        }

        int n = Volatile.Read(ref Phys.EntireMapCount(head));
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            n += Phys.Desc(head + i).MapCount;
        }

        return n;
    }

    /// <summary>
    /// <c>collapse_huge_page</c>: allocates the huge page, revalidates the VMA (it must have an
    /// anon_vma, which a VMA that only ever read the zero page lacks, and the 2 MiB must be
    /// suitable), reads swapped pages in, unhooks the PTE table and checks its entries once more
    /// (<c>__collapse_huge_page_isolate</c>), copies, and maps the leaf with the emptied table
    /// deposited beside it. On a failure after the unhook, the table goes back.
    /// </summary>
    private ScanResult CollapseHugePage(Cpu cpu, Vma vma, ulong haddr, bool swapped)
    {
        long folio = Phys.AllocHugeFolio(cpu.Id, directReclaim: true); // GFP_TRANSHUGE
        if (folio < 0)
        {
            Interlocked.Increment(ref _thpCollapseAllocFailed);
            return ScanResult.AllocHugePageFail;
        }

        Interlocked.Increment(ref _thpCollapseAlloc);
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            CountPageAllocated(cpu);
        }

        long deposit = AllocDepositTable(cpu);
        if (deposit < 0)
        {
            ReleasePages(cpu, [folio]);
            return ScanResult.AllocHugePageFail;
        }

        var result = CollapseIntoFolio(cpu, vma, haddr, swapped, folio, deposit);
        if (result != ScanResult.Succeed)
        {
            FreeUnreachableTable(deposit);
            ReleasePages(cpu, [folio]);
        }

        return result;
    }

    private ScanResult CollapseIntoFolio(Cpu cpu, Vma vma, ulong haddr, bool swapped, long folio, long deposit)
    {
        if (!ThpVmaSuitable(vma, haddr))
        {
            return ScanResult.AddressRange;
        }

        if (vma.AnonVma is null)
        {
            return ScanResult.PageAnon;
        }

        long pmdTable = PmdTableOf(haddr);
        int pmdIndex = Geometry.Index(haddr, 2);
        if (swapped && !CollapseSwapin(cpu, vma, haddr, pmdTable, pmdIndex))
        {
            return ScanResult.Fail;
        }

        RmapLock.DownWrite(cpu.Id);
        try
        {
            PmdLock(cpu, pmdTable);
            ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
            if (Entry.IsNone(pmd) || Entry.IsHuge(pmd))
            {
                PmdUnlock(cpu, pmdTable);
                return Entry.IsNone(pmd) ? ScanResult.PmdNone : ScanResult.PmdMapped;
            }

            long ptePfn = Entry.Pfn(pmd);
            PmdClear(pmdTable, pmdIndex); // pmdp_collapse_flush
            PmdUnlock(cpu, pmdTable);
            TlbFlushMmu(cpu, haddr, haddr + Geometry.PmdSize, freedTables: true);
            Rcu.SynchronizeRcu(cpu.Id); // tlb_remove_table_sync_one: no GUP-fast still walks the table

            var pt = Phys.Ref(ptePfn);
            PtlLock(cpu, ptePfn);
            var result = CheckCollapsePtes(pt, out bool stillSwapped);
            if (result == ScanResult.Succeed && stillSwapped)
            {
                result = ScanResult.PteNonPresent;
            }

            if (result != ScanResult.Succeed)
            {
                PtlUnlock(cpu, ptePfn);
                RehookTable(cpu, pmdTable, pmdIndex, ptePfn);
                return result;
            }

            var freed = CollapseCopy(cpu, vma, pt, folio);
            PtlUnlock(cpu, ptePfn);
            FreeUnreachableTable(ptePfn);

            PmdLock(cpu, pmdTable);
            Deposit(pmdTable, deposit);
            MapAnonFolioPmd(cpu, vma, folio, pmdTable, pmdIndex, haddr, fault: false);
            PmdUnlock(cpu, pmdTable);
            AddRssAnon(cpu, -freed.Count);
            ReleasePages(cpu, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(freed));
            return ScanResult.Succeed;
        }
        finally
        {
            RmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary>
    /// <c>__collapse_huge_page_swapin</c>: every swap entry of the 2 MiB is faulted in
    /// (<c>do_swap_page</c>). Returns false when one could not be.
    /// </summary>
    private bool CollapseSwapin(Cpu cpu, Vma vma, ulong haddr, long pmdTable, int pmdIndex)
    {
        for (ulong a = haddr; a < haddr + Geometry.PmdSize; a += Geometry.PageSize)
        {
            ulong e = Volatile.Read(ref Phys.Table(Entry.Pfn(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))[Geometry.PteIndex(a)]);
            if (Entry.IsSwap(e) && HandlePteFault(cpu, vma, a, write: false, pmdTable, pmdIndex) != FaultOutcome.Ok)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// <c>__collapse_huge_page_copy</c> and <c>__collapse_huge_page_copy_succeeded</c>, with the
    /// unhooked table's PTE lock held: each sub-page of <paramref name="folio"/> gets the content of
    /// the page mapped at its place (zeros for none and the zero page), and each page loses its
    /// mapping (munlocked if the VMA is locked). The entries are left to the table's free. Returns
    /// the pages, whose mapping references go after the flush.
    /// </summary>
    private List<long> CollapseCopy(Cpu cpu, Vma vma, TableRef pt, long folio)
    {
        AssertPtlHeld(cpu, pt.Pfn);
        var entries = Phys.Table(pt);
        var freed = new List<long>();
        bool locked = (vma.Flags & VmFlags.Locked) != 0;
        for (int i = 0; i < PhysMemory.EntriesPerTable; i++)
        {
            ulong e = Volatile.Read(ref entries[i]);
            if (Entry.IsNone(e) || Entry.IsSpecial(e))
            {
                Phys.Content.Zero(folio + i);
                continue;
            }

            long pfn = Entry.Pfn(e);
            Phys.Content.Copy(pfn, folio + i);
            if (Phys.Desc(pfn).AddMap(-1) < 0)
            {
                throw new BadPageException($"mapcount underflow on frame {pfn:x} collapsed into {folio:x}");
            }

            if (locked)
            {
                MunlockVmaFolio(pfn);
            }

            freed.Add(pfn);
        }

        return freed;
    }

    /// <summary>Puts back a PTE table a failed collapse (anonymous or shmem) unhooked.</summary>
    private void RehookTable(Cpu cpu, long pmdTable, int pmdIndex, long ptePfn)
    {
        PmdLock(cpu, pmdTable);
        PmdPopulate(cpu, pmdTable, pmdIndex, ptePfn);
        PmdUnlock(cpu, pmdTable);
    }
}
