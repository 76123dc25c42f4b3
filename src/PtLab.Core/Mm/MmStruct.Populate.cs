using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/gup.c: __mm_populate, populate_vma_page_range and faultin_page_range, the paths by which
// MAP_POPULATE, MAP_LOCKED, mlock and MADV_POPULATE_(READ|WRITE) make tables and pages appear
// without a single user fault.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>__mm_populate</c>: faults in [start, end), VMA by VMA, under <c>mmap_lock</c> for read;
    /// holes between VMAs are skipped. With <paramref name="ignoreErrors"/> (mmap's populate,
    /// mlockall) a VMA that fails is left and the next one tried; otherwise the first error
    /// (EFAULT or ENOMEM) is returned.
    /// </summary>
    internal Errno MmPopulate(Cpu cpu, ulong start, ulong end, bool ignoreErrors)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            for (ulong nstart = start, nend; nstart < end; nstart = nend)
            {
                var vma = FindVma(nstart);
                if (vma is null || vma.Start >= end)
                {
                    break;
                }

                nend = Math.Min(end, vma.End);
                if ((vma.Flags & (VmFlags.Io | VmFlags.PfnMap)) != 0)
                {
                    continue; // nothing to fault in where the entries are raw frame numbers (the vvar pages)
                }

                nstart = Math.Max(nstart, vma.Start);
                long ret = PopulateVmaPageRange(cpu, vma, nstart, nend);
                if (ret < 0)
                {
                    if (ignoreErrors)
                    {
                        continue;
                    }

                    return (Errno)(-ret);
                }

                nend = nstart + ((ulong)ret << PhysMemory.PageShift);
            }

            return Errno.None;
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// Rebuilds pages a live process was found to have (an attached recording's resident ranges):
    /// the range's pages are faulted in VMA by VMA as get_user_pages would, a write fault where an
    /// anonymous page was found in a writable private VMA, a read fault elsewhere (file pages, the
    /// zero page, and anonymous pages of VMAs no longer writable, which get the page a read finds:
    /// the same tables, another RSS counter). VM_IO/VM_PFNMAP and PROT_NONE VMAs are left alone.
    /// Returns the pages faulted in and the pages left (no VMA there, or one left alone).
    /// </summary>
    public (long Done, long Left) PopulateFound(Cpu cpu, ulong start, ulong end, bool anonymous)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        start &= Geometry.PageMask;
        long done = 0, total = (long)((end - start + Geometry.PageSize - 1) >> PhysMemory.PageShift);
        MmapLock.DownRead(cpu.Id);
        try
        {
            for (ulong at = start; at < end;)
            {
                var vma = FindVma(at);
                if (vma is null || vma.Start >= end)
                {
                    break;
                }

                ulong s = Math.Max(at, vma.Start), e = Math.Min(end, vma.End);
                at = e;
                if ((vma.Flags & (VmFlags.Io | VmFlags.PfnMap)) != 0 || (vma.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0)
                {
                    continue;
                }

                bool write = anonymous && (vma.Flags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
                long n = FaultInPages(cpu, vma, s, e, write);
                if (n > 0)
                {
                    done += n;
                }
            }

            return (done, total - done);
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// Makes the PTE tables a live process was found to have where it had no page (an attached
    /// recording's empty tables): for each 2 MiB block of [start, end) under a VMA whose pmd entry
    /// is none, the tables down to it are allocated as a fault would (<c>__pte_alloc</c>), and
    /// left empty. A block with a table or a huge page already is left as it is. With
    /// <paramref name="make"/> false the blocks are only counted, and no table is made (nor any
    /// upper table: a block without one counts as found). Returns the tables found empty (made, or
    /// counted) and the blocks left for want of a VMA (or of memory).
    /// </summary>
    public (long Found, long Left) MakeFoundPteTables(Cpu cpu, ulong start, ulong end, bool make = true)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        long made = 0, left = 0;
        MmapLock.DownRead(cpu.Id);
        try
        {
            for (ulong block = start & Geometry.PmdMask; block < end; block += Geometry.PmdSize)
            {
                ulong at = Math.Max(block, start);
                var vma = FindVma(at);
                if (vma is null || vma.Start >= Math.Min(end, block + Geometry.PmdSize))
                {
                    left++;
                    continue;
                }

                if (!make)
                {
                    long pmdOf = PmdTableOf(at);
                    if (pmdOf < 0 || Entry.IsNone(Volatile.Read(ref Phys.Table(pmdOf)[Geometry.Index(at, 2)])))
                    {
                        made++;
                    }

                    continue;
                }

                long pud = PudAlloc(cpu, at);
                long pmdTable = pud < 0 ? -1 : PmdAlloc(cpu, pud, at);
                if (pmdTable < 0)
                {
                    left++;
                    continue;
                }

                int pmdIndex = Geometry.Index(at, 2);
                if (Entry.IsNone(Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex)))
                {
                    if (!PteAlloc(cpu, pmdTable, pmdIndex))
                    {
                        left++;
                        continue;
                    }

                    made++;
                }
            }

            return (made, left);
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <c>populate_vma_page_range</c>: a write fault for each page of a writable private VMA (to
    /// break COW), a read fault otherwise, forced past a missing PROT_READ unless the VMA is
    /// PROT_NONE. A VM_LOCKONFAULT VMA is left to its faults. Returns pages done or -errno.
    /// </summary>
    private long PopulateVmaPageRange(Cpu cpu, Vma vma, ulong start, ulong end)
    {
        long pages = (long)((end - start) >> PhysMemory.PageShift);
        if ((vma.Flags & VmFlags.LockOnFault) != 0)
        {
            return pages;
        }

        bool write = (vma.Flags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
        bool force = (vma.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) != 0; // vma_is_accessible
        if (CheckVmaFlags(vma, write, force) != Errno.None)
        {
            return -(long)Errno.EFAULT;
        }

        return FaultInPages(cpu, vma, start, end, write);
    }

    /// <summary>
    /// <c>faultin_page_range</c> for <c>madvise(MADV_POPULATE_READ|WRITE)</c>: every page must lie
    /// in a VMA that allows the access without force. Returns pages done, or -ENOMEM (no VMA, or
    /// no memory), -EINVAL (the VMA refuses the access) or -EFAULT (the fault failed), the error
    /// only when no page was done.
    /// </summary>
    private long FaultinPageRange(Cpu cpu, ulong start, ulong end, bool write)
    {
        long done = 0;
        for (ulong va = start; va < end;)
        {
            var vma = VmaLookup(va);
            long ret = vma is null ? -(long)Errno.ENOMEM
                : CheckVmaFlags(vma, write, force: false) != Errno.None ? -(long)Errno.EINVAL
                : FaultInPages(cpu, vma, va, Math.Min(end, vma.End), write);
            if (ret < 0)
            {
                return done > 0 ? done : ret;
            }

            done += ret;
            va += (ulong)ret << PhysMemory.PageShift;
            if (va < Math.Min(end, vma!.End))
            {
                return done; // stopped at a page that failed: the next call reports it
            }
        }

        return done;
    }

    /// <summary>
    /// <c>check_vma_flags</c>: GUP refuses a <c>VM_IO</c> or <c>VM_PFNMAP</c> VMA (the vvar pages)
    /// outright; a write needs VM_WRITE (or force on a COW mapping), a read needs VM_READ (or force
    /// and VM_MAYREAD), and the protection key must allow the data access (<see cref="PkeyDeniesData"/>).
    /// </summary>
    private static Errno CheckVmaFlags(Vma vma, bool write, bool force)
    {
        if ((vma.Flags & (VmFlags.Io | VmFlags.PfnMap)) != 0)
        {
            return Errno.EFAULT;
        }

        if (write)
        {
            if ((vma.Flags & VmFlags.Write) == 0 && (!force || (vma.Flags & (VmFlags.Shared | VmFlags.MayWrite)) != VmFlags.MayWrite))
            {
                return Errno.EFAULT;
            }
        }
        else if ((vma.Flags & VmFlags.Read) == 0 && (!force || (vma.Flags & VmFlags.MayRead) == 0))
        {
            return Errno.EFAULT;
        }

        // gups are data accesses: even forced, they obey the VMA's protection key.
        return PkeyDeniesData(vma) ? Errno.EFAULT : Errno.None;
    }

    /// <summary>
    /// The <c>__get_user_pages</c> loop without pages to return: for each page of [start, end)
    /// inside <paramref name="vma"/>, fault it in unless it is already mapped (writable for a
    /// write). Returns pages done, or -ENOMEM / -EFAULT when the first one fails.
    /// </summary>
    private long FaultInPages(Cpu cpu, Vma vma, ulong start, ulong end, bool write)
    {
        long done = 0;
        for (ulong va = start; va < end; va += Geometry.PageSize, done++)
        {
            while (FollowPage(cpu, va, write, takeReference: false) < 0)
            {
                var outcome = HandleMmFault(cpu, vma, va, write);
                if (outcome != FaultOutcome.Ok)
                {
                    return done > 0 ? done : -(long)(outcome == FaultOutcome.Oom ? Errno.ENOMEM : Errno.EFAULT);
                }

                Machine.Sync.Scheduler?.Reached(PtLab.Sync.SchedulingPointKind.Wait, this);
            }
        }

        return done;
    }

    /// <summary>
    /// Calls <paramref name="onPage"/> with each page mapped in [start, end): every normal page of
    /// a PTE table (not the zero page), and the head of a huge page a PMD maps (once per 4 KiB it
    /// maps). Caller holds <c>mmap_lock</c>; tables are visited as the page walker visits them.
    /// </summary>
    private void ForEachMappedPage(Cpu cpu, ulong start, ulong end, Action<long> onPage) =>
        WalkPageRangeLocked(cpu, start, end, p =>
        {
            if (Entry.IsPresent(p.Entry) && !Entry.IsSpecial(p.Entry))
            {
                onPage(p.MappedByPmd ? Phys.CompoundHead(Entry.Pfn(p.Entry)) : Entry.Pfn(p.Entry));
            }
        }, skipHoles: true);
}
