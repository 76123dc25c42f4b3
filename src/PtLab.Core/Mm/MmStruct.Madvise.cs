using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/madvise.c: madvise and madvise_free_pte_range.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>madvise(addr, length, advice)</c>. DONTNEED and FREE take <c>mmap_lock</c> for read, as
    /// Linux does, and the advices that change VMA flags (NORMAL, RANDOM, SEQUENTIAL, DONTDUMP,
    /// DODUMP, HUGEPAGE, NOHUGEPAGE) take it for write; a hole in the range gives ENOMEM after the
    /// mapped parts were advised. POPULATE_READ/WRITE fault the range in (<c>madvise_populate</c>).
    /// </summary>
    public Errno Madvise(Cpu cpu, ulong addr, ulong length, Advice advice)
    {
        bool zap = advice is Advice.DontNeed or Advice.DontNeedLocked;
        bool free = advice == Advice.Free;
        bool populate = advice is Advice.PopulateRead or Advice.PopulateWrite;
        bool updatesFlags = MadviseNewFlags(advice, VmFlags.None) is not null;
        bool noop = advice is Advice.WillNeed or Advice.Cold or Advice.PageOut;
        if (!zap && !free && !populate && !updatesFlags && !noop)
        {
            return Errno.EINVAL; // not a valid advice, or one this model does not implement (REMOVE needs shared memory)
        }

        if ((addr & ~Geometry.PageMask) != 0)
        {
            return Errno.EINVAL;
        }

        ulong len = PageAlign(length);
        if (length != 0 && len == 0)
        {
            return Errno.EINVAL;
        }

        ulong end = addr + len;
        if (end < addr)
        {
            return Errno.EINVAL;
        }

        if (end == addr)
        {
            return Errno.None;
        }

        if (populate)
        {
            return MadvisePopulate(cpu, addr, end, advice == Advice.PopulateWrite);
        }

        if (updatesFlags)
        {
            MmapLock.DownWrite(cpu.Id);
        }
        else
        {
            MmapLock.DownRead(cpu.Id);
        }

        try
        {
            Errno unmapped = Errno.None;
            ulong start = addr;
            var tlb = new MmuGather(this, cpu);
            try
            {
                while (true)
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
                    if (zap)
                    {
                        if ((vma.Flags & VmFlags.Locked) != 0 && advice != Advice.DontNeedLocked)
                        {
                            return Errno.EINVAL; // can_madv_lru_vma
                        }

                        UnmapPageRange(cpu, tlb, vma, start, tmp, ZapReason.DontNeed);
                    }
                    else if (free)
                    {
                        if ((vma.Flags & VmFlags.Locked) != 0)
                        {
                            return Errno.EINVAL;
                        }

                        MadviseFreeRange(cpu, tlb, vma, start, tmp);
                    }
                    else if (updatesFlags && MadviseNewFlags(advice, vma.Flags) is { } newFlags && newFlags != vma.Flags)
                    {
                        // madvise_update_vma: split and merge as any flag change does.
                        vma = VmaModifyFlags(cpu, vma, start, tmp, newFlags);
                    }

                    start = Math.Max(tmp, vma.End);
                    if (start >= end)
                    {
                        return unmapped;
                    }
                }
            }
            finally
            {
                tlb.Finish();
            }
        }
        finally
        {
            if (updatesFlags)
            {
                MmapLock.UpWrite(cpu.Id);
            }
            else
            {
                MmapLock.UpRead(cpu.Id);
            }

            Rcu.Poll(); // let deferred table frees run, as the RCU softirq would soon after
        }
    }

    /// <summary>
    /// The VMA flags an advice sets in <c>madvise_vma_behavior</c> (and <c>hugepage_madvise</c>),
    /// or null for an advice that sets none.
    /// </summary>
    private static VmFlags? MadviseNewFlags(Advice advice, VmFlags flags) => advice switch
    {
        Advice.Normal => flags & ~(VmFlags.RandRead | VmFlags.SeqRead),
        Advice.Sequential => (flags & ~VmFlags.RandRead) | VmFlags.SeqRead,
        Advice.Random => (flags & ~VmFlags.SeqRead) | VmFlags.RandRead,
        Advice.DontDump => flags | VmFlags.DontDump,
        Advice.DoDump => flags & ~VmFlags.DontDump,
        Advice.HugePage => (flags & ~VmFlags.NoHugePage) | VmFlags.HugePage,
        Advice.NoHugePage => (flags & ~VmFlags.HugePage) | VmFlags.NoHugePage,
        _ => null,
    };

    /// <summary>
    /// <c>madvise_populate</c>: faults [start, end) in as reads or writes would, under
    /// <c>mmap_lock</c> for read, with no user fault. A hole or a missing VMA gives ENOMEM, a VMA
    /// that refuses the access EINVAL, a fault that fails EFAULT (or ENOMEM without memory),
    /// each after the pages before it were populated.
    /// </summary>
    private Errno MadvisePopulate(Cpu cpu, ulong start, ulong end, bool write)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            while (start < end)
            {
                long pages = FaultinPageRange(cpu, start, end, write);
                if (pages < 0)
                {
                    return (Errno)(-pages);
                }

                start += (ulong)pages << PhysMemory.PageShift;
            }

            return Errno.None;
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <c>madvise_free_pte_range</c>: for each exclusive anonymous page, clear the dirty and young
    /// bits in the entry and the page, and mark the page lazy-free (clear PG_swapbacked). Reclaim may
    /// then discard it unless it is written again first; swap entries in the range are dropped.
    /// </summary>
    private void MadviseFreeRange(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end)
    {
        for (ulong addr = start; addr < end;)
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            long pmdTable = PmdTableOf(addr);
            if (pmdTable < 0)
            {
                addr = Geometry.PudAddrEnd(addr, end);
                continue;
            }

            int pmdIndex = Geometry.Index(addr, 2);
            if (Entry.IsHuge(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])) &&
                MadviseFreeHugePmd(cpu, tlb, vma, pmdTable, pmdIndex, addr, next))
            {
                addr = next;
                continue;
            }

            var pt = Design.PteOffsetMapLock(this, cpu, pmdTable, pmdIndex);
            if (!pt.IsNone)
            {
                var entries = Phys.Table(pt);
                long swapFreed = 0;
                bool markedLazyFree = false;
                for (ulong va = addr; va < next; va += Geometry.PageSize)
                {
                    int i = Geometry.PteIndex(va);
                    ulong e = Volatile.Read(ref entries[i]);
                    if (Entry.IsNone(e))
                    {
                        continue;
                    }

                    if (!Entry.IsPresent(e))
                    {
                        PteClear(cpu, pt, i);
                        FreeSwapEntry(e);
                        swapFreed++;
                        continue;
                    }

                    if (Entry.IsSpecial(e))
                    {
                        continue; // vm_normal_page() is NULL for the zero page
                    }

                    long pfn = Entry.Pfn(e);
                    ref var d = ref Phys.Desc(pfn);
                    if (Volatile.Read(ref d.MapCount) != 1 || Phys.IsHugeFrame(pfn))
                    {
                        continue; // shared, or part of a PTE-mapped huge page (which the kernel would split first)
                    }

                    Interlocked.And(ref d.Flags, ~(int)PageFlags.Dirty);
                    if (Entry.IsYoung(e) || Entry.IsDirty(e))
                    {
                        ulong old = PtepGetAndClear(cpu, pt, i);
                        SetPteAt(cpu, pt, i, Entry.MkOld(Entry.MkClean(old)));
                        tlb.RemoveTlbEntry(va);
                    }

                    // folio_mark_lazyfree: off the anon LRU, onto the file LRU, no longer swap-backed.
                    if ((Interlocked.And(ref d.Flags, ~(int)PageFlags.SwapBacked) & (int)PageFlags.SwapBacked) != 0)
                    {
                        Phys.Lru.Move(pfn, LruList.File);
                    }

                    markedLazyFree = true;
                }

                Design.PteUnmapUnlock(this, cpu, pt);
                AddSwapEnts(cpu, -swapFreed);
                Design.AfterMadvFreePteTable(this, cpu, pmdTable, pmdIndex, markedLazyFree);
            }

            addr = next;
        }
    }
}
