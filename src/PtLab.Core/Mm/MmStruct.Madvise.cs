using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/madvise.c: madvise and madvise_free_pte_range.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>madvise(addr, length, advice)</c>. DONTNEED and FREE take <c>mmap_lock</c> for read, as
    /// Linux does; a hole in the range gives ENOMEM after the mapped parts were advised.
    /// </summary>
    public Errno Madvise(Cpu cpu, ulong addr, ulong length, Advice advice)
    {
        bool zap = advice is Advice.DontNeed or Advice.DontNeedLocked;
        bool free = advice == Advice.Free;
        bool ptReclaim = advice == Advice.PtReclaim && Design is IExplicitTableReclaim;
        bool noop = advice is Advice.Normal or Advice.Random or Advice.Sequential or Advice.WillNeed
            or Advice.HugePage or Advice.NoHugePage or Advice.DontDump or Advice.DoDump or Advice.Cold or Advice.PageOut;
        if (!zap && !free && !noop && !ptReclaim)
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

        MmapLock.DownRead(cpu.Id);
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

                        MadviseFreeRange(cpu, tlb, start, tmp);
                    }
                    else if (ptReclaim)
                    {
                        MadvisePtReclaimRange(cpu, tlb, start, tmp);
                    }

                    start = tmp;
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
            MmapLock.UpRead(cpu.Id);
            Rcu.Poll(); // let deferred table frees run, as the RCU softirq would soon after
        }
    }

    /// <summary>
    /// MADV_PT_RECLAIM over [start, end) of one VMA: offers each PTE table whose whole 2 MiB lies in
    /// the range to the design, which frees it if it would free it now.
    /// </summary>
    private void MadvisePtReclaimRange(Cpu cpu, MmuGather tlb, ulong start, ulong end)
    {
        MmapLock.AssertHeld(cpu.Id);
        var design = (IExplicitTableReclaim)Design;
        for (ulong addr = (start + Geometry.PmdSize - 1) & Geometry.PmdMask; addr < end && end - addr >= Geometry.PmdSize; addr += Geometry.PmdSize)
        {
            long pmdTable = PmdTableOf(addr);
            if (pmdTable >= 0)
            {
                design.ReclaimPteTable(this, cpu, pmdTable, Geometry.Index(addr, 2), tlb);
            }
        }
    }

    /// <summary>
    /// <c>madvise_free_pte_range</c>: for each exclusive anonymous page, clear the dirty and young
    /// bits in the entry and the page, and mark the page lazy-free (clear PG_swapbacked). Reclaim may
    /// then discard it unless it is written again first; swap entries in the range are dropped.
    /// </summary>
    private void MadviseFreeRange(Cpu cpu, MmuGather tlb, ulong start, ulong end)
    {
        MmapLock.AssertHeld(cpu.Id);
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
            var pteTable = Design.PteOffsetMapLock(this, cpu, pmdTable, pmdIndex);
            if (!pteTable.IsNone)
            {
                var entries = Phys.Table(pteTable);
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
                        PteClear(cpu, pteTable, i);
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
                    if (Volatile.Read(ref d.MapCount) != 1)
                    {
                        continue;
                    }

                    Interlocked.And(ref d.Flags, ~(int)PageFlags.Dirty);
                    if (Entry.IsYoung(e) || Entry.IsDirty(e))
                    {
                        ulong old = PtepGetAndClear(cpu, pteTable, i);
                        SetPteAt(cpu, pteTable, i, Entry.MkOld(Entry.MkClean(old)));
                        tlb.RemoveTlbEntry(va);
                    }

                    // folio_mark_lazyfree: off the anon LRU, onto the file LRU, no longer swap-backed.
                    if ((Interlocked.And(ref d.Flags, ~(int)PageFlags.SwapBacked) & (int)PageFlags.SwapBacked) != 0)
                    {
                        Phys.Lru.Move(pfn, LruList.File);
                    }

                    markedLazyFree = true;
                }

                Design.PteUnmapUnlock(this, cpu, pteTable);
                AddSwapEnts(cpu, -swapFreed);
                Design.AfterMadvFreePteTable(this, cpu, pmdTable, pmdIndex, markedLazyFree);
            }

            addr = next;
        }
    }
}
