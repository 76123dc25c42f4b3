using PtLab.Paging;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary>
    /// <c>get_user_pages</c> (the slow path): under <c>mmap_lock</c> for read, look each page up with
    /// <c>follow_page_pte</c> through the design's <c>pte_offset_map_lock</c>, faulting it in when it
    /// is missing or not writable enough, and take a page reference on each. Returns the number of
    /// pages pinned, or a negative errno (EFAULT for an address nothing maps or the VMA refuses).
    /// The caller drops each reference with <see cref="PutUserPages"/>.
    /// </summary>
    public long GetUserPages(Cpu cpu, ulong start, int nrPages, bool write, Span<long> pages)
    {
        if ((start & ~Geometry.PageMask) != 0 || nrPages < 0 || pages.Length < nrPages)
        {
            return -(long)Errno.EINVAL;
        }

        MmapLock.DownRead(cpu.Id);
        try
        {
            for (int i = 0; i < nrPages; i++)
            {
                ulong va = start + ((ulong)i * Geometry.PageSize);
                var vma = FindVma(va);
                if (vma is null || va < vma.Start || PkeyDeniesData(vma) || !AccessAllowed(vma, write))
                {
                    return i > 0 ? i : -(long)Errno.EFAULT;
                }

                while (true)
                {
                    long pfn = FollowPage(cpu, va, write, takeReference: true);
                    if (pfn >= 0)
                    {
                        pages[i] = pfn;
                        break;
                    }

                    // faultin_page: let the fault handler make it present (and writable), then look again.
                    // vm_fault_to_errno: no memory is ENOMEM; SIGSEGV (a guard marker) or SIGBUS is EFAULT.
                    var outcome = HandleMmFault(cpu, vma, va, write);
                    if (outcome != FaultOutcome.Ok)
                    {
                        return i > 0 ? i : -(long)(outcome == FaultOutcome.Oom ? Errno.ENOMEM : Errno.EFAULT);
                    }

                    // cond_resched(): a racing table free may need another CPU to finish first.
                    Machine.Sync.Scheduler?.Reached(PtLab.Sync.SchedulingPointKind.Wait, this);
                }
            }

            return nrPages;
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <c>follow_page_mask</c>: the page mapped at <paramref name="va"/>, or -1 when there is none
    /// (or it is not writable for a write); with <paramref name="takeReference"/> a reference is
    /// taken on it. A huge pmd is read under the pmd lock (<c>follow_huge_pmd</c>), a PTE table
    /// mapped like every visitor maps it (<c>follow_page_pte</c>).
    /// </summary>
    private long FollowPage(Cpu cpu, ulong va, bool write, bool takeReference)
    {
        long pmdTable = PmdTableOf(va);
        if (pmdTable < 0)
        {
            return -1;
        }

        int pmdIndex = Geometry.Index(va, 2);
        if (PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong pmd))
        {
            try
            {
                if (!Entry.IsHwPresent(pmd) || (write && !Entry.IsWritable(pmd)))
                {
                    return -1;
                }

                long sub = Entry.Pfn(pmd) + Geometry.PteIndex(va);
                if (takeReference)
                {
                    Phys.GetPage(sub); // the folio's reference; the huge zero page is reserved
                }

                return sub;
            }
            finally
            {
                PmdUnlock(cpu, pmdTable);
            }
        }

        var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        if (pteTable.IsNone)
        {
            return -1;
        }

        try
        {
            ulong e = Volatile.Read(ref Phys.Table(pteTable)[Geometry.PteIndex(va)]);
            if (!Entry.IsHwPresent(e) || (write && !Entry.IsWritable(e)))
            {
                return -1;
            }

            long pfn = Entry.Pfn(e);
            if (takeReference)
            {
                Phys.GetPage(pfn); // the zero page is reserved: no reference needed
            }

            return pfn;
        }
        finally
        {
            PteUnmapUnlock(cpu, pteTable);
        }
    }

    /// <summary>
    /// <c>get_user_pages_fast</c>: walks the tables locklessly in an RCU read section (the model of
    /// the IRQs-off window that holds off both the TLB-shootdown IPI and the RCU table free), takes
    /// no table reference, grabs each page with a reference only if it is not being freed, and
    /// rechecks the pmd and PTE after the grab. Pages it cannot take this way go through
    /// <see cref="GetUserPages"/>. Returns pages pinned or a negative errno.
    /// </summary>
    public long GetUserPagesFast(Cpu cpu, ulong start, int nrPages, bool write, Span<long> pages)
    {
        if ((start & ~Geometry.PageMask) != 0 || nrPages < 0 || pages.Length < nrPages)
        {
            return -(long)Errno.EINVAL;
        }

        int got = 0;
        Rcu.ReadLock(cpu.Id);
        try
        {
            for (; got < nrPages; got++)
            {
                long pfn = GupFastPte(start + ((ulong)got * Geometry.PageSize), write);
                if (pfn < 0)
                {
                    break;
                }

                pages[got] = pfn;
            }
        }
        finally
        {
            Rcu.ReadUnlock(cpu.Id);
        }

        Interlocked.Add(ref _gupFastPages, got);
        if (got == nrPages)
        {
            return got;
        }

        long rest = GetUserPages(cpu, start + ((ulong)got * Geometry.PageSize), nrPages - got, write, pages[got..]);
        return rest < 0 ? (got > 0 ? got : rest) : got + rest;
    }

    private long _gupFastPages;

    /// <summary>Pages <see cref="GetUserPagesFast"/> pinned without falling back.</summary>
    public long GupFastPages => Volatile.Read(ref _gupFastPages);

    /// <summary><c>gup_fast_pte_range</c> for one page, inside the caller's RCU read section.</summary>
    private long GupFastPte(ulong va, bool write)
    {
        ulong pgde = Volatile.Read(ref Phys.Table(PgdPfn)[Geometry.Index(va, 4)]);
        if (!Entry.IsHwPresent(pgde))
        {
            return -1;
        }

        ulong pude = Volatile.Read(ref Phys.Table(Entry.Pfn(pgde))[Geometry.Index(va, 3)]);
        if (!Entry.IsHwPresent(pude) || Entry.IsHuge(pude))
        {
            return -1;
        }

        // A design that frees empty PMD tables may unhook this one right after the read above; it
        // frees it only after a grace period, so reading it stays safe, and it reads all none.
        // The reference carries the table's generation, so a read of it once freed and reused is caught.
        var pmdTable = Phys.Ref(Entry.Pfn(pude));
        Machine.Sync.Scheduler?.Reached(PtLab.Sync.SchedulingPointKind.EntryLoad, pmdTable.Pfn);
        ref ulong pmdSlot = ref Phys.Table(pmdTable)[Geometry.Index(va, 2)];
        ulong pmd = Volatile.Read(ref pmdSlot);
        if (!Entry.IsHwPresent(pmd))
        {
            return -1;
        }

        if (Entry.IsHuge(pmd))
        {
            return GupFastPmdLeaf(ref pmdSlot, pmd, va, write);
        }

        // The table may be unhooked right after this read, but it cannot be freed before this RCU
        // section ends, so reading its entries stays safe.
        Machine.Sync.Scheduler?.Reached(PtLab.Sync.SchedulingPointKind.EntryLoad, Entry.Pfn(pmd));
        ref ulong slot = ref Phys.Table(Entry.Pfn(pmd))[Geometry.PteIndex(va)];
        ulong pte = Volatile.Read(ref slot);
        if (!Entry.IsHwPresent(pte) || (pte & Entry.User) == 0 || Entry.IsSpecial(pte) || (write && !Entry.IsWritable(pte)))
        {
            return -1; // special mappings (the zero page) go the slow way, as in the kernel
        }

        long pfn = Entry.Pfn(pte);
        if (!Phys.TryGetPage(pfn))
        {
            return -1; // being freed
        }

        // Recheck: if the pmd or the entry changed, the table or the page may be on its way out.
        // The entry's storage is rechecked too: a PTE table gives back a group of entries that all
        // went none, and another table may have taken it since the read. The pmd is read again
        // through the PMD table's reference: that table, too, is freed only after this section.
        if (Volatile.Read(ref Phys.Table(pmdTable)[Geometry.Index(va, 2)]) != pmd || Volatile.Read(ref slot) != pte || !Phys.SameEntry(Entry.Pfn(pmd), Geometry.PteIndex(va), ref slot))
        {
            Phys.PutPage(pfn);
            return -1;
        }

        return pfn;
    }

    /// <summary>
    /// <c>gup_fast_pmd_leaf</c>: the sub-page of a huge page, grabbed through its folio's
    /// reference and kept only if the pmd did not change meanwhile. The huge zero page goes the
    /// slow way, as the small one does.
    /// </summary>
    private long GupFastPmdLeaf(ref ulong pmdSlot, ulong pmd, ulong va, bool write)
    {
        if ((pmd & Entry.User) == 0 || (write && !Entry.IsWritable(pmd)) || Entry.Pfn(pmd) == Phys.HugeZeroPfn)
        {
            return -1;
        }

        long sub = Entry.Pfn(pmd) + Geometry.PteIndex(va);
        if (!Phys.TryGetPage(sub))
        {
            return -1;
        }

        if (Volatile.Read(ref pmdSlot) != pmd)
        {
            Phys.PutPage(sub);
            return -1;
        }

        return sub;
    }

    /// <summary><c>unpin_user_pages</c>/<c>put_page</c> on pages returned by GUP.</summary>
    public void PutUserPages(Cpu cpu, ReadOnlySpan<long> pages) => CountPageFreed(cpu, Phys.PutPages(pages));
}
