using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    private const MapFlags KnownMapFlags =
        MapFlags.SharedValidate | MapFlags.Fixed | MapFlags.Anonymous | MapFlags.GrowsDown | MapFlags.DenyWrite |
        MapFlags.Executable | MapFlags.Locked | MapFlags.NoReserve | MapFlags.Populate | MapFlags.NonBlock |
        MapFlags.Stack | MapFlags.HugeTlb | MapFlags.Sync | MapFlags.FixedNoReplace;

    private static ulong PageAlign(ulong len) => (len + Geometry.PageSize - 1) & Geometry.PageMask;

    private static VmFlags ProtToVmFlags(Prot prot)
    {
        var f = VmFlags.None;
        if ((prot & Prot.Read) != 0)
        {
            f |= VmFlags.Read;
        }

        if ((prot & Prot.Write) != 0)
        {
            f |= VmFlags.Write;
        }

        if ((prot & Prot.Exec) != 0)
        {
            f |= VmFlags.Exec;
        }

        return f;
    }

    /// <summary>
    /// <c>mmap(addr, length, prot, flags, -1, 0)</c> for private anonymous memory, with Linux's
    /// checks in Linux's order. Shared and file mappings are not modelled and get EINVAL / EBADF.
    /// </summary>
    public MmapResult Mmap(Cpu cpu, ulong addr, ulong length, Prot prot, MapFlags flags)
    {
        var type = flags & MapFlags.SharedValidate;
        if (type == MapFlags.None)
        {
            return new(0, Errno.EINVAL);
        }

        if (type == MapFlags.SharedValidate && (flags & ~KnownMapFlags) != 0)
        {
            return new(0, Errno.EOPNOTSUPP);
        }

        if ((flags & MapFlags.Anonymous) == 0)
        {
            return new(0, Errno.EBADF); // fd -1 without MAP_ANONYMOUS
        }

        if (type != MapFlags.Private || (flags & MapFlags.HugeTlb) != 0)
        {
            return new(0, Errno.EINVAL); // shared memory and hugetlb are outside this model
        }

        if (length == 0)
        {
            return new(0, Errno.EINVAL);
        }

        ulong len = PageAlign(length);
        if (len == 0)
        {
            return new(0, Errno.ENOMEM);
        }

        if ((flags & MapFlags.FixedNoReplace) != 0)
        {
            flags |= MapFlags.Fixed;
        }

        var vmFlags = ProtToVmFlags(prot) | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec;
        if ((flags & MapFlags.Locked) != 0)
        {
            vmFlags |= VmFlags.Locked;
        }

        if ((flags & MapFlags.GrowsDown) != 0)
        {
            vmFlags |= VmFlags.GrowsDown;
        }

        MmapLock.DownWrite(cpu.Id);
        ulong start;
        try
        {
            if (_dead)
            {
                return new(0, Errno.EINVAL);
            }

            if (_vmas.Count >= MaxMapCount)
            {
                return new(0, Errno.ENOMEM);
            }

            // get_unmapped_area
            if (len > Geometry.TaskSize)
            {
                return new(0, Errno.ENOMEM);
            }

            if ((flags & MapFlags.Fixed) != 0)
            {
                if ((addr & ~Geometry.PageMask) != 0)
                {
                    return new(0, Errno.EINVAL);
                }

                if (addr > Geometry.TaskSize - len)
                {
                    return new(0, Errno.ENOMEM);
                }

                if (addr < MmapMinAddr)
                {
                    return new(0, Errno.EPERM); // security_mmap_addr
                }

                if ((flags & MapFlags.FixedNoReplace) != 0 && AnyVmaIn(addr, addr + len))
                {
                    return new(0, Errno.EEXIST);
                }

                start = addr;
            }
            else
            {
                start = 0;
                ulong hint = PageAlign(addr);
                if (hint != 0 && hint >= MmapMinAddr && hint <= Geometry.TaskSize - len && !AnyVmaIn(hint, hint + len))
                {
                    start = hint;
                }
                else
                {
                    // Larger anonymous mappings are THP-aligned: __thp_get_unmapped_area asks for
                    // len + PMD_SIZE and rounds the result to a 2 MiB boundary.
                    bool thp = addr == 0 && (len & (Geometry.PmdSize - 1)) == 0;
                    start = thp
                        ? UnmappedAreaTopDown(len, Geometry.PmdSize, Geometry.PmdSize)
                        : UnmappedAreaTopDown(len, 0, Geometry.PageSize);
                    if (start == 0 && thp)
                    {
                        start = UnmappedAreaTopDown(len, 0, Geometry.PageSize);
                    }

                    if (start == 0)
                    {
                        return new(0, Errno.ENOMEM);
                    }
                }
            }

            // Overcommit heuristic (mode 0): a private writable mapping is charged unless MAP_NORESERVE,
            // and one charge larger than RAM + swap is refused.
            ulong pages = len >> PhysMemory.PageShift;
            bool account = (vmFlags & VmFlags.Write) != 0 && (flags & MapFlags.NoReserve) == 0;
            if (account)
            {
                if ((long)pages > Phys.TotalFrames)
                {
                    return new(0, Errno.ENOMEM);
                }

                vmFlags |= VmFlags.Account;
                _committedPages += (long)pages;
            }
            else if ((flags & MapFlags.NoReserve) != 0)
            {
                vmFlags |= VmFlags.NoReserve;
            }

            if ((flags & MapFlags.Fixed) != 0)
            {
                UnmapLocked(cpu, start, start + len);
            }

            InsertVma(start, start + len, vmFlags);
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        bool populate = (flags & (MapFlags.Populate | MapFlags.NonBlock)) == MapFlags.Populate || (flags & MapFlags.Locked) != 0;
        if (populate)
        {
            Populate(cpu, start, start + len);
        }

        return new(start, Errno.None);
    }

    /// <summary>Inserts a new VMA at a free range and merges it with compatible neighbours.</summary>
    private void InsertVma(ulong start, ulong end, VmFlags flags)
    {
        int i = FirstEndingAbove(start);
        lock (_vmas)
        {
            _vmas.Insert(i, new Vma(start, end, flags, null));
        }

        MergeAround(i);
    }

    /// <summary>
    /// <c>mm_populate</c>: faults in every page of [start, end) under <c>mmap_lock</c> for read; a
    /// write fault for writable private mappings (<c>FOLL_WRITE</c>), a read fault otherwise.
    /// </summary>
    private void Populate(Cpu cpu, ulong start, ulong end)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            for (ulong va = start; va < end; va += Geometry.PageSize)
            {
                var vma = FindVma(va);
                if (vma is null || va < vma.Start || (vma.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0)
                {
                    continue;
                }

                bool write = (vma.Flags & VmFlags.Write) != 0;
                ulong pte = PeekPte(va);
                if (Entry.IsHwPresent(pte) && (!write || Entry.IsWritable(pte)))
                {
                    continue;
                }

                if (HandleMmFault(cpu, vma, va, write) != FaultOutcome.Ok)
                {
                    return; // populate failures are not reported to mmap's caller
                }
            }
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary><c>munmap(addr, length)</c>.</summary>
    public Errno Munmap(Cpu cpu, ulong addr, ulong length)
    {
        if ((addr & ~Geometry.PageMask) != 0 || addr > Geometry.TaskSize || length > Geometry.TaskSize - addr)
        {
            return Errno.EINVAL;
        }

        ulong len = PageAlign(length);
        if (len == 0)
        {
            return Errno.EINVAL;
        }

        MmapLock.DownWrite(cpu.Id);
        try
        {
            UnmapLocked(cpu, addr, addr + len);
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        Rcu.Poll();
        return Errno.None;
    }

    /// <summary>
    /// <c>do_vmi_munmap</c> + <c>unmap_region</c>, with <c>mmap_lock</c> held for write: split at
    /// the edges, detach the VMAs inside, zap them, then <c>free_pgtables</c> between the
    /// neighbours' floor and ceiling.
    /// </summary>
    private void UnmapLocked(Cpu cpu, ulong start, ulong end)
    {
        if (!AnyVmaIn(start, end))
        {
            return;
        }

        SplitAt(start);
        SplitAt(end);
        int first = FirstEndingAbove(start);
        int last = first;
        while (last < _vmas.Count && _vmas[last].Start < end)
        {
            last++;
        }

        var doomed = _vmas.GetRange(first, last - first);
        ulong floor = first > 0 ? _vmas[first - 1].End : 0;
        ulong ceiling = last < _vmas.Count ? _vmas[last].Start : 0; // USER_PGTABLES_CEILING
        lock (_vmas)
        {
            _vmas.RemoveRange(first, last - first);
        }

        var tlb = new MmuGather(this, cpu);
        foreach (var v in doomed)
        {
            UnmapPageRange(cpu, tlb, v, v.Start, v.End, ZapReason.Unmap);
            if ((v.Flags & VmFlags.Account) != 0)
            {
                _committedPages -= (long)(v.Length >> PhysMemory.PageShift);
            }
        }

        // unlink_anon_vmas runs before the tables go, under the anon_vma lock the rmap walk takes.
        RmapLock.DownWrite(cpu.Id);
        FreePgtables(tlb, doomed, floor, ceiling);
        RmapLock.UpWrite(cpu.Id);
        tlb.Finish();
    }

    /// <summary>
    /// <c>free_pgtables</c>: frees the tables of the detached VMAs, grouping VMAs less than a PMD
    /// apart into one <c>free_pgd_range</c> call, as the kernel does.
    /// </summary>
    private void FreePgtables(MmuGather tlb, List<Vma> vmas, ulong floor, ulong ceiling)
    {
        int i = 0;
        while (i < vmas.Count)
        {
            ulong addr = vmas[i].Start;
            int j = i;
            while (j + 1 < vmas.Count && vmas[j + 1].Start <= vmas[j].End + Geometry.PmdSize)
            {
                j++;
            }

            ulong groupCeiling = j + 1 < vmas.Count ? vmas[j + 1].Start : ceiling;
            FreePgdRange(tlb, addr, vmas[j].End, floor, groupCeiling);
            i = j + 1;
        }
    }

    /// <summary><c>mprotect(addr, length, prot)</c>.</summary>
    public Errno Mprotect(Cpu cpu, ulong addr, ulong length, Prot prot)
    {
        if ((addr & ~Geometry.PageMask) != 0)
        {
            return Errno.EINVAL;
        }

        if (length == 0)
        {
            return Errno.None;
        }

        ulong len = PageAlign(length);
        ulong end = addr + len;
        if (end <= addr)
        {
            return Errno.ENOMEM;
        }

        if ((prot & ~(Prot.Read | Prot.Write | Prot.Exec | Prot.Sem)) != 0)
        {
            return Errno.EINVAL; // arch_validate_prot
        }

        var newAccess = ProtToVmFlags(prot);
        MmapLock.DownWrite(cpu.Id);
        try
        {
            var vma = FindVma(addr);
            if (vma is null || vma.Start > addr)
            {
                return Errno.ENOMEM;
            }

            ulong nstart = addr;
            var tlb = new MmuGather(this, cpu);
            Errno error = Errno.None;
            while (true)
            {
                vma = FindVma(nstart)!;
                ulong tmp = Math.Min(vma.End, end);
                MprotectFixup(cpu, tlb, vma, nstart, tmp, newAccess);
                nstart = tmp;
                if (nstart >= end)
                {
                    break;
                }

                var next = FindVma(nstart);
                if (next is null || next.Start > nstart)
                {
                    error = Errno.ENOMEM; // a hole: the part before it stays changed, as in Linux
                    break;
                }
            }

            tlb.Finish();
            return error;
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary><c>mprotect_fixup</c>: split, set the flags, change the entries, merge.</summary>
    private void MprotectFixup(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, VmFlags access)
    {
        const VmFlags accessMask = VmFlags.Read | VmFlags.Write | VmFlags.Exec;
        var newFlags = (vma.Flags & ~accessMask) | access;
        if (newFlags == vma.Flags)
        {
            return;
        }

        if ((newFlags & VmFlags.Write) != 0 && (vma.Flags & (VmFlags.Write | VmFlags.Account | VmFlags.NoReserve)) == 0)
        {
            newFlags |= VmFlags.Account; // a private mapping made writable is charged from now on
        }

        SplitAt(start);
        SplitAt(end);
        int i = FirstEndingAbove(start);
        var target = _vmas[i];
        target.Flags = newFlags;
        ChangeProtection(cpu, tlb, target, start, end, newFlags);
        MergeAround(i);
    }

    /// <summary>
    /// <c>change_pte_range</c>: rewrites present entries for the new protection through
    /// <c>ptep_modify_prot_start/commit</c> (a clear then a set). Write access is granted at once only
    /// to exclusive, dirty anonymous pages (<c>can_change_pte_writable</c>); others fault to get it.
    /// </summary>
    private void ChangeProtection(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, VmFlags flags)
    {
        bool none = (flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0;
        bool writable = (flags & VmFlags.Write) != 0;
        bool noExec = (flags & VmFlags.Exec) == 0;
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
            var pt = Design.PteOffsetMapLock(this, cpu, pmdTable, pmdIndex);
            if (!pt.IsNone)
            {
                var entries = Phys.Table(pt);
                for (ulong va = addr; va < next; va += Geometry.PageSize)
                {
                    int i = Geometry.PteIndex(va);
                    ulong e = Volatile.Read(ref entries[i]);
                    if (!Entry.IsPresent(e))
                    {
                        continue;
                    }

                    ulong old = PtepGetAndClear(cpu, pt, i);
                    ulong n = old & ~(Entry.Writable | Entry.NoExecute | Entry.Present | Entry.ProtNone);
                    if (none)
                    {
                        n |= Entry.ProtNone;
                    }
                    else
                    {
                        n |= Entry.Present;
                        if (writable && !Entry.IsSpecial(old) && Entry.IsDirty(old) &&
                            Volatile.Read(ref Phys.Desc(Entry.Pfn(old)).MapCount) == 1)
                        {
                            n |= Entry.Writable;
                        }
                    }

                    if (noExec)
                    {
                        n |= Entry.NoExecute;
                    }

                    SetPteAt(cpu, pt, i, n);
                    tlb.RemoveTlbEntry(va);
                }

                Design.PteUnmapUnlock(this, cpu, pt);
            }

            addr = next;
        }
    }

    /// <summary>
    /// <c>madvise(addr, length, advice)</c>. DONTNEED and FREE take <c>mmap_lock</c> for read, as
    /// Linux does; a hole in the range gives ENOMEM after the mapped parts were advised.
    /// </summary>
    public Errno Madvise(Cpu cpu, ulong addr, ulong length, Advice advice)
    {
        bool zap = advice is Advice.DontNeed or Advice.DontNeedLocked;
        bool free = advice == Advice.Free;
        bool noop = advice is Advice.Normal or Advice.Random or Advice.Sequential or Advice.WillNeed
            or Advice.HugePage or Advice.NoHugePage or Advice.DontDump or Advice.DoDump or Advice.Cold or Advice.PageOut;
        if (!zap && !free && !noop)
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
    /// <c>madvise_free_pte_range</c>: for each exclusive anonymous page, clear the dirty and young
    /// bits in the entry and the page, and mark the page lazy-free (clear PG_swapbacked). Reclaim may
    /// then discard it unless it is written again first; swap entries in the range are dropped.
    /// </summary>
    private void MadviseFreeRange(Cpu cpu, MmuGather tlb, ulong start, ulong end)
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
                    if (Volatile.Read(ref d.MapCount) != 1)
                    {
                        continue;
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

    /// <summary>
    /// <c>exit_mmap</c>: unmaps everything, frees every table and the PGD, and waits for the
    /// deferred frees, so that no frame of this address space stays in use.
    /// </summary>
    public void Exit(Cpu cpu)
    {
        MmapLock.DownWrite(cpu.Id);
        try
        {
            if (_dead)
            {
                return;
            }

            var all = _vmas.ToList();
            lock (_vmas)
            {
                _vmas.Clear();
            }

            var tlb = new MmuGather(this, cpu);
            foreach (var v in all)
            {
                UnmapPageRange(cpu, tlb, v, v.Start, v.End, ZapReason.Unmap);
            }

            RmapLock.DownWrite(cpu.Id);
            FreePgtables(tlb, all, 0, 0);
            _dead = true;
            RmapLock.UpWrite(cpu.Id);
            tlb.Finish();
            _committedPages = 0;
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        foreach (var c in Machine.Cpus)
        {
            if (ReferenceEquals(c.Mm, this))
            {
                c.SwitchMm(null);
            }
        }

        Rcu.Barrier(cpu.Id);
        Phys.FreeTable(PgdPfn);
        Machine.Forget(this);
    }

    /// <summary>Memory charged against overcommit by writable private mappings (<c>Committed_AS</c> share), in pages.</summary>
    public long CommittedPages => _committedPages;
}
