using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/madvise.c: madvise and madvise_free_pte_range.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>madvise(addr, length, advice)</c>. DONTNEED and FREE take <c>mmap_lock</c> for read, as
    /// Linux does; a hole in the range gives ENOMEM after the mapped parts were advised.
    /// POPULATE_READ/WRITE fault the range in (<c>madvise_populate</c>); COLLAPSE maps huge pages
    /// (<c>madvise_collapse</c>, MmStruct.Khugepaged.cs); GUARD_INSTALL/REMOVE store and clear guard
    /// markers (MmStruct.Guard.cs).
    /// </summary>
    public Errno Madvise(Cpu cpu, ulong addr, ulong length, Advice advice)
    {
        bool zap = advice is Advice.DontNeed or Advice.DontNeedLocked;
        bool free = advice == Advice.Free;
        bool setsFlags = advice is Advice.Normal or Advice.Random or Advice.Sequential
            or Advice.HugePage or Advice.NoHugePage or Advice.DontDump or Advice.DoDump
            or Advice.DontFork or Advice.DoFork or Advice.WipeOnFork or Advice.KeepOnFork
            or Advice.Mergeable or Advice.Unmergeable;
        bool noop = advice == Advice.WillNeed;
        bool coldOrPageout = advice is Advice.Cold or Advice.PageOut;
        bool remove = advice == Advice.Remove;
        bool ptReclaim = advice == Advice.PtReclaim && Design is IExplicitTableReclaim;
        bool populate = advice is Advice.PopulateRead or Advice.PopulateWrite;
        bool collapse = advice == Advice.Collapse;
        bool guard = advice is Advice.GuardInstall or Advice.GuardRemove;
        if (!zap && !free && !setsFlags && !noop && !remove && !coldOrPageout && !ptReclaim && !populate && !collapse && !guard)
        {
            return Errno.EINVAL; // not a valid advice, or one this model does not implement
        }

        var bad = CheckPageRange(addr, length, out ulong end);
        if (bad != Errno.None || end == addr)
        {
            return bad; // an empty range succeeds at once
        }

        if (setsFlags)
        {
            return MadviseUpdateFlags(cpu, addr, end, advice);
        }

        if (populate)
        {
            return MadvisePopulate(cpu, addr, end, advice == Advice.PopulateWrite);
        }

        if (remove)
        {
            return MadviseRemove(cpu, addr, end);
        }

        if (collapse)
        {
            return MadviseCollapse(cpu, addr, end);
        }

        MmapLock.DownRead(cpu.Id);
        try
        {
            var tlb = new MmuGather(this, cpu);
            try
            {
                return MadviseWalkVmas(addr, end, advice, (vma, start, tmp) =>
                {
                    if (advice is Advice.Cold or Advice.PageOut && (vma.Flags & (VmFlags.Locked | VmFlags.PfnMap)) != 0)
                    {
                        return Errno.EINVAL; // can_madv_lru_vma: locked pages stay off the reclaim lists
                    }

                    if (guard)
                    {
                        return advice == Advice.GuardInstall ? MadviseGuardInstall(cpu, vma, start, tmp) : MadviseGuardRemove(cpu, vma, start, tmp);
                    }

                    if (zap)
                    {
                        if ((vma.Flags & VmFlags.PfnMap) != 0 || ((vma.Flags & VmFlags.Locked) != 0 && advice != Advice.DontNeedLocked))
                        {
                            return Errno.EINVAL; // madvise_dontneed_free_valid_vma: no raw frame numbers, no locked pages
                        }

                        UnmapPageRange(cpu, tlb, vma, start, tmp, ZapReason.DontNeed);
                    }
                    else if (free)
                    {
                        if ((vma.Flags & VmFlags.Locked) != 0 || !vma.IsAnonymous)
                        {
                            return Errno.EINVAL; // madvise_free_single_vma: anonymous memory only
                        }

                        MadviseFreeRange(cpu, tlb, vma, start, tmp);
                    }
                    else if (ptReclaim)
                    {
                        MadvisePtReclaimRange(cpu, tlb, start, tmp);
                    }
                    else if (coldOrPageout)
                    {
                        MadviseColdOrPageoutRange(cpu, tlb, vma, start, tmp, advice == Advice.PageOut);
                    }
                    else if (advice == Advice.WillNeed && vma.File is { IsShmem: false } file)
                    {
                        // madvise_willneed: vfs_fadvise(POSIX_FADV_WILLNEED) of the part's file range,
                        // force_page_cache_readahead capped at ra_pages, with no readahead mark.
                        ulong offset = (start - vma.Start) + (vma.PgOff << PhysMemory.PageShift);
                        ulong bytes = tmp - start;
                        if (file.ReadAheadPages > 0)
                        {
                            bytes = Math.Min(bytes, (ulong)file.ReadAheadPages << PhysMemory.PageShift);
                        }

                        file.Populate(offset, bytes);
                    }

                    return Errno.None;
                });
            }
            finally
            {
                tlb.Finish();
                Design.AfterMadvise(this, cpu);
            }
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
            FreeEmptyPmdTables(cpu);
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
    /// The range checks madvise and mseal make before anything else: EINVAL for a start not on a
    /// page, or a length whose rounding up to a page, or whose end, wraps. <paramref name="end"/>
    /// is the start plus the rounded length (the start itself for an empty range).
    /// </summary>
    private static Errno CheckPageRange(ulong start, ulong length, out ulong end)
    {
        end = start;
        ulong len = Geometry.PageAlign(length);
        if ((start & ~Geometry.PageMask) != 0 || (length != 0 && len == 0) || start + len < start)
        {
            return Errno.EINVAL;
        }

        end = start + len;
        return Errno.None;
    }

    /// <summary>
    /// <c>madvise_walk_vmas</c>: visits each VMA's part of [start, end) in address order, with the
    /// caller holding <c>mmap_lock</c>. The first error a visit returns ends the walk; a hole in the
    /// range gives ENOMEM, but only after the VMAs beyond it were visited. A visit may split and
    /// merge VMAs: the next one is looked up again from where the last part ended. Before each
    /// visit, <c>madvise_vma_behavior</c>'s seal check: a sealed VMA that
    /// <paramref name="advice"/> may not discard from ends the walk with EPERM.
    /// </summary>
    private Errno MadviseWalkVmas(ulong start, ulong end, Advice advice, Func<Vma, ulong, ulong, Errno> visit)
    {
        Errno unmapped = Errno.None;
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
            var error = MadviseSealRefused(vma, advice) ? Errno.EPERM : visit(vma, start, tmp);
            if (error != Errno.None)
            {
                return error;
            }

            start = tmp;
            if (start >= end)
            {
                return unmapped;
            }
        }
    }

    /// <summary>
    /// <c>madvise_walk_vmas</c> for the advices that only change VMA flags, under <c>mmap_lock</c>
    /// for write: each VMA in [start, end) gets its new flags through <c>madvise_update_vma</c>,
    /// which splits it at the range's edges and merges the result with its neighbours, as
    /// mprotect does. A hole gives ENOMEM after the VMAs around it were changed.
    /// </summary>
    private Errno MadviseUpdateFlags(Cpu cpu, ulong start, ulong end, Advice advice)
    {
        MmapLock.DownWrite(cpu.Id);
        try
        {
            return MadviseWalkVmas(start, end, advice, (vma, from, to) =>
            {
                if (MadviseFlagsRefused(vma, advice) is { } refused)
                {
                    return refused;
                }

                var newFlags = MadviseVmaFlags(vma.Flags, advice);
                // madvise_update_vma: nothing to do (and no split) when the flags stay as they are.
                return newFlags == vma.Flags || VmaModifyFlags(cpu, vma, from, to, newFlags) is not null ? Errno.None : Errno.EINVAL;
            });
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary>
    /// The EINVAL cases of <c>madvise_vma_behavior</c> for the flag-only advices, per VMA: DOFORK of
    /// a <c>VM_IO</c> mapping; DODUMP of a <c>VM_SPECIAL</c> one (the vDSO and the vvar pages among
    /// them) or a droppable one, and KEEPONFORK of a droppable one; WIPEONFORK of anything but
    /// private anonymous memory (a file, shmem, or a shared mapping). Null when the advice applies.
    /// </summary>
    private static Errno? MadviseFlagsRefused(Vma vma, Advice advice) => advice switch
    {
        Advice.DoFork when (vma.Flags & VmFlags.Io) != 0 => Errno.EINVAL,
        Advice.DoDump when (vma.Flags & (VmSpecial | VmFlags.Droppable)) != 0 => Errno.EINVAL,
        Advice.KeepOnFork when (vma.Flags & VmFlags.Droppable) != 0 => Errno.EINVAL, // its pages may not outlive a fork
        Advice.WipeOnFork when vma.File is not null || (vma.Flags & VmFlags.Shared) != 0 => Errno.EINVAL,
        _ => null,
    };

    /// <summary>
    /// <c>vma_ksm_compatible</c>: KSM ignores MADV_MERGEABLE on shared and droppable mappings (and on
    /// PFNMAP, IO, DONTEXPAND, hugetlb and mixed mappings, which the model does not make but for DONTEXPAND).
    /// </summary>
    private static bool KsmCompatible(VmFlags flags) =>
        (flags & (VmFlags.Shared | VmFlags.MayShare | VmFlags.Io | VmFlags.DontExpand | VmFlags.Droppable)) == 0;

    /// <summary>
    /// The flags <c>madvise_vma_behavior</c> gives a VMA for a flag-only advice (NORMAL, RANDOM,
    /// SEQUENTIAL, DONTDUMP, DODUMP, DONTFORK, DOFORK, WIPEONFORK, KEEPONFORK, MERGEABLE and
    /// UNMERGEABLE through <c>ksm_madvise</c>, and HUGEPAGE/NOHUGEPAGE through <c>hugepage_madvise</c>).
    /// </summary>
    private static VmFlags MadviseVmaFlags(VmFlags flags, Advice advice) => advice switch
    {
        Advice.DontFork => flags | VmFlags.DontCopy,
        Advice.DoFork => flags & ~VmFlags.DontCopy,
        Advice.WipeOnFork => flags | VmFlags.WipeOnFork,
        Advice.KeepOnFork => flags & ~VmFlags.WipeOnFork,
        Advice.Mergeable => KsmCompatible(flags) ? flags | VmFlags.Mergeable : flags,
        Advice.Unmergeable => flags & ~VmFlags.Mergeable,
        Advice.Normal => flags & ~(VmFlags.RandRead | VmFlags.SeqRead),
        Advice.Sequential => (flags & ~VmFlags.RandRead) | VmFlags.SeqRead,
        Advice.Random => (flags & ~VmFlags.SeqRead) | VmFlags.RandRead,
        Advice.DontDump => flags | VmFlags.DontDump,
        Advice.DoDump => flags & ~VmFlags.DontDump,
        Advice.HugePage => (flags & ~VmFlags.NoHugePage) | VmFlags.HugePage,
        Advice.NoHugePage => (flags & ~VmFlags.HugePage) | VmFlags.NoHugePage,
        _ => flags,
    };

    /// <summary>
    /// <c>madvise_cold_or_pageout_pte_range</c>, one PTE table at a time. Each page it may touch
    /// is mapped once (exclusive) and on an LRU list. MADV_COLD clears the young bit of its entry
    /// (and its TLB entry) and deactivates it, which in the model's single list per kind leaves it
    /// where it is. MADV_PAGEOUT leaves the entry as it is (since Linux 6.10 reclaim ignores the
    /// references instead of the walk clearing them) and isolates the page unless mlocked
    /// (unevictable: the kernel puts it straight back); once the table is unlocked,
    /// <c>reclaim_pages</c> runs on them. A clean lazy-free page is discarded; a written one becomes
    /// swap-backed again; a swap-backed page goes to swap if there is one and stays, still young,
    /// otherwise; a page-cache page is unmapped and, clean and unheld, evicted; a shmem page is
    /// unmapped and stays in its file (the model has no shmem swap-out: as the kernel without swap,
    /// where <c>shmem_writeout</c> keeps it). The tables stay.
    /// </summary>
    private void MadviseColdOrPageoutRange(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, bool pageout)
    {
        MmapLock.AssertHeld(cpu.Id);
        var isolated = new List<long>();
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
                MadviseColdOrPageoutHugePmd(cpu, tlb, vma, pmdTable, pmdIndex, addr, next, pageout))
            {
                addr = next;
                continue;
            }

            var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
            if (!pteTable.IsNone)
            {
                int endIndex = Geometry.PteIndex(next - Geometry.PageSize) + 1;
                for (int i = Geometry.PteIndex(addr), nr; i < endIndex; i += nr)
                {
                    nr = 1;
                    var entries = Phys.Table(pteTable);
                    ulong e = Volatile.Read(ref entries[i]);
                    if (!Entry.IsPresent(e) || Entry.IsSpecial(e))
                    {
                        continue; // vm_normal_folio() is NULL for the zero page
                    }

                    long pfn = Entry.Pfn(e);
                    ulong va = (addr & Geometry.PmdMask) + ((ulong)i << PhysMemory.PageShift);
                    if (Phys.IsHugeFrame(pfn) && IsAnonPage(pfn))
                    {
                        // A huge page mapped by PTEs: split unless this table's part of the range
                        // covers it whole (a huge page whose pages lie in two tables, moved by
                        // mremap to an address of another alignment, is always split). MADV_PAGEOUT
                        // of a whole one isolates it whole: reclaim discards a lazy-free one without
                        // a split, and writes a swap-backed one out whole where the swap device gives
                        // it a cluster; otherwise a swap-backed one is split here, as reclaim does when
                        // it cannot swap it out whole; an mlocked one is isolated and put straight back.
                        long head = Phys.CompoundHead(pfn);
                        nr = FolioPteBatch(entries, i, endIndex, pfn);
                        if (FolioMaybeMappedShared(pfn))
                        {
                            continue;
                        }

                        bool mlocked = Phys.Desc(head).Has(PageFlags.Mlocked);
                        if (nr == PhysMemory.HugeFrames && pageout && mlocked)
                        {
                            if (Phys.Lru.Isolate(head))
                            {
                                Phys.Lru.Add(head, LruList.Unevictable); // folio_putback_lru
                                Phys.PutPage(head);
                            }

                            continue;
                        }

                        if (nr == PhysMemory.HugeFrames && pageout && ReclaimsHugePageWhole(head))
                        {
                            // A whole huge page, each page mapped once, here: isolated whole, and
                            // reclaim discards it (lazy-free) or writes it to one swap cluster.
                            if (Phys.Lru.Isolate(head))
                            {
                                isolated.Add(head);
                            }

                            continue;
                        }

                        if (nr < PhysMemory.HugeFrames || pageout)
                        {
                            bool whole = nr == PhysMemory.HugeFrames;
                            pteTable = SplitFolioUnderPte(cpu, vma, pteTable, pmdTable, pmdIndex, pfn, va, ref nr);
                            if (whole && nr == 0)
                            {
                                Machine.Vmscan.CountThpSwpOutFallback(); // no huge swap slot: split
                            }

                            if (pteTable.IsNone)
                            {
                                break;
                            }

                            continue;
                        }

                        for (int j = 0; j < nr; j++)
                        {
                            ulong pe = Volatile.Read(ref entries[i + j]);
                            if (Entry.IsYoung(pe))
                            {
                                ulong old = PtepGetAndClear(cpu, pteTable, i + j);
                                SetPteAt(cpu, pteTable, i + j, Entry.MkOld(old));
                                tlb.RemoveTlbEntry(va + ((ulong)j << PhysMemory.PageShift));
                            }
                        }

                        continue; // folio_deactivate
                    }

                    ref var pd = ref Phys.Desc(pfn);
                    bool shmem = Phys.RmapOwner(pfn) is SimFile { IsShmem: true };
                    // Shmem pages sit on no LRU list of the model; the kernel's are on one.
                    if (pd.MapCount != 1 || (!shmem && !pd.OnLru))
                    {
                        continue; // mapped more than once, or not on an LRU list
                    }

                    if (!pageout)
                    {
                        if (Entry.IsYoung(e))
                        {
                            ulong old = PtepGetAndClear(cpu, pteTable, i);
                            SetPteAt(cpu, pteTable, i, Entry.MkOld(old));
                            tlb.RemoveTlbEntry(va);
                        }

                        continue; // folio_deactivate
                    }

                    if (Phys.Desc(Phys.CompoundHead(pfn)).Has(PageFlags.Mlocked))
                    {
                        // folio_test_unevictable: the kernel isolates it and puts it straight back
                        // (folio_putback_lru), so reclaim never sees it, but lru_add resets its
                        // mlock_count to 0. A VMA that lost VM_LOCKED without munlocking its pages
                        // (the old range of MREMAP_DONTUNMAP) keeps them.
                        if (!shmem && Phys.Lru.Isolate(pfn))
                        {
                            Phys.Lru.Add(pfn, LruList.Unevictable);
                            Phys.PutPage(pfn);
                        }

                        continue;
                    }

                    if (shmem)
                    {
                        Phys.GetPage(pfn); // a reference stands for the isolation
                    }
                    else if (!Phys.Lru.Isolate(pfn))
                    {
                        continue; // taken off its list meanwhile
                    }

                    isolated.Add(pfn);
                }

                if (!pteTable.IsNone)
                {
                    PteUnmapUnlock(cpu, pteTable);
                }

                ReclaimIsolated(cpu, tlb, isolated);
            }

            addr = next;
        }
    }

    /// <summary>
    /// <c>reclaim_pages</c> of the pages MADV_PAGEOUT isolated, once their table is unlocked; the
    /// TLB is flushed first, so that reclaim does not race a stale writable entry.
    /// </summary>
    private void ReclaimIsolated(Cpu cpu, MmuGather tlb, List<long> isolated)
    {
        if (isolated.Count > 0)
        {
            tlb.Flush();
            Machine.Vmscan.ReclaimIsolated(cpu, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(isolated));
            isolated.Clear();
        }
    }

    /// <summary>
    /// The PMD part of <c>madvise_cold_or_pageout_pte_range</c> for a leaf: a page-cache folio is
    /// <see cref="MadviseColdOrPageoutFilePmd"/>'s; the huge zero page and a huge page mapped more
    /// than once are left alone; part of a huge page splits it (<c>split_folio</c>) and, when that worked, the
    /// caller goes on with its pages at the PTE level (returns false). A whole one: MADV_COLD
    /// clears the leaf's young bit; MADV_PAGEOUT of a lazy-free one splits the PMD only and the
    /// caller reclaims the folio whole through its PTEs (measured on 6.18: thp_split_pmd, no
    /// thp_split_page, VmPTE keeps the table); so does MADV_PAGEOUT of a swap-backed one when the
    /// swap device gives it a free cluster (a block device: written out whole, thp_swpout);
    /// otherwise (no swap, a swap file, no free cluster) it is split and its 4 KiB pages paged
    /// out, as <c>shrink_folio_list</c> splits one when no huge swap slot can be had
    /// (thp_swpout_fallback; measured without swap, with a swap file and with a loop device).
    /// </summary>
    private bool MadviseColdOrPageoutHugePmd(Cpu cpu, MmuGather tlb, Vma vma, long pmdTable, int pmdIndex, ulong addr, ulong next, bool pageout)
    {
        if (!PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong orig))
        {
            return false;
        }

        long head = Entry.Pfn(orig);
        ulong haddr = addr & Geometry.PmdMask;
        if (head != Phys.HugeZeroPfn && !IsAnonPage(head) && vma.File is { IsShmem: false } file && !FolioMaybeMappedShared(head))
        {
            MadviseColdOrPageoutFilePmd(cpu, tlb, vma, file, pmdTable, pmdIndex, haddr, orig, next - addr == Geometry.PmdSize, pageout);
            return true;
        }

        if (head == Phys.HugeZeroPfn || !IsAnonPage(head) || Volatile.Read(ref Phys.EntireMapCount(head)) != 1)
        {
            PmdUnlock(cpu, pmdTable);
            return true;
        }

        ref var d = ref Phys.Desc(head);
        if (next - addr == Geometry.PmdSize && pageout && !d.Has(PageFlags.Mlocked) && ReclaimsHugePageWhole(head))
        {
            // A whole huge page reclaim takes whole: its try_to_unmap splits the PMD
            // (TTU_SPLIT_HUGE_PMD: thp_split_pmd, the deposit becomes the PTE table), not the folio,
            // and discards it or swaps it out whole through the PTEs; the caller isolates it at
            // the PTE level.
            SplitHugePmdLocked(cpu, vma, pmdTable, pmdIndex, haddr, orig);
            PmdUnlock(cpu, pmdTable);
            return false;
        }

        if (next - addr != Geometry.PmdSize || (pageout && !d.Has(PageFlags.Mlocked)))
        {
            PmdUnlock(cpu, pmdTable);
            bool split = SplitFolio(cpu, vma, head, haddr);
            if (split && next - addr == Geometry.PmdSize)
            {
                Machine.Vmscan.CountThpSwpOutFallback(); // no huge swap slot: split
            }

            return !split;
        }

        if (!pageout)
        {
            if (Entry.IsYoung(orig))
            {
                SetPmdAt(pmdTable, pmdIndex, Entry.MkOld(orig));
                tlb.AddRange(haddr, haddr + Geometry.PmdSize);
            }

            PmdUnlock(cpu, pmdTable);
            return true; // folio_deactivate
        }

        // An mlocked huge page (in a VMA that lost VM_LOCKED): isolated and put straight back.
        bool taken = Phys.Lru.Isolate(head);
        PmdUnlock(cpu, pmdTable);
        if (taken)
        {
            Phys.Lru.Add(head, LruList.Unevictable); // folio_putback_lru
            Phys.PutPage(head);
        }

        return true;
    }

    /// <summary>
    /// The PMD part of <c>madvise_cold_or_pageout_pte_range</c> for a leaf mapping a PMD-sized
    /// page-cache folio that nothing else maps, under the pmd lock, which it drops. MADV_COLD of
    /// all of it clears the leaf's young bit. MADV_PAGEOUT of all of it isolates it, and reclaim's
    /// <c>try_to_unmap</c> takes the leaf away (a file leaf is not split into PTEs) and evicts the
    /// folio whole if it is clean and unheld. Either advice over part of it splits it
    /// (<c>split_folio</c>: <c>unmap_folio</c> takes the leaf away, the folio becomes 512 order-0
    /// pages in the cache, nothing maps them), provided nothing but the cache and the leaf holds it;
    /// the walk then finds no PTE table there (measured on 6.18 with ext4: RssFile drops by 2 MiB,
    /// a later fault maps the 16-page window of order-0 pages).
    /// </summary>
    private void MadviseColdOrPageoutFilePmd(Cpu cpu, MmuGather tlb, Vma vma, SimFile file, long pmdTable, int pmdIndex, ulong haddr, ulong orig, bool whole, bool pageout)
    {
        long head = Entry.Pfn(orig);
        ref var d = ref Phys.Desc(head);
        if (whole && !pageout)
        {
            if (Entry.IsYoung(orig))
            {
                SetPmdAt(pmdTable, pmdIndex, Entry.MkOld(orig));
                tlb.AddRange(haddr, haddr + Geometry.PmdSize);
            }

            PmdUnlock(cpu, pmdTable);
            return; // folio_deactivate
        }

        if (d.Has(PageFlags.Mlocked) || (!whole && d.RefCount != PhysMemory.HugeFrames + 1))
        {
            PmdUnlock(cpu, pmdTable); // unevictable, or held beyond the cache and this leaf: can_split_folio refuses
            return;
        }

        SplitHugePmdLocked(cpu, vma, pmdTable, pmdIndex, haddr, orig); // the leaf goes (TTU_SPLIT_HUGE_PMD)
        PmdUnlock(cpu, pmdTable);
        if (!whole)
        {
            Phys.GetPage(head); // folio_get
            if (!file.SplitLargeFolio(head))
            {
                Phys.PutPage(head);
            }

            return;
        }

        if (Phys.Lru.Isolate(head))
        {
            Machine.Vmscan.ReclaimIsolated(cpu, [head]); // evicts it whole when clean and unheld
        }
    }

    /// <summary>
    /// Whether reclaim takes the huge page at <paramref name="head"/> whole rather than splitting
    /// it: a lazy-free one is discarded whole; a swap-backed one is written out whole when the swap
    /// device gives it a free cluster (<c>folio_alloc_swap</c> of order 9), and split otherwise (no
    /// swap, a swap file, or no free cluster: <c>thp_swpout_fallback</c>).
    /// </summary>
    private bool ReclaimsHugePageWhole(long head) =>
        !Phys.Desc(head).Has(PageFlags.SwapBacked) || Phys.Swap is { HasFreeCluster: true };

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
    /// then discard it unless it is written again first; swap entries in the range are dropped. A
    /// huge page the range covers whole is marked as one; one it covers in part is split first
    /// (<c>split_folio</c>, which drops the PTE lock meanwhile) and its pages in range are marked
    /// one by one; one that cannot be split is skipped.
    /// </summary>
    private void MadviseFreeRange(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end)
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
            if (Entry.IsHuge(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])) &&
                MadviseFreeHugePmd(cpu, tlb, vma, pmdTable, pmdIndex, addr, next))
            {
                addr = next;
                continue;
            }

            var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
            if (!pteTable.IsNone)
            {
                long swapFreed = 0;
                bool markedLazyFree = false;
                int endIndex = Geometry.PteIndex(next - Geometry.PageSize) + 1;
                for (int i = Geometry.PteIndex(addr), nr; i < endIndex; i += nr)
                {
                    nr = 1;
                    var entries = Phys.Table(pteTable);
                    ulong e = Volatile.Read(ref entries[i]);
                    if (Entry.IsNone(e))
                    {
                        continue;
                    }

                    if (Entry.IsGuardMarker(e))
                    {
                        continue; // a marker is not a swap entry: MADV_FREE leaves it
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
                    ulong va = (addr & Geometry.PmdMask) + ((ulong)i << PhysMemory.PageShift);
                    if (Phys.IsHugeFrame(pfn))
                    {
                        long head = Phys.CompoundHead(pfn);
                        nr = FolioPteBatch(entries, i, endIndex, pfn);
                        if (FolioMaybeMappedShared(pfn))
                        {
                            continue;
                        }

                        if (nr < PhysMemory.HugeFrames)
                        {
                            // Part of a huge page: split it, then take the pages in range one by one.
                            pteTable = SplitFolioUnderPte(cpu, vma, pteTable, pmdTable, pmdIndex, pfn, va, ref nr);
                            if (pteTable.IsNone)
                            {
                                break;
                            }

                            continue;
                        }

                        // The whole huge page, mapped by these 512 entries: lazy-free as one folio.
                        Phys.Desc(head).ClearFlagsAtomic(PageFlags.Dirty);
                        for (int j = 0; j < nr; j++)
                        {
                            ulong pe = Volatile.Read(ref entries[i + j]);
                            if (Entry.IsYoung(pe) || Entry.IsDirty(pe))
                            {
                                ulong old = PtepGetAndClear(cpu, pteTable, i + j);
                                SetPteAt(cpu, pteTable, i + j, Entry.MkOld(Entry.MkClean(old)));
                                tlb.RemoveTlbEntry(va + ((ulong)j << PhysMemory.PageShift));
                            }
                        }

                        if (!Phys.Desc(head).Has(PageFlags.Mlocked) && (Phys.Desc(head).ClearFlagsAtomic(PageFlags.SwapBacked) & PageFlags.SwapBacked) != 0)
                        {
                            Phys.Lru.Move(head, LruList.File);
                        }

                        markedLazyFree = true;
                        continue;
                    }

                    ref var d = ref Phys.Desc(pfn);
                    if (d.MapCount != 1)
                    {
                        continue; // shared
                    }

                    d.ClearFlagsAtomic(PageFlags.Dirty);
                    if (Entry.IsYoung(e) || Entry.IsDirty(e))
                    {
                        ulong old = PtepGetAndClear(cpu, pteTable, i);
                        SetPteAt(cpu, pteTable, i, Entry.MkOld(Entry.MkClean(old)));
                        tlb.RemoveTlbEntry(va);
                    }

                    // folio_mark_lazyfree: off the anon LRU, onto the file LRU, no longer swap-backed;
                    // an unevictable (mlocked) page stays as it is.
                    if (!d.Has(PageFlags.Mlocked) && (d.ClearFlagsAtomic(PageFlags.SwapBacked) & PageFlags.SwapBacked) != 0)
                    {
                        Phys.Lru.Move(pfn, LruList.File);
                    }

                    markedLazyFree = true;
                }

                if (pteTable.IsNone)
                {
                    AddSwapEnts(cpu, -swapFreed);
                    addr = next;
                    continue;
                }

                PteUnmapUnlock(cpu, pteTable);
                AddSwapEnts(cpu, -swapFreed);
                Design.AfterMadvFreePteTable(this, cpu, pmdTable, pmdIndex, markedLazyFree);
            }

            addr = next;
        }
    }
}
