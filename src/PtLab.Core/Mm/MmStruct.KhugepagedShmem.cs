using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/khugepaged.c: MADV_COLLAPSE of a shared shmem mapping (hpage_collapse_scan_file,
// collapse_file, retract_page_tables, collapse_pte_mapped_thp). A PMD-sized folio replaces the
// pages cached for the 2 MiB (holes filled, so RssShmem counts the whole 2 MiB), the PTE table is
// unhooked and freed (VmPTE drops: nothing is deposited for a page-cache leaf) and the folio is
// mapped by one PMD leaf. A folio already PMD-sized in the cache is just mapped
// (collapse_pte_mapped_thp after a zap took the leaf away).
//
// The model collapses a range of a file that only this address space maps and that no other VMA
// of it maps (the usual shared anonymous mapping, also after mprotect or munmap split it into
// several VMAs, each mapping its own part of the file): the kernel also retracts the tables of
// other address spaces' VMAs mapping the range (after a fork), under each one's locks, which the
// model does not do; there the collapse answers EINVAL.
//
// Race argument. mmap_lock is held for write through the whole call (MadviseCollapse), so no
// fault, zap, page walk or design freer that runs under mmap_lock reaches the table, and no other
// VMA can map the range's pages meanwhile (this VMA is the range's only mapping, every mapping of
// the file is this address space's, and mapping it again needs mmap_lock). The lockless walkers are handled as for the anonymous collapse: the table is
// unhooked under the pmd lock, the TLB and paging-structure caches are flushed for the 2 MiB and a
// grace period passes (GUP-fast walks in an RCU read section) before its entries are read for the
// last time under its PTE lock: from then on nothing can reach it, and it is freed at once
// (pte_free; the kernel's pte_free_defer needs no grace period more here). Reclaim's rmap walk
// takes no mmap_lock: it finds the pmd none and leaves the page mapped, and its eviction decides
// under the cache lock, where the collapse checks every page's references and replaces the pages
// in one step (SimFile.CollapseShmemRange): a page reclaim or GUP holds a reference on makes the
// collapse fail with EAGAIN (the table goes back), a page the collapse replaced is no longer
// cached when reclaim looks. The rmap lock is taken for write as by the anonymous collapse.
public sealed partial class MmStruct
{
    /// <summary>Whether <paramref name="vma"/> is a shared mapping of a shmem file, which MADV_COLLAPSE collapses through the page cache.</summary>
    private static bool IsShmemCollapseVma(Vma vma) =>
        vma.File is { IsShmem: true } && (vma.Flags & VmFlags.Shared) != 0;

    /// <summary>
    /// Whether the model collapses the pages [<paramref name="first"/>, +<paramref name="count"/>)
    /// of the shmem file <paramref name="vma"/> maps: every VMA mapping the file belongs to
    /// <paramref name="vma"/>'s address space, and none but <paramref name="vma"/> maps a page of
    /// the range (the kernel would retract the other mappings' tables too).
    /// </summary>
    public static bool ShmemCollapseModelled(Vma vma, ulong first, ulong count)
    {
        ArgumentNullException.ThrowIfNull(vma);
        foreach (var v in vma.File!.MappingSnapshot())
        {
            if (!ReferenceEquals(v.Mm, vma.Mm))
            {
                return false;
            }

            ulong lo = v.PgOff, hi = v.PgOff + (v.Length >> PhysMemory.PageShift);
            if (!ReferenceEquals(v, vma) && lo < first + count && first < hi)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// <c>hpage_collapse_scan_file</c> + <c>collapse_file</c> + <c>collapse_pte_mapped_thp</c> for
    /// the 2 MiB at <paramref name="haddr"/> of a shared shmem VMA.
    /// </summary>
    private ScanResult CollapseShmem(Cpu cpu, Vma vma, ulong haddr)
    {
        var file = vma.File!;
        ulong first = vma.PgOff + ((haddr - vma.Start) >> PhysMemory.PageShift);
        if (!ShmemCollapseModelled(vma, first, PhysMemory.HugeFrames))
        {
            return ScanResult.VmaCheck; // other mappings would need their tables retracted too
        }

        long pmdTable = PmdTableOf(haddr);
        int pmdIndex = Geometry.Index(haddr, 2);
        if (pmdTable >= 0 && Entry.IsHuge(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
        {
            return ScanResult.PmdMapped;
        }

        long cached = file.FindGetPage(first);
        if (cached >= 0)
        {
            if (file.LargeFolioOf(cached, first) is { } large)
            {
                // SCAN_PTE_MAPPED_HUGEPAGE: the folio is there (a zap took its leaf away); only
                // the mapping is left to do, with the reference just taken.
                return InstallShmemPmd(cpu, vma, haddr, large.Head, pmdTable, pmdIndex);
            }

            Phys.PutPage(cached);
        }

        long folio = Phys.AllocHugeFolio(cpu.Id, directReclaim: true);
        if (folio < 0)
        {
            Interlocked.Increment(ref _thpCollapseAllocFailed);
            return ScanResult.AllocHugePageFail;
        }

        Interlocked.Increment(ref _thpCollapseAlloc);
        RmapLock.DownWrite(cpu.Id);
        try
        {
            var result = CollapseShmemLocked(cpu, vma, haddr, first, folio, pmdTable, pmdIndex);
            if (result != ScanResult.Succeed)
            {
                Phys.PutPage(folio);
                return result;
            }
        }
        finally
        {
            RmapLock.UpWrite(cpu.Id);
        }

        return InstallShmemPmd(cpu, vma, haddr, folio, pmdTable, pmdIndex);
    }

    /// <summary>
    /// Unhooks this VMA's PTE table of the 2 MiB (if any), checks that each entry is none or maps
    /// the page cached at its index, has the cache replace the pages by <paramref name="folio"/>,
    /// then drops the old mappings and frees the table. On a failure the table goes back.
    /// </summary>
    private ScanResult CollapseShmemLocked(Cpu cpu, Vma vma, ulong haddr, ulong first, long folio, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        Span<long> mapped = new long[PhysMemory.HugeFrames];
        mapped.Fill(-1);
        long ptePfn = -1;
        if (pmdTable >= 0)
        {
            PmdLock(cpu, pmdTable);
            ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
            if (Entry.IsHuge(pmd))
            {
                PmdUnlock(cpu, pmdTable);
                return ScanResult.PmdMapped;
            }

            if (!Entry.IsNone(pmd))
            {
                ptePfn = Entry.Pfn(pmd);
                PmdClear(pmdTable, pmdIndex); // pmdp_collapse_flush
            }

            PmdUnlock(cpu, pmdTable);
        }

        if (ptePfn >= 0)
        {
            TlbFlushMmu(cpu, haddr, haddr + Geometry.PmdSize, freedTables: true);
            Rcu.SynchronizeRcu(cpu.Id); // no GUP-fast still walks the table
            PtlLock(cpu, ptePfn);
            var entries = Phys.Table(Phys.Ref(ptePfn));
            bool ok = true;
            for (int i = 0; i < PhysMemory.EntriesPerTable && ok; i++)
            {
                ulong e = Volatile.Read(ref entries[i]);
                if (Entry.IsNone(e))
                {
                    continue;
                }

                // A present entry must map the cached page of its index; anything else (a swap
                // or migration entry, an anonymous page) is not collapsed.
                ok = Entry.IsPresent(e) && !Entry.IsSpecial(e);
                mapped[i] = ok ? Entry.Pfn(e) : -1;
            }

            PtlUnlock(cpu, ptePfn);
            if (!ok)
            {
                RehookTable(cpu, pmdTable, pmdIndex, ptePfn);
                return ScanResult.PteNonPresent;
            }
        }

        var removed = new List<long>();
        var cacheResult = file.CollapseShmemRange(first, folio, mapped, removed);
        if (cacheResult != ShmemCollapseResult.Succeed)
        {
            if (ptePfn >= 0)
            {
                RehookTable(cpu, pmdTable, pmdIndex, ptePfn);
            }

            return cacheResult switch
            {
                ShmemCollapseResult.PageCount => ScanResult.PageCount,
                ShmemCollapseResult.Compound => ScanResult.PageCount,
                _ => ScanResult.Fail, // SCAN_TRUNCATED
            };
        }

        // The old pages: the mapping's reference and mapcount go with the table, the cache's with
        // the replacement (retract_page_tables after try_to_unmap in the kernel).
        var refs = new List<long>(removed);
        bool locked = (vma.Flags & VmFlags.Locked) != 0;
        foreach (long pfn in mapped)
        {
            if (pfn < 0)
            {
                continue;
            }

            Phys.Desc(pfn).AddMap(-1);
            if (locked)
            {
                MunlockVmaFolio(pfn);
            }

            refs.Add(pfn);
        }

        if (ptePfn >= 0)
        {
            AddRss(cpu, MmCounter.Shmem, -(refs.Count - removed.Count));
            DecTables(1);
            FreeUnreachableTable(ptePfn);
        }

        Phys.PutPages([.. refs]);
        return ScanResult.Succeed;
    }

    /// <summary>
    /// <c>set_huge_pmd</c> from <c>collapse_pte_mapped_thp</c>: maps the PMD-sized folio by one
    /// leaf where the pmd is none, handing it the reference the caller holds (dropped when nothing
    /// is mapped). With no PMD table (<c>SCAN_PMD_NULL</c>) or a PTE table still there (pages of
    /// the folio mapped by PTEs, which the model does not retract) nothing is mapped. The leaf is
    /// writable in a writable shared mapping.
    /// </summary>
    private ScanResult InstallShmemPmd(Cpu cpu, Vma vma, ulong haddr, long head, long pmdTable, int pmdIndex)
    {
        ulong pmd = pmdTable < 0 ? 0 : Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        if (pmdTable >= 0 && Entry.IsNone(pmd) && DoSetPmd(cpu, vma, haddr, head, write: true, pmdTable, pmdIndex))
        {
            return ScanResult.Succeed;
        }

        Phys.PutPage(head);
        return pmdTable < 0 ? ScanResult.PmdNull : Entry.IsHuge(pmd) ? ScanResult.PmdMapped : ScanResult.Fail;
    }
}
