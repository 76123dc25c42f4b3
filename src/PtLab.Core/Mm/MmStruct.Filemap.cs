using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>What <c>do_fault_around</c> achieved.</summary>
internal enum FaultAroundResult
{
    /// <summary>The faulting address is not mapped yet: read the page in.</summary>
    NotMapped,
    /// <summary>The faulting page was cached and is mapped now (<c>VM_FAULT_NOPAGE</c>).</summary>
    Mapped,
    /// <summary>No memory for the PTE table.</summary>
    Oom,
}

// Faults on file and shmem mappings (mm/memory.c do_fault, do_read_fault, do_cow_fault,
// do_shared_fault, do_fault_around, finish_fault, wp_page_shared; mm/filemap.c filemap_map_pages
// and filemap_fault), and MADV_REMOVE's hole punch (mm/madvise.c madvise_remove,
// mm/shmem.c shmem_fallocate, unmap_mapping_range).
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>fault_around_bytes</c> / <c>PAGE_SIZE</c>: a read fault on a file maps up to this many
    /// cached pages around it, within one PTE table and the VMA (64 KiB, the kernel's default).
    /// </summary>
    public const int FaultAroundPages = 16;

    /// <summary><c>do_fault</c>: a read, a private (copy-on-write) write, or a shared write.</summary>
    private FaultOutcome DoFault(Cpu cpu, Vma vma, ulong addr, bool write, long pmdTable, int pmdIndex)
    {
        addr &= Geometry.PageMask;
        if (!write)
        {
            return DoReadFault(cpu, vma, addr, pmdTable, pmdIndex);
        }

        return (vma.Flags & VmFlags.Shared) == 0
            ? DoCowFault(cpu, vma, addr, pmdTable, pmdIndex)
            : DoSharedFault(cpu, vma, addr, pmdTable, pmdIndex);
    }

    /// <summary>
    /// <c>do_read_fault</c>: map what the page cache already holds around the address first
    /// (<c>do_fault_around</c>); if that did not map the faulting page, read it in
    /// (<c>__do_fault</c>, SIGBUS beyond end of file) and map it (<c>finish_fault</c>).
    /// </summary>
    private FaultOutcome DoReadFault(Cpu cpu, Vma vma, ulong addr, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        ulong index = vma.LinearPageIndex(addr);
        if (FaultAroundPages > 1)
        {
            if (FaultAround(cpu, vma, addr, index, pmdTable, pmdIndex) is { } done)
            {
                return done;
            }
        }

        if (index >= file.PagesInFile)
        {
            return FaultOutcome.Bus;
        }

        if (!file.IsShmem && !file.IsCached(index))
        {
            // filemap_fault's cold miss: the read-around I/O drops mmap_lock, and the retried fault
            // maps the window from the now-warm cache by fault-around.
            if (!ReadAround(cpu, vma, file, index))
            {
                return FaultOutcome.Oom;
            }

            if (FaultAround(cpu, vma, addr, index, pmdTable, pmdIndex) is { } done)
            {
                return done;
            }
        }
        else if (!file.IsShmem && ClearReadAheadMark(vma, file, index) is { } folioPages)
        {
            // do_async_mmap_readahead found the mark: it drops mmap_lock to start the next
            // window's readahead (page_cache_async_ra), so the fault is retried, and fault-around
            // now maps the page's folio (a large one whole, or by a PMD leaf).
            file.AsyncReadAhead(cpu.Id, vma.Ra, index, folioPages);
            if (FaultAround(cpu, vma, addr, index, pmdTable, pmdIndex) is { } done)
            {
                return done;
            }
        }

        long pfn = FilemapFaultPage(cpu, vma, file, index);
        return pfn < 0 ? FaultOutcome.Oom : FinishFault(cpu, vma, addr, pfn, index, write: false, pmdTable, pmdIndex);
    }

    /// <summary><see cref="DoFaultAround"/> as the fault's outcome: null when it did not map the faulting page.</summary>
    private FaultOutcome? FaultAround(Cpu cpu, Vma vma, ulong addr, ulong index, long pmdTable, int pmdIndex) =>
        DoFaultAround(cpu, vma, addr, index, pmdTable, pmdIndex) switch
        {
            FaultAroundResult.Mapped => FaultOutcome.Ok,
            FaultAroundResult.Oom => FaultOutcome.Oom,
            _ => null,
        };

    /// <summary>
    /// <c>do_async_mmap_readahead</c>'s test: clears PG_readahead on the cached folio of
    /// <paramref name="index"/> and returns the folio's size in pages, unless the VMA is
    /// MADV_RANDOM or the file has no readahead window; null when there is no mark.
    /// </summary>
    private ulong? ClearReadAheadMark(Vma vma, SimFile file, ulong index)
    {
        if ((vma.Flags & VmFlags.RandRead) != 0 || file.ReadAheadPages == 0)
        {
            return null;
        }

        long pfn = file.FindGetPage(index);
        if (pfn < 0)
        {
            return null;
        }

        var (marked, pages) = file.ClearReadAhead(pfn, index);
        Phys.PutPage(pfn);
        return marked ? pages : null;
    }

    /// <summary>
    /// <c>do_fault_around</c> + <c>filemap_map_pages</c>: the window is <see cref="FaultAroundPages"/>
    /// entries aligned down to its own size, clamped to the VMA and to the PTE table; within it,
    /// every page that is already in the page cache, below end of file, and whose entry is none gets
    /// mapped (young, read-only unless a shared mapping needs no write notification). Nothing is read
    /// in, and when nothing is cached the PTE table is not installed either.
    /// </summary>
    private FaultAroundResult DoFaultAround(Cpu cpu, Vma vma, ulong addr, ulong index, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        ulong nr = FaultAroundPages;
        ulong pteOff = (ulong)Geometry.PteIndex(addr);
        ulong vmaOff = index - vma.PgOff;
        ulong vmaPages = vma.Length >> PhysMemory.PageShift;
        ulong from = Math.Max(pteOff & ~(nr - 1), pteOff - Math.Min(pteOff, vmaOff));
        ulong to = Math.Min(Math.Min(from + nr, (ulong)PhysMemory.EntriesPerTable), pteOff + vmaPages - vmaOff) - 1;
        ulong first = index - pteOff + from;
        ulong last = index - pteOff + to;
        ulong fileEnd = file.PagesInFile;
        if (fileEnd == 0 || first >= fileEnd)
        {
            return FaultAroundResult.NotMapped;
        }

        last = Math.Min(last, fileEnd - 1);
        Span<long> pfns = stackalloc long[FaultAroundPages];
        pfns = pfns[..(int)(last - first + 1)];
        if (file.FindGetPages(first, pfns) == 0)
        {
            return FaultAroundResult.NotMapped;
        }

        if (!AnyUnmarked(pfns))
        {
            // next_uptodate_folio found nothing to map: filemap_map_pages returns before it
            // installs a PTE table (filemap_map_pmd), so a PMD-sized folio behind the readahead
            // mark can still be PMD-mapped by the fault's finish_fault.
            PutPages(pfns, keep: -1);
            return FaultAroundResult.NotMapped;
        }

        bool endsFile = !file.IsShmem && FirstFolioEndsFile(file, pfns, first, fileEnd);
        if (!endsFile && FirstLargeFolio(file, pfns, first) is { } large
            && Entry.IsNone(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])) && DoSetPmd(cpu, vma, addr, large.Head, write: false, pmdTable, pmdIndex))
        {
            // filemap_map_pmd: a PMD-sized folio first in the window is mapped by one PMD entry
            // where do_set_pmd can (whatever the VMA's MADV_HUGEPAGE and the global THP mode).
            PutPages(pfns, keep: large.Head);
            file.FaultAroundHits(vma.Ra, PhysMemory.HugeFrames);
            return FaultAroundResult.Mapped;
        }

        if (endsFile && Entry.IsNone(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
        {
            // filemap_map_pages installs the PTE table in filemap_map_pmd, which it skips when the
            // first folio found reaches end of file (SIGBUS semantics): with no table there, it
            // maps nothing.
            PutPages(pfns, keep: -1);
            return FaultAroundResult.NotMapped;
        }

        if (!endsFile && WholeFolios(vma, file, pfns, first) is { } extended)
        {
            // filemap_map_folio_range: each large folio the window meets is mapped whole when it
            // lies inside the VMA and one PTE table, as the window would otherwise cut it.
            PutPages(pfns, keep: -1);
            return MapPages(cpu, vma, addr, extended.First, extended.Pfns, pmdTable, pmdIndex);
        }

        return MapPages(cpu, vma, addr, first, pfns, pmdTable, pmdIndex);
    }

    /// <summary>
    /// The mapping half of <c>filemap_map_pages</c>: installs the PTE table if there is none and
    /// maps each page of <paramref name="pfns"/> (indexes from <paramref name="first"/>, references
    /// held, -1 for none) whose entry is none, that is still cached and carries no readahead mark.
    /// </summary>
    private FaultAroundResult MapPages(Cpu cpu, Vma vma, ulong addr, ulong first, ReadOnlySpan<long> pfns, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        bool allocated = PteAlloc(cpu, pmdTable, pmdIndex);
        var pt = allocated ? PteOffsetMapLock(cpu, pmdTable, pmdIndex) : TableRef.None;
        var result = FaultAroundResult.NotMapped;
        long mapped = 0;
        var counter = MmCounter.File;
        for (int i = 0; i < pfns.Length; i++)
        {
            long pfn = pfns[i];
            if (pfn < 0)
            {
                continue;
            }

            ulong va = vma.Start + ((first + (ulong)i - vma.PgOff) << PhysMemory.PageShift);
            int slot = Geometry.PteIndex(va);
            if (pt.IsNone || !Entry.IsNone(Volatile.Read(ref Phys.Table(pt)[slot])) || !file.StillCached(pfn, first + (ulong)i)
                || ReadAheadMarked(pfn))
            {
                Phys.PutPage(pfn);
                continue;
            }

            ref var d = ref Phys.Desc(pfn);
            counter = CounterOf(ref d);
            d.AddMap(1);
            MlockVmaFolio(pfn, vma);
            SetPteAt(cpu, pt, slot, FilePte(vma, pfn, write: false));
            mapped++;
            if (va == addr)
            {
                result = FaultAroundResult.Mapped;
            }
        }

        if (!pt.IsNone)
        {
            AddRss(cpu, counter, mapped);
            PteUnmapUnlock(cpu, pt);
            file.FaultAroundHits(vma.Ra, (int)mapped);
        }

        return allocated ? result : FaultAroundResult.Oom;
    }

    /// <summary>
    /// The pages fault-around maps when a large folio met in the window [<paramref name="first"/>,
    /// +<paramref name="pfns"/>.Length) lies inside the VMA and one PTE table: the window's pages and
    /// every such folio's, from the lowest index on, with references taken (-1 for a page not to
    /// map). Null when no folio reaches beyond the window.
    /// </summary>
    private (ulong First, long[] Pfns)? WholeFolios(Vma vma, SimFile file, ReadOnlySpan<long> pfns, ulong first)
    {
        ulong lo = first, hi = first + (ulong)pfns.Length;
        List<(ulong First, ulong Pages)>? whole = null;
        for (int i = 0; i < pfns.Length; i++)
        {
            if (pfns[i] < 0 || ReadAheadMarked(pfns[i]) || file.FolioOf(pfns[i], first + (ulong)i) is not { } folio
                || whole?.Contains((folio.First, folio.Pages)) == true)
            {
                continue;
            }

            ulong va0 = vma.Start + ((folio.First - vma.PgOff) << PhysMemory.PageShift);
            ulong bytes = folio.Pages << PhysMemory.PageShift;
            if (folio.First >= vma.PgOff && va0 >= vma.Start && va0 + bytes <= vma.End && (va0 & Geometry.PmdMask) == ((va0 + bytes - 1) & Geometry.PmdMask))
            {
                (whole ??= []).Add((folio.First, folio.Pages));
                lo = Math.Min(lo, folio.First);
                hi = Math.Max(hi, folio.First + folio.Pages);
            }
        }

        if (whole is null || (lo == first && hi == first + (ulong)pfns.Length))
        {
            return null;
        }

        long[] all = new long[hi - lo];
        file.FindGetPages(lo, all);
        for (int j = 0; j < all.Length; j++)
        {
            ulong index = lo + (ulong)j;
            bool inWindow = index >= first && index < first + (ulong)pfns.Length;
            if (all[j] >= 0 && !inWindow && !whole.Exists(f => index >= f.First && index < f.First + f.Pages))
            {
                Phys.PutPage(all[j]);
                all[j] = -1;
            }
        }

        return (lo, all);
    }

    /// <summary>
    /// Whether the first folio <c>next_uptodate_folio</c> would return from <paramref name="pfns"/>
    /// (cached, without the readahead mark) reaches end of file (<c>file_end &lt; folio_next_index</c>):
    /// the file's last page, or a large folio holding it.
    /// </summary>
    private bool FirstFolioEndsFile(SimFile file, ReadOnlySpan<long> pfns, ulong first, ulong fileEnd)
    {
        for (int i = 0; i < pfns.Length; i++)
        {
            if (pfns[i] >= 0 && !ReadAheadMarked(pfns[i]))
            {
                ulong index = first + (ulong)i;
                ulong next = file.FolioOf(pfns[i], index) is { } folio ? folio.First + folio.Pages : index + 1;
                return next >= fileEnd;
            }
        }

        return false;
    }

    /// <summary>The first folio <c>next_uptodate_folio</c> would return from <paramref name="pfns"/>, if it is a PMD-sized one.</summary>
    private (ulong First, long Head)? FirstLargeFolio(SimFile file, ReadOnlySpan<long> pfns, ulong first)
    {
        for (int i = 0; i < pfns.Length; i++)
        {
            if (pfns[i] >= 0 && !ReadAheadMarked(pfns[i]))
            {
                return file.LargeFolioOf(pfns[i], first + (ulong)i);
            }
        }

        return null;
    }

    private bool AnyUnmarked(ReadOnlySpan<long> pfns)
    {
        foreach (long pfn in pfns)
        {
            if (pfn >= 0 && !ReadAheadMarked(pfn))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>PG_readahead (the bit <see cref="PageFlags.Reclaim"/> shares) on the folio of <paramref name="pfn"/>: kept on its head.</summary>
    private bool ReadAheadMarked(long pfn) => (Phys.Desc(Phys.CompoundHead(pfn)).Flags & (int)PageFlags.Reclaim) != 0;

    /// <summary>Drops the references <c>FindGetPages</c> took, all but one on the folio headed by <paramref name="keep"/> (-1: none kept).</summary>
    private void PutPages(ReadOnlySpan<long> pfns, long keep)
    {
        foreach (long pfn in pfns)
        {
            if (pfn < 0)
            {
                continue;
            }

            if (keep >= 0 && Phys.CompoundHead(pfn) == keep)
            {
                keep = -1;
                continue;
            }

            Phys.PutPage(pfn);
        }
    }

    /// <summary>
    /// <c>do_set_pmd</c>: maps the PMD-sized page-cache folio headed by <paramref name="head"/> with
    /// one PMD leaf at the 2 MiB holding <paramref name="addr"/>, the reference the caller holds on
    /// it passing to the mapping. Refused (false, nothing taken) when the 2 MiB does not fit the VMA
    /// at a congruent offset (<c>thp_vma_suitable_order</c>) or THP is off for the VMA
    /// (MADV_NOHUGEPAGE, <c>PR_SET_THP_DISABLE</c>). No PTE table is deposited for a file folio: a
    /// split just clears the entry. 512 pages of RssFile (RssShmem for shmem). The entry is
    /// read-only unless the fault is a write to a shared writable mapping (then dirty, and the
    /// folio dirty); when another fault set the pmd first, the reference goes and the fault retries.
    /// </summary>
    private bool DoSetPmd(Cpu cpu, Vma vma, ulong addr, long head, bool write, long pmdTable, int pmdIndex)
    {
        ulong haddr = addr & Geometry.PmdMask;
        if (!ThpVmaSuitable(vma, haddr) || ThpDisabled || (vma.Flags & VmFlags.NoHugePage) != 0)
        {
            return false;
        }

        PmdLock(cpu, pmdTable);
        if (!Entry.IsNone(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
        {
            PmdUnlock(cpu, pmdTable);
            Phys.PutPage(head);
            return true;
        }

        bool writable = write && (vma.Flags & (VmFlags.Shared | VmFlags.Write)) == (VmFlags.Shared | VmFlags.Write);
        Interlocked.Increment(ref Phys.EntireMapCount(head));
        AddRss(cpu, CounterOf(head), PhysMemory.HugeFrames);
        if (writable)
        {
            MarkFolioDirty(head);
        }

        SetPmdAt(pmdTable, pmdIndex, Entry.MakeHugePmd(head, writable, dirty: writable, (vma.Flags & VmFlags.Exec) == 0));
        if ((vma.Flags & VmFlags.Locked) != 0)
        {
            // A folio mapped whole by a PMD into a VM_LOCKED VMA is mlocked (measured: 2048 kB of
            // Mlocked whether mlock's populate or an earlier fault made the leaf).
            MlockFolio(head);
        }

        PmdUnlock(cpu, pmdTable);
        return true;
    }

    /// <summary><c>folio_mark_dirty</c> of a PMD-sized folio: the model keeps dirtiness per page, so every page.</summary>
    private void MarkFolioDirty(long head)
    {
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            Phys.Desc(head + i).SetFlagsAtomic(PageFlags.Dirty);
        }
    }

    /// <summary>
    /// <c>finish_fault</c> + <c>set_pte_range</c>: maps the page-cache page <paramref name="pfn"/>
    /// (whose reference the caller holds and hands to the mapping) at <paramref name="addr"/>,
    /// unless the entry is no longer none or the page was truncated meanwhile. A large folio is
    /// mapped whole where it can be (<see cref="FinishFaultFolio"/>); one that reaches past end of
    /// file (a regular file's, not shmem's) only by the faulting page (<c>needs_fallback</c>, which
    /// keeps SIGBUS beyond end of file).
    /// </summary>
    private FaultOutcome FinishFault(Cpu cpu, Vma vma, ulong addr, long pfn, ulong index, bool write, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        var folio = file.FolioOf(pfn, index);
        bool fallback = folio is { } f && !file.IsShmem && f.First + f.Pages > file.PagesInFile;

        // With no PTE table yet, a PMD-sized folio is mapped whole by one PMD entry if it can be.
        if (!fallback && Entry.IsNone(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])) && file.LargeFolioOf(pfn, index) is { } large
            && DoSetPmd(cpu, vma, addr, large.Head, write, pmdTable, pmdIndex))
        {
            return FaultOutcome.Ok;
        }

        if (!fallback && folio is { Pages: > 1 } whole && FinishFaultFolio(cpu, vma, addr, pfn, index, whole.First, whole.Pages, write, pmdTable, pmdIndex) is { } done)
        {
            return done;
        }

        if (LockNoneEntry(cpu, pmdTable, pmdIndex, addr, out var pt) is { } outcome)
        {
            Phys.PutPage(pfn);
            return outcome;
        }

        int i = Geometry.PteIndex(addr);
        if (!vma.File!.StillCached(pfn, index))
        {
            PteUnmapUnlock(cpu, pt);
            Phys.PutPage(pfn);
            return FaultOutcome.Ok;
        }

        ref var d = ref Phys.Desc(pfn);
        d.AddMap(1);
        MlockVmaFolio(pfn, vma);
        if (write)
        {
            d.SetFlagsAtomic(PageFlags.Dirty); // fault_dirty_shared_page
        }

        AddRss(cpu, CounterOf(ref d), 1);
        SetPteAt(cpu, pt, i, FilePte(vma, pfn, write));
        PteUnmapUnlock(cpu, pt);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>finish_fault</c> for a large folio [<paramref name="first"/>, +<paramref name="pages"/>)
    /// of the file: mapped whole by PTEs, the faulting page among them, when it lies inside the VMA
    /// and inside the PTE table of <paramref name="addr"/> (measured on 6.18: a read fault anywhere
    /// in a 64-page folio that ends the file maps all 64 pages; a shared write fault too, writable
    /// and dirty). When any entry of the range is not none, nothing is mapped and the fault is
    /// retried (VM_FAULT_NOPAGE). Null when the folio does not fit, or is no longer whole in the
    /// cache: the caller maps the faulting page alone, with the reference it still holds.
    /// </summary>
    private FaultOutcome? FinishFaultFolio(Cpu cpu, Vma vma, ulong addr, long pfn, ulong index, ulong first, ulong pages, bool write, long pmdTable, int pmdIndex)
    {
        ulong idx = index - first;
        ulong vmaOff = index - vma.PgOff;
        ulong pteOff = (ulong)Geometry.PteIndex(addr);
        if (vmaOff < idx || vmaOff + (pages - idx) > (vma.Length >> PhysMemory.PageShift)
            || pteOff < idx || pteOff + (pages - idx) > (ulong)PhysMemory.EntriesPerTable)
        {
            return null;
        }

        var file = vma.File!;
        Span<long> pfns = stackalloc long[(int)pages]; // at most a PTE table's worth: checked above
        file.FindGetPages(first, pfns);
        bool whole = true;
        for (ulong i = 0; i < pages && whole; i++)
        {
            whole = pfns[(int)i] >= 0 && file.FolioOf(pfns[(int)i], first + i) is { } f && f.First == first && f.Pages == pages;
        }

        if (!whole || pfns[(int)idx] != pfn)
        {
            PutPages(pfns, keep: -1);
            return null;
        }

        Phys.PutPage(pfn); // the range's own reference on the faulting page replaces the caller's
        ulong start = addr - (idx << PhysMemory.PageShift);
        if (LockNoneEntry(cpu, pmdTable, pmdIndex, addr, out var pt) is { } outcome)
        {
            PutPages(pfns, keep: -1);
            return outcome;
        }

        int slot0 = Geometry.PteIndex(start);
        var entries = Phys.Table(pt);
        for (int i = 0; i < pfns.Length; i++)
        {
            if (!Entry.IsNone(Volatile.Read(ref entries[slot0 + i])) || !file.StillCached(pfns[i], first + (ulong)i))
            {
                // pte_range_none failed (or a page went meanwhile): VM_FAULT_NOPAGE, the fault retries.
                PteUnmapUnlock(cpu, pt);
                PutPages(pfns, keep: -1);
                return FaultOutcome.Ok;
            }
        }

        var counter = MmCounter.File;
        for (int i = 0; i < pfns.Length; i++)
        {
            ref var d = ref Phys.Desc(pfns[i]);
            counter = CounterOf(ref d);
            d.AddMap(1);
            MlockVmaFolio(pfns[i], vma);
            if (write)
            {
                d.SetFlagsAtomic(PageFlags.Dirty); // fault_dirty_shared_page dirties the folio
            }

            SetPteAt(cpu, pt, slot0 + i, FilePte(vma, pfns[i], write));
        }

        AddRss(cpu, counter, pfns.Length);
        PteUnmapUnlock(cpu, pt);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>do_cow_fault</c>: a write to a private file mapping where nothing is mapped: read the file
    /// page (SIGBUS beyond end of file), copy it into a new anonymous page, and map that writable.
    /// The VMA gets its anon_vma first (<c>vmf_anon_prepare</c>), so even a write that ends in
    /// SIGBUS leaves one behind, and with it a VMA that no longer merges with another's anon_vma.
    /// </summary>
    private FaultOutcome DoCowFault(Cpu cpu, Vma vma, ulong addr, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        ulong index = vma.LinearPageIndex(addr);
        AnonVmaPrepare(vma);
        if (index >= file.PagesInFile)
        {
            return FaultOutcome.Bus;
        }

        if (!ReadAroundIfCold(cpu, vma, file, index))
        {
            return FaultOutcome.Oom;
        }

        long fresh = Phys.AllocFrame(cpu.Id);
        if (fresh < 0)
        {
            return FaultOutcome.Oom;
        }

        long src = FilemapFaultPage(cpu, vma, file, index);
        if (src < 0)
        {
            Phys.PutPage(fresh);
            return FaultOutcome.Oom;
        }

        Phys.Content.Copy(src, fresh);
        Phys.PutPage(src);
        CountPageAllocated(cpu);
        if (LockNoneEntry(cpu, pmdTable, pmdIndex, addr, out var pt) is { } outcome)
        {
            FreeUnusedPage(cpu, fresh);
            return outcome;
        }

        AddRssAnon(cpu, 1);
        PageAddNewAnonRmap(fresh, vma, addr);
        SetPteAt(cpu, pt, Geometry.PteIndex(addr), Entry.MakePte(fresh, writable: true, dirty: true, (vma.Flags & VmFlags.Exec) == 0));
        PteUnmapUnlock(cpu, pt);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// The first half of <c>finish_fault</c>: the PTE table allocated, mapped and locked, and the
    /// entry at <paramref name="addr"/> still none. Returns null when the caller may set the entry
    /// (it then unlocks <paramref name="pt"/>), else the outcome to return, nothing held: OOM, or a
    /// retry because the table went away or another fault set the entry first.
    /// </summary>
    private FaultOutcome? LockNoneEntry(Cpu cpu, long pmdTable, int pmdIndex, ulong addr, out TableRef pt)
    {
        pt = TableRef.None;
        if (!PteAlloc(cpu, pmdTable, pmdIndex))
        {
            return FaultOutcome.Oom;
        }

        pt = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        if (pt.IsNone)
        {
            return FaultOutcome.Ok;
        }

        if (!Entry.IsNone(Volatile.Read(ref Phys.Table(pt)[Geometry.PteIndex(addr)])))
        {
            PteUnmapUnlock(cpu, pt);
            pt = TableRef.None;
            return FaultOutcome.Ok;
        }

        return null;
    }

    /// <summary>
    /// <c>do_shared_fault</c>: a write to a shared mapping where nothing is mapped: get the file page
    /// (allocated for shmem; SIGBUS beyond end of file), dirty it, and map it writable.
    /// </summary>
    private FaultOutcome DoSharedFault(Cpu cpu, Vma vma, ulong addr, long pmdTable, int pmdIndex)
    {
        var file = vma.File!;
        ulong index = vma.LinearPageIndex(addr);
        if (index >= file.PagesInFile)
        {
            return FaultOutcome.Bus;
        }

        if (!ReadAroundIfCold(cpu, vma, file, index))
        {
            return FaultOutcome.Oom;
        }

        long pfn = FilemapFaultPage(cpu, vma, file, index);
        return pfn < 0 ? FaultOutcome.Oom : FinishFault(cpu, vma, addr, pfn, index, write: true, pmdTable, pmdIndex);
    }

    /// <summary>
    /// <c>filemap_fault</c>'s page, with a reference: a read-ahead mark on it (the bit reclaim's
    /// <see cref="PageFlags.Reclaim"/> shares) is cleared by <c>do_async_mmap_readahead</c>
    /// unless the VMA is MADV_RANDOM. Returns -1 when no frame is left.
    /// </summary>
    private long FilemapFaultPage(Cpu cpu, Vma vma, SimFile file, ulong index)
    {
        long pfn = file.GetPage(cpu.Id, index);
        if (pfn >= 0 && (vma.Flags & VmFlags.RandRead) == 0)
        {
            file.ClearReadAhead(pfn, index);
        }

        return pfn;
    }

    /// <summary>A write fault's <c>filemap_fault</c> on a cold page reads the read-around window in too (not for shmem).</summary>
    private static bool ReadAroundIfCold(Cpu cpu, Vma vma, SimFile file, ulong index) =>
        file.IsShmem || file.IsCached(index) || ReadAround(cpu, vma, file, index);

    /// <summary><c>do_sync_mmap_readahead</c> for a fault at <paramref name="index"/> in <paramref name="vma"/>.</summary>
    private static bool ReadAround(Cpu cpu, Vma vma, SimFile file, ulong index) =>
        file.ReadAround(cpu.Id, vma.Ra, index, vma.Flags, vma.PgOff, vma.PgOff + (vma.Length >> PhysMemory.PageShift));

    /// <summary>
    /// <c>wp_page_shared</c>, entered with the PTE lock held: the first write to a page-cache page
    /// mapped read-only for write notification makes the entry writable and dirty in place and
    /// dirties the page. An upgrade needs no TLB flush.
    /// </summary>
    private FaultOutcome WpPageShared(Cpu cpu, TableRef pt, ref ulong slot, ulong entry)
    {
        Interlocked.CompareExchange(ref slot, entry | Entry.Writable | Entry.Dirty | Entry.Accessed, entry);
        Phys.Desc(Entry.Pfn(entry)).SetFlagsAtomic(PageFlags.Dirty);
        PtlUnlock(cpu, pt.Pfn);
        PteUnmap(cpu, pt);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// The entry <c>set_pte_range</c> builds for a page-cache page: young; writable only in a shared
    /// writable mapping, and there only for a write or when the file needs no write notification
    /// (shmem); dirty for a write, or when writable and the page is dirty already.
    /// </summary>
    private ulong FilePte(Vma vma, long pfn, bool write)
    {
        bool sharedWritable = (vma.Flags & (VmFlags.Shared | VmFlags.Write)) == (VmFlags.Shared | VmFlags.Write);
        bool writable = sharedWritable && (write || !vma.File!.WantsWriteNotify);
        bool dirty = write || (writable && (Phys.Desc(pfn).Flags & (int)PageFlags.Dirty) != 0);
        return Entry.MakePte(pfn, writable, dirty, (vma.Flags & VmFlags.Exec) == 0);
    }

    /// <summary>
    /// <c>thp_get_unmapped_area</c> for a regular file (the <c>get_unmapped_area</c> of ext4, xfs
    /// and others): when the file range holds a whole 2 MiB-aligned stretch, ask for 2 MiB more,
    /// at the hint if that padded length fits there (then the hint is taken as it is), else top-down,
    /// and place the mapping so that its addresses and file offsets agree modulo 2 MiB
    /// (<c>__thp_get_unmapped_area</c>), so a file-backed huge page could map it. Otherwise, or when
    /// the padded length does not fit, the plain search for the length: the hint if it fits, else
    /// top-down. Returns 0 when nothing fits.
    /// </summary>
    private ulong FileThpUnmappedArea(ulong hint, ulong len, ulong offset)
    {
        const ulong size = Geometry.PmdSize;
        ulong offEnd = offset + len, offAlign = (offset + size - 1) & ~(size - 1);
        ulong lenPad = len + size;
        if (offEnd > offAlign && offEnd - offAlign >= size && lenPad > len && offset + lenPad > offset)
        {
            ulong ret = HintFits(hint, lenPad) ? hint : UnmappedAreaTopDown(lenPad, 0, 0);
            if (ret == hint && ret != 0)
            {
                return hint;
            }

            if (ret != 0)
            {
                ulong offSub = (offset - ret) & (size - 1);
                return offSub == 0 ? ret + size : ret + offSub; // top-down: the top of the padded area
            }
        }

        return HintFits(hint, len) ? hint : UnmappedAreaTopDown(len, 0, 0);
    }

    /// <summary>
    /// Whether a non-zero hint leaves room for <paramref name="len"/> bytes at it, clear of the next
    /// VMA's stack guard gap (the hint check of <c>arch_get_unmapped_area_topdown</c>).
    /// </summary>
    private bool HintFits(ulong hint, ulong len) =>
        hint != 0 && len <= Geometry.TaskSize && hint <= Geometry.TaskSize - len &&
        (FindVma(hint) is not { } above || hint + len <= VmStartGap(above));

    /// <summary>
    /// Whether mprotect may make a present entry writable at once: in a private mapping only an
    /// exclusive (mapped once), dirty anonymous page (<c>can_change_pte_writable</c>); in a shared
    /// one any page when the file needs no write notification (shmem: <c>vm_page_prot</c> is
    /// writable), else a dirty one.
    /// </summary>
    private bool CanChangePteWritable(Vma vma, ulong entry)
    {
        if (Entry.IsSpecial(entry))
        {
            return false;
        }

        if ((vma.Flags & VmFlags.Shared) != 0)
        {
            return vma.File is { WantsWriteNotify: false } || Entry.IsDirty(entry);
        }

        long pfn = Entry.Pfn(entry);
        return IsAnonPage(pfn) && Entry.IsDirty(entry) && Phys.Desc(pfn).MapCount == 1;
    }

    /// <summary>
    /// <c>madvise(MADV_REMOVE)</c> (<c>madvise_remove</c>): for each VMA of the range, which must be
    /// a shared, writable file mapping (EACCES otherwise; EINVAL for anonymous or locked memory),
    /// punch a hole in the file over the range: the pages leave the page cache and every mapping of
    /// them, in every address space, is zapped; private copies stay. The range reads as zeros
    /// afterwards. <c>mmap_lock</c> is dropped around the punch, as Linux does.
    /// </summary>
    private Errno MadviseRemove(Cpu cpu, ulong start, ulong end)
    {
        Errno unmapped = Errno.None;
        while (start < end)
        {
            SimFile file;
            ulong first, stop;
            MmapLock.DownRead(cpu.Id);
            try
            {
                var vma = FindVma(start);
                if (vma is null || vma.Start >= end)
                {
                    return Errno.ENOMEM;
                }

                if (start < vma.Start)
                {
                    unmapped = Errno.ENOMEM;
                    start = vma.Start;
                }

                ulong tmp = Math.Min(vma.End, end);
                if (MadviseSealRefused(vma, Advice.Remove))
                {
                    return Errno.EPERM;
                }

                if ((vma.Flags & VmFlags.Locked) != 0 || vma.File is null)
                {
                    return Errno.EINVAL;
                }

                if ((vma.Flags & (VmFlags.Shared | VmFlags.MayWrite)) != (VmFlags.Shared | VmFlags.MayWrite))
                {
                    return Errno.EACCES;
                }

                file = vma.File;
                first = vma.LinearPageIndex(start);
                stop = vma.LinearPageIndex(tmp);
                file.Get();
                start = tmp;
            }
            finally
            {
                MmapLock.UpRead(cpu.Id);
            }

            PunchHole(cpu, file, first, stop);
            file.Put();
        }

        return unmapped;
    }

    /// <summary>
    /// <c>fallocate(FALLOC_FL_PUNCH_HOLE)</c> over page indexes [<paramref name="first"/>,
    /// <paramref name="end"/>): the pages leave the cache first (a fault that looked one up before
    /// sees under its PTE lock that it is gone), then <c>unmap_mapping_range</c> zaps them from
    /// every mapping, then the cache's references go.
    /// </summary>
    internal static void PunchHole(Cpu cpu, SimFile file, ulong first, ulong end)
    {
        var removed = file.RemovePages(first, end);
        UnmapMappingRange(cpu, file, first, end);
        file.ReleaseRemoved(removed);
    }

    /// <summary>
    /// Pages [<paramref name="first"/>, +<paramref name="pages"/>) that the host removed from the
    /// page cache of <paramref name="file"/>, as its <c>mm_filemap_delete_from_page_cache</c>
    /// events report: reclaim, a truncation, a hole punched, an invalidation, or a shmem page's
    /// swap-out, by any process. The host unmapped them from every page table first (reclaim's
    /// <c>try_to_unmap</c>, <c>unmap_mapping_range</c> without <c>even_cows</c>; neither frees a
    /// table), so the model does the same where one of them is mapped, then drops them: a shmem
    /// file's pages whatever they are (its folios are single pages), a regular file's as
    /// <see cref="SimFile.Invalidate"/> does. Returns the pages kept: part of a large folio of the
    /// model's that reaches outside the range, or held otherwise.
    /// </summary>
    public static long RemovePagesTheHostRemoved(Cpu cpu, SimFile file, ulong first, ulong pages)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentNullException.ThrowIfNull(file);
        ulong end = first + pages < first ? ulong.MaxValue : first + pages;
        if (!file.IsShmem)
        {
            if (file.AnyMappedIn(first, end))
            {
                UnmapMappingRange(cpu, file, first, end); // most such pages are mapped nowhere: no walk of the mappings then
            }

            return file.Invalidate(first, pages).Kept;
        }

        var removed = file.RemoveShmemPagesIn(first, end);
        if (removed.Exists(file.IsMapped))
        {
            UnmapMappingRange(cpu, file, first, end);
        }

        file.ReleaseRemoved(removed);
        return 0;
    }

    /// <summary>
    /// <c>unmap_mapping_range</c> with <c>even_cows</c> false: in every address space mapping
    /// <paramref name="file"/>, zap the page-cache pages of indexes [<paramref name="first"/>,
    /// <paramref name="end"/>), each address space under its own <c>mmap_lock</c>. Address spaces
    /// that start mapping the file meanwhile (fork) are found by looking again until none is new.
    /// </summary>
    internal static void UnmapMappingRange(Cpu cpu, SimFile file, ulong first, ulong end)
    {
        var done = new List<MmStruct>();
        var todo = new List<MmStruct>();
        while (true)
        {
            todo.Clear();
            file.AddMappingAddressSpaces(todo, done);
            if (todo.Count == 0)
            {
                return;
            }

            foreach (var mm in todo)
            {
                mm.ZapFileRange(cpu, file, first, end);
                done.Add(mm);
            }
        }
    }

    /// <summary>Zaps, in this address space, the page-cache pages of <paramref name="file"/> with indexes in [<paramref name="first"/>, <paramref name="end"/>).</summary>
    private void ZapFileRange(Cpu cpu, SimFile file, ulong first, ulong end)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            if (_dead)
            {
                return;
            }

            // The file's i_mmap holds the VMAs that map it: those of this address space cannot
            // change while its mmap_lock is held, so they are taken from there, not found among
            // all of its VMAs.
            var vmas = new List<Vma>();
            file.AddMappingsOf(this, first, end, vmas);
            if (vmas.Count == 0)
            {
                return;
            }

            var tlb = new MmuGather(this, cpu);
            foreach (var vma in vmas)
            {
                ulong pages = vma.Length >> PhysMemory.PageShift;
                ulong lo = Math.Max(first, vma.PgOff), hi = Math.Min(end, vma.PgOff + pages);
                if (lo < hi)
                {
                    UnmapPageRange(cpu, tlb, vma, vma.Start + ((lo - vma.PgOff) << PhysMemory.PageShift),
                        vma.Start + ((hi - vma.PgOff) << PhysMemory.PageShift), ZapReason.Truncate);
                }
            }

            tlb.Finish();
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }
}
