using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/mremap.c: mremap, and move_page_tables, which moves whole PTE tables (or PMD tables, or huge
// pmds) when source and destination are aligned alike and moves entries otherwise.
public sealed partial class MmStruct
{
    private long _movedPmds;
    private long _movedPuds;
    private long _movedHugePmds;
    private long _movedPtes;

    /// <summary>What mremap's page-table moves did so far: whole PTE tables, whole PMD tables, huge pmds, single entries.</summary>
    public (long NormalPmds, long NormalPuds, long HugePmds, long Ptes) MremapMoves =>
        (Volatile.Read(ref _movedPmds), Volatile.Read(ref _movedPuds), Volatile.Read(ref _movedHugePmds), Volatile.Read(ref _movedPtes));

    /// <summary>
    /// <c>mremap(addr, old_len, new_len, flags, new_addr)</c>: shrinks in place, grows in place
    /// when the room above is free, or moves (MREMAP_MAYMOVE; MREMAP_FIXED to
    /// <paramref name="newAddr"/>; MREMAP_DONTUNMAP keeping the old range mapped and empty). A
    /// MREMAP_FIXED move of equal lengths may span several VMAs, each moved keeping the gaps.
    /// Linux's checks in Linux's order (<c>do_mremap</c>).
    /// </summary>
    public MmapResult Mremap(Cpu cpu, ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr = 0)
    {
        var r = new RemapRequest
        {
            Addr = addr,
            OldLen = Geometry.PageAlign(oldLen),
            NewLen = Geometry.PageAlign(newLen),
            Flags = flags,
            NewAddr = newAddr,
        };
        if (CheckMremapParams(r) is var bad and not Errno.None)
        {
            return new(0, bad);
        }

        ulong result;
        Errno error;
        MmapLock.DownWrite(cpu.Id);
        try
        {
            if (_dead)
            {
                return new(0, Errno.EINVAL);
            }

            if (_vmas.Count + 4 > MaxMapCount)
            {
                return new(0, Errno.ENOMEM); // check_map_count_against_split_early
            }

            if ((flags & MremapFlags.Fixed) != 0 && r.OldLen == r.NewLen)
            {
                (result, error) = RemapMove(cpu, r);
            }
            else
            {
                r.Vma = VmaLookup(r.Addr);
                error = CheckPrepVma(r);
                (result, error) = error != Errno.None ? (0, error)
                    : (flags & (MremapFlags.Fixed | MremapFlags.DontUnmap)) != 0 ? MremapTo(cpu, r) : MremapAt(cpu, r);
            }
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        if (error == Errno.None && r.PopulateExpand)
        {
            MmPopulate(cpu, r.NewAddr + r.OldLen, r.NewAddr + r.OldLen + r.Delta, ignoreErrors: true);
        }

        Rcu.Poll();
        return new(error == Errno.None ? result : 0, error);
    }

    /// <summary><c>struct vma_remap_struct</c>: one remap as it is worked out.</summary>
    private sealed class RemapRequest
    {
        public ulong Addr;
        public ulong OldLen;
        public ulong NewLen;
        public MremapFlags Flags;
        public ulong NewAddr;
        public Vma? Vma;
        public ulong Delta;
        public bool PopulateExpand;

        public bool ImpliesNewAddr => (Flags & (MremapFlags.Fixed | MremapFlags.DontUnmap)) != 0;

        public bool DontUnmap => (Flags & MremapFlags.DontUnmap) != 0;
    }

    /// <summary><c>check_mremap_params</c>: everything that can be refused before looking at a VMA.</summary>
    private static Errno CheckMremapParams(RemapRequest r)
    {
        if ((r.Flags & ~(MremapFlags.Fixed | MremapFlags.MayMove | MremapFlags.DontUnmap)) != 0 ||
            (r.Addr & ~Geometry.PageMask) != 0 || r.NewLen == 0 || r.NewLen > Geometry.TaskSize)
        {
            return Errno.EINVAL;
        }

        if (!r.ImpliesNewAddr)
        {
            return Errno.None;
        }

        if (r.NewAddr > Geometry.TaskSize - r.NewLen || (r.NewAddr & ~Geometry.PageMask) != 0 ||
            (r.Flags & MremapFlags.MayMove) == 0 || (r.DontUnmap && r.OldLen != r.NewLen))
        {
            return Errno.EINVAL;
        }

        // vrm_overlaps: source and destination may not meet.
        return r.Addr + r.OldLen > r.NewAddr && r.NewAddr + r.NewLen > r.Addr ? Errno.EINVAL : Errno.None;
    }

    /// <summary>
    /// <c>check_prep_vma</c>: the VMA must contain the address; a growth or move must stay within
    /// it (EFAULT), may not duplicate a private mapping (old length 0: EINVAL), may not grow a
    /// <c>VM_DONTEXPAND</c> or <c>VM_PFNMAP</c> VMA (EFAULT), and must fit the memlock limit when
    /// the VMA is locked (EAGAIN).
    /// </summary>
    private Errno CheckPrepVma(RemapRequest r)
    {
        var vma = r.Vma;
        if (vma is null)
        {
            return Errno.EFAULT;
        }

        if (IsSealed(vma))
        {
            return Errno.EPERM; // mseal'd: no shrink, growth or move, not even one of no change
        }

        r.Delta = r.OldLen > r.NewLen ? r.OldLen - r.NewLen : r.NewLen - r.OldLen;
        if (!r.ImpliesNewAddr)
        {
            r.NewAddr = r.Addr;
        }

        if (r.NewLen <= r.OldLen && !r.ImpliesNewAddr)
        {
            return Errno.None; // a shrink or no change in place may cross VMAs
        }

        if (r.OldLen == 0 && (vma.Flags & VmFlags.Shared) == 0)
        {
            return Errno.EINVAL;
        }

        if (r.DontUnmap && (vma.Flags & (VmFlags.DontExpand | VmFlags.PfnMap)) != 0)
        {
            return Errno.EINVAL; // the old range of a special mapping cannot be left behind, empty
        }

        ulong oldLen = r.NewLen < r.OldLen ? r.NewLen : r.OldLen;
        if (oldLen > vma.End - r.Addr)
        {
            return Errno.EFAULT;
        }

        if (r.NewLen == oldLen)
        {
            return Errno.None;
        }

        if ((vma.Flags & (VmFlags.DontExpand | VmFlags.PfnMap)) != 0)
        {
            return Errno.EFAULT; // a special mapping (the vDSO, a vvar) never grows
        }

        if ((vma.Flags & VmFlags.Locked) != 0)
        {
            r.PopulateExpand = true;
        }

        return MlockFutureOk(vma.Flags & VmFlags.Locked, r.Delta) ? Errno.None : Errno.EAGAIN;
    }

    /// <summary>
    /// The checks of <c>do_vmi_munmap</c> on the tail a shrink unmaps, [addr + new_len, addr +
    /// old_len): it must end below TASK_SIZE, so an old length that runs past it (or wraps) is EINVAL.
    /// </summary>
    private static bool ShrinkRangeOk(RemapRequest r)
    {
        ulong start = r.Addr + r.NewLen;
        ulong len = r.OldLen - r.NewLen;
        return start >= r.Addr && start <= Geometry.TaskSize && len <= Geometry.TaskSize - start;
    }

    /// <summary><c>mremap_at</c>: no new address was given.</summary>
    private (ulong, Errno) MremapAt(Cpu cpu, RemapRequest r)
    {
        if (r.NewLen == r.OldLen)
        {
            return (r.Addr, Errno.None);
        }

        if (r.NewLen < r.OldLen)
        {
            if (!ShrinkRangeOk(r))
            {
                return (0, Errno.EINVAL);
            }

            var shrunk = UnmapLocked(cpu, r.Addr + r.NewLen, r.Addr + r.OldLen); // shrink_vma
            return shrunk == Errno.None ? (r.Addr, Errno.None) : (0, shrunk);
        }

        // expand_vma: in place when [addr, addr + old_len) reaches the VMA's end and the room above is free.
        var vma = r.Vma!;
        ulong end = vma.End + r.Delta;
        if (vma.End - r.Addr == r.OldLen && end > vma.End && !AnyVmaIn(vma.End, end) &&
            GetUnmappedArea(vma.Start, end - vma.Start, MapFlags.Fixed, null, 0).Ok)
        {
            if (!ChargeRemap(vma, r.Delta))
            {
                return (0, Errno.ENOMEM);
            }

            _vmas.SetEnd(vma, end);
            vma = MergeNext(vma); // vma_merge_extend
            if ((vma.Flags & VmFlags.Locked) != 0)
            {
                _lockedPages += (long)(r.Delta >> PhysMemory.PageShift);
            }

            return (r.Addr, Errno.None);
        }

        if ((r.Flags & MremapFlags.MayMove) == 0)
        {
            return (0, Errno.ENOMEM);
        }

        var err = SetNewAddr(r);
        return err != Errno.None ? (0, err) : MoveVma(cpu, r);
    }

    /// <summary><c>mremap_to</c>: MREMAP_FIXED (unmap the destination first) or MREMAP_DONTUNMAP.</summary>
    private (ulong, Errno) MremapTo(Cpu cpu, RemapRequest r)
    {
        if ((r.Flags & MremapFlags.Fixed) != 0)
        {
            if (UnmapLocked(cpu, r.NewAddr, r.NewAddr + r.NewLen) is var refused and not Errno.None)
            {
                return (0, refused);
            }

            r.Vma = VmaLookup(r.Addr);
            if (r.Vma is null)
            {
                return (0, Errno.EFAULT);
            }
        }

        if (r.NewLen < r.OldLen)
        {
            if (!ShrinkRangeOk(r))
            {
                return (0, Errno.EINVAL);
            }

            if (UnmapLocked(cpu, r.Addr + r.NewLen, r.Addr + r.OldLen) is var refused and not Errno.None)
            {
                return (0, refused);
            }

            r.Vma = VmaLookup(r.Addr);
            if (r.Vma is null)
            {
                return (0, Errno.EFAULT);
            }

            r.OldLen = r.NewLen;
        }

        var err = SetNewAddr(r);
        return err != Errno.None ? (0, err) : MoveVma(cpu, r);
    }

    /// <summary>
    /// <c>remap_move</c>: MREMAP_FIXED with equal lengths moves every VMA in the range, each
    /// landing at the same distance from the previous one as in the source. A hole at the start
    /// is EFAULT.
    /// </summary>
    private (ulong, Errno) RemapMove(Cpu cpu, RemapRequest whole)
    {
        ulong start = whole.Addr, end = whole.Addr + whole.OldLen, target = whole.NewAddr;
        ulong result = 0, lastEnd = 0;
        bool seen = false;
        // The kernel's VMA iterator resumes at the end the last VMA had before it moved: past the
        // range's end it finds nothing, even when the move merged that VMA into a larger one.
        for (var vma = FindVma(start); vma is not null && vma.Start < end; vma = lastEnd < end ? FindVma(lastEnd) : null)
        {
            if (!seen && start < vma.Start)
            {
                return (0, Errno.EFAULT);
            }

            ulong addr = Math.Max(vma.Start, start);
            ulong len = Math.Min(end, vma.End) - addr;
            ulong offset = seen ? vma.Start - lastEnd : 0;
            lastEnd = vma.End;
            var r = new RemapRequest
            {
                Addr = addr,
                OldLen = len,
                NewLen = len,
                Flags = whole.Flags,
                NewAddr = target + offset,
                Vma = vma,
            };
            var err = CheckPrepVma(r);
            (ulong moved, err) = err != Errno.None ? (0, err) : MremapTo(cpu, r);
            if (err != Errno.None)
            {
                return (0, err);
            }

            if (!seen)
            {
                result = moved;
            }

            seen = true;
            target = moved + len;
        }

        return seen ? (result, Errno.None) : (0, Errno.EFAULT);
    }

    /// <summary>
    /// <c>vrm_set_new_addr</c>: <c>get_unmapped_area</c> for the new length; MREMAP_FIXED takes
    /// the given address, MREMAP_DONTUNMAP alone uses it as a hint.
    /// </summary>
    private Errno SetNewAddr(RemapRequest r)
    {
        // The search is the file's (a shared mapping's MAP_SHARED included), at the page offset of
        // the part that moves.
        var vma = r.Vma!;
        var flags = (r.Flags & MremapFlags.Fixed) != 0 ? MapFlags.Fixed : MapFlags.None;
        if ((vma.Flags & VmFlags.MayShare) != 0)
        {
            flags |= MapFlags.Shared;
        }

        ulong offset = (vma.PgOff + ((r.Addr - vma.Start) >> PhysMemory.PageShift)) << PhysMemory.PageShift;
        var placed = GetUnmappedArea(r.ImpliesNewAddr ? r.NewAddr : 0, r.NewLen, flags, vma.File, offset);
        if (!placed.Ok)
        {
            return placed.Error;
        }

        r.NewAddr = placed.Address;
        return Errno.None;
    }

    /// <summary><c>vrm_calc_charge</c> for an accounted VMA: the pages the remap adds to the commitment.</summary>
    private bool ChargeRemap(Vma vma, ulong bytes)
    {
        if ((vma.Flags & VmFlags.Account) == 0)
        {
            return true;
        }

        long pages = (long)(bytes >> PhysMemory.PageShift);
        if (pages > Phys.TotalFrames)
        {
            return false; // security_vm_enough_memory_mm, overcommit heuristic
        }

        _committedPages += pages;
        return true;
    }

    /// <summary>
    /// <c>move_vma</c>: a VMA for the destination (<c>copy_vma</c>, which may merge with its
    /// neighbours), the tables and entries moved (<c>move_page_tables</c>), then the source
    /// unmapped, or with MREMAP_DONTUNMAP kept, empty, unlocked and without its anon_vma.
    /// </summary>
    private (ulong, Errno) MoveVma(Cpu cpu, RemapRequest r)
    {
        var vma = r.Vma!;
        if (_vmas.Count + 2 > MaxMapCount)
        {
            return (0, Errno.ENOMEM); // prep_move_vma
        }

        // prep_move_vma asks may_split first: moving part of a special mapping would cut it.
        var refused = MaySplit(vma, r.Addr);
        if (refused == Errno.None)
        {
            refused = MaySplit(vma, r.Addr + r.OldLen);
        }

        if (refused != Errno.None)
        {
            return (0, refused);
        }

        if (!ChargeRemap(vma, r.DontUnmap ? r.NewLen : r.Delta))
        {
            return (0, Errno.ENOMEM);
        }

        ulong pgoff = vma.PgOff + ((r.Addr - vma.Start) >> PhysMemory.PageShift);
        var sourceFlags = vma.Flags;
        var newVma = CopyVma(vma, r.NewAddr, r.NewLen, pgoff);
        var err = Errno.None;
        ulong moved = MovePageTables(cpu, r.Addr, r.NewAddr, r.OldLen);
        if (moved < r.OldLen)
        {
            // Put back what moved, then unmap the destination instead of the source.
            MovePageTables(cpu, r.NewAddr, r.Addr, moved);
            err = Errno.ENOMEM;
            (r.Addr, r.OldLen) = (r.NewAddr, r.NewLen);
        }

        if ((sourceFlags & VmFlags.Locked) != 0)
        {
            _lockedPages += (long)(r.NewLen >> PhysMemory.PageShift); // vrm_stat_account
        }

        if (err == Errno.None && r.DontUnmap)
        {
            // dontunmap_complete: the old VMA, now empty, is no longer locked; if it was moved
            // whole its anon_vma goes (unlink_anon_vmas).
            var old = VmaLookup(r.Addr)!;
            old.Flags &= ~LockedMask;
            if (old != newVma && old.Start == r.Addr && old.End == r.Addr + r.OldLen)
            {
                old.UnlinkAnonVmas();
                old.AnonVmaSlot = null;
            }
        }
        else
        {
            UnmapSourceVma(cpu, r.Addr, r.OldLen, accountableMove: (sourceFlags & VmFlags.Account) != 0 && !r.DontUnmap);
        }

        return err == Errno.None ? (r.NewAddr, Errno.None) : (0, err);
    }

    /// <summary>
    /// <c>copy_vma</c>: a VMA with the source's flags, file and anon_vma at the destination, linked
    /// wherever the source is linked (<c>anon_vma_clone</c>, <c>vma_link_file</c>) and merged with
    /// compatible neighbours there. An anonymous source never faulted in takes the destination's
    /// page offset, so that it can merge; one with pages, or a file mapping, keeps its own.
    /// </summary>
    private Vma CopyVma(Vma vma, ulong addr, ulong len, ulong pgoff)
    {
        if (vma.IsAnonymous && vma.AnonVma is null)
        {
            pgoff = addr >> PhysMemory.PageShift;
        }

        var copy = new Vma(addr, addr + len, vma.Flags, vma.AnonVma, pgoff) { Mm = this, File = vma.File, Ra = vma.Ra, Special = vma.Special };
        copy.CloneRmapLinksFrom(vma);
        _vmas.Insert(copy);
        return MergeAround(copy);
    }

    /// <summary>
    /// <c>unmap_source_vma</c>: munmap of the moved range. The charge moved with the pages, so an
    /// accounted source is unmapped with VM_ACCOUNT cleared and the flag put back on what remains of it.
    /// </summary>
    private void UnmapSourceVma(Cpu cpu, ulong addr, ulong len, bool accountableMove)
    {
        ulong end = addr + len;
        var vma = VmaLookup(addr);
        ulong vmStart = 0, vmEnd = 0;
        if (accountableMove && vma is not null)
        {
            vma.Flags &= ~VmFlags.Account;
            (vmStart, vmEnd) = (vma.Start, vma.End);
        }

        UnmapLocked(cpu, addr, end);
        if (accountableMove && vma is not null)
        {
            if (vmStart < addr && VmaLookup(addr - Geometry.PageSize) is { } prev)
            {
                prev.Flags |= VmFlags.Account;
            }

            if (vmEnd > end && VmaLookup(end) is { } next)
            {
                next.Flags |= VmFlags.Account;
            }
        }
    }

    /// <summary>
    /// <c>move_page_tables</c>: moves the translations of [oldAddr, oldAddr + len) to newAddr,
    /// 1 GiB at a time by moving a whole PMD table where both sides are PUD-aligned for the whole
    /// extent (<c>move_normal_pud</c>), 2 MiB at a time by moving a whole PTE table or a huge pmd
    /// where both sides are PMD-aligned (<c>move_normal_pmd</c>, <c>move_huge_pmd</c>), and entry by
    /// entry otherwise (<c>move_ptes</c>, splitting a huge pmd first). Addresses are first moved
    /// down to a PMD boundary when both have the same offset in it and nothing is mapped there
    /// (<c>try_realign_addr</c>). Returns the bytes of the range that moved (less only when a
    /// table could not be allocated).
    /// </summary>
    private ulong MovePageTables(Cpu cpu, ulong oldAddr, ulong newAddr, ulong len)
    {
        if (len == 0)
        {
            return 0;
        }

        ulong oldEnd = oldAddr + len, origOld = oldAddr;
        (oldAddr, newAddr) = TryRealignAddr(oldAddr, newAddr, len);
        var oldVma = FindVma(origOld)!;
        RmapLock.DownWrite(cpu.Id); // take_rmap_locks: reclaim's rmap walk sees the old or the new entry
        try
        {
            ulong extent;
            for (; oldAddr < oldEnd; oldAddr += extent, newAddr += extent)
            {
                extent = GetExtent(oldAddr, oldEnd, newAddr, Geometry.PudSize);
                long oldPud = PudTableOf(oldAddr);
                if (oldPud < 0)
                {
                    continue;
                }

                long newPud = PudAlloc(cpu, newAddr);
                if (newPud < 0)
                {
                    break;
                }

                if (extent == Geometry.PudSize && MoveNormalPud(cpu, oldPud, oldAddr, newPud, newAddr))
                {
                    continue;
                }

                extent = GetExtent(oldAddr, oldEnd, newAddr, Geometry.PmdSize);
                long oldPmd = PmdTableOf(oldAddr);
                if (oldPmd < 0 || Entry.IsNone(Volatile.Read(ref Phys.Table(oldPmd)[Geometry.Index(oldAddr, 2)])))
                {
                    continue;
                }

                long newPmd = PmdAlloc(cpu, newPud, newAddr);
                if (newPmd < 0)
                {
                    break;
                }

                int oldIndex = Geometry.Index(oldAddr, 2), newIndex = Geometry.Index(newAddr, 2);
                while (true)
                {
                    if (Entry.IsHuge(Volatile.Read(ref Phys.Table(oldPmd)[oldIndex])))
                    {
                        if (extent == Geometry.PmdSize && MoveHugePmd(cpu, oldPmd, oldIndex, oldAddr, newPmd, newIndex, newAddr))
                        {
                            break;
                        }

                        SplitHugePmd(cpu, oldVma, oldPmd, oldIndex, oldAddr & Geometry.PmdMask);
                    }
                    else if (extent == Geometry.PmdSize && MoveNormalPmd(cpu, oldPmd, oldIndex, oldAddr, newPmd, newIndex, newAddr))
                    {
                        break;
                    }

                    if (Entry.IsNone(Volatile.Read(ref Phys.Table(oldPmd)[oldIndex])))
                    {
                        break;
                    }

                    if (!PteAlloc(cpu, newPmd, newIndex))
                    {
                        return Progress(oldAddr, oldEnd, len);
                    }

                    if (MovePtes(cpu, oldPmd, oldIndex, oldAddr, extent, newPmd, newIndex, newAddr))
                    {
                        break;
                    }
                }
            }

            return Progress(oldAddr, oldEnd, len);
        }
        finally
        {
            RmapLock.UpWrite(cpu.Id);
        }

        static ulong Progress(ulong at, ulong end, ulong len) => at < end - len ? 0 : Math.Min(at, end) - (end - len); // pmc_progress
    }

    /// <summary>
    /// <c>try_realign_addr</c>: when the range reaches the next PMD boundary, both addresses sit at
    /// the same offset in their 2 MiB, and no VMA lies between either aligned-down address and the
    /// start of its VMA, both move down to the boundary so that whole tables can move.
    /// </summary>
    private (ulong Old, ulong New) TryRealignAddr(ulong oldAddr, ulong newAddr, ulong len)
    {
        ulong oldAlign = oldAddr & (Geometry.PmdSize - 1), newAlign = newAddr & (Geometry.PmdSize - 1);
        if (len < Geometry.PmdSize - oldAlign || oldAlign == 0 || oldAlign != newAlign ||
            !CanAlignDown(oldAddr) || !CanAlignDown(newAddr))
        {
            return (oldAddr, newAddr);
        }

        return (oldAddr & Geometry.PmdMask, newAddr & Geometry.PmdMask);
    }

    /// <summary><c>can_align_down</c>: the address starts its VMA, and nothing is mapped below it down to the PMD boundary.</summary>
    private bool CanAlignDown(ulong addr)
    {
        var vma = VmaLookup(addr);
        return vma is not null && vma.Start == addr && !AnyVmaIn(addr & Geometry.PmdMask, addr);
    }

    /// <summary><c>get_extent</c>: up to the next boundary of <paramref name="size"/> on either side, and the end.</summary>
    private static ulong GetExtent(ulong oldAddr, ulong oldEnd, ulong newAddr, ulong size)
    {
        ulong mask = ~(size - 1);
        ulong extent = ((oldAddr + size) & mask) - oldAddr;
        extent = Math.Min(extent, oldEnd - oldAddr);
        return Math.Min(extent, ((newAddr + size) & mask) - newAddr);
    }

    /// <summary>The PUD table covering <paramref name="addr"/>, or -1 (<c>get_old_pud</c>).</summary>
    private long PudTableOf(ulong addr)
    {
        ulong pgde = Volatile.Read(ref Phys.Table(PgdPfn)[Geometry.Index(addr, 4)]);
        return Entry.IsNone(pgde) ? -1 : Entry.Pfn(pgde);
    }

    /// <summary>
    /// <c>move_normal_pud</c>: the whole PMD table under the old PUD entry moves to the empty new
    /// one, with every table, deposit and page below it.
    /// </summary>
    private bool MoveNormalPud(Cpu cpu, long oldPud, ulong oldAddr, long newPud, ulong newAddr)
    {
        int oldIndex = Geometry.Index(oldAddr, 3), newIndex = Geometry.Index(newAddr, 3);
        ulong pud = Volatile.Read(ref Phys.Table(oldPud)[oldIndex]);
        if (!Entry.IsNone(Volatile.Read(ref Phys.Table(newPud)[newIndex])) || Entry.IsNone(pud) || Entry.IsHuge(pud))
        {
            return false;
        }

        // Through the entry primitives, so that the table store gives the new entry its group.
        PageTableLock.Lock(cpu.Id);
        PudClear(oldPud, oldIndex);
        PudPopulate(cpu, newPud, newIndex, Entry.Pfn(pud));
        PageTableLock.Unlock(cpu.Id);
        FlushTlbRange(cpu, oldAddr, oldAddr + Geometry.PudSize);
        long pmdTable = Entry.Pfn(pud);
        Phys.Desc(pmdTable).RmapAddress = newAddr;
        var pmds = Phys.Table(pmdTable);
        for (int i = 0; i < PhysMemory.EntriesPerTable; i++)
        {
            ulong pmd = Volatile.Read(ref pmds[i]);
            ulong to = newAddr + ((ulong)i << Geometry.PmdShift);
            if (!Entry.IsNone(pmd) && !Entry.IsHuge(pmd))
            {
                RetargetPteTable(Entry.Pfn(pmd), to);
            }
        }

        Interlocked.Increment(ref _movedPuds);
        return true;
    }

    /// <summary>
    /// <c>move_normal_pmd</c>: the PTE table under the old pmd moves whole to the empty new pmd
    /// (under both pmd locks), and the old 2 MiB is flushed from the TLBs.
    /// </summary>
    private bool MoveNormalPmd(Cpu cpu, long oldPmd, int oldIndex, ulong oldAddr, long newPmd, int newIndex, ulong newAddr)
    {
        if (!Entry.IsNone(Volatile.Read(ref Phys.Table(newPmd)[newIndex])))
        {
            return false;
        }

        PmdLock(cpu, oldPmd);
        if (newPmd != oldPmd)
        {
            PmdLockNested(cpu, newPmd);
        }

        ulong pmd = Volatile.Read(ref Phys.Table(oldPmd)[oldIndex]);
        bool moved = !Entry.IsNone(pmd) && !Entry.IsHuge(pmd);
        if (moved)
        {
            PmdClear(oldPmd, oldIndex);
            PmdPopulate(cpu, newPmd, newIndex, Entry.Pfn(pmd));
            FlushTlbRange(cpu, oldAddr, oldAddr + Geometry.PmdSize);
        }

        if (newPmd != oldPmd)
        {
            PmdUnlock(cpu, newPmd);
        }

        PmdUnlock(cpu, oldPmd);
        if (moved)
        {
            RetargetPteTable(Entry.Pfn(pmd), newAddr);
            Interlocked.Increment(ref _movedPmds);
        }

        return moved;
    }

    /// <summary>
    /// <c>move_huge_pmd</c>: a huge leaf moves to the empty new pmd; its deposit goes with it to
    /// another PMD table (<c>pmd_move_must_withdraw</c>).
    /// </summary>
    private bool MoveHugePmd(Cpu cpu, long oldPmd, int oldIndex, ulong oldAddr, long newPmd, int newIndex, ulong newAddr)
    {
        if (!Entry.IsNone(Volatile.Read(ref Phys.Table(newPmd)[newIndex])) || !PmdTransHugeLock(cpu, oldPmd, oldIndex, out _))
        {
            return false;
        }

        if (newPmd != oldPmd)
        {
            PmdLockNested(cpu, newPmd);
        }

        ulong pmd = PmdpHugeGetAndClear(oldPmd, oldIndex);
        if (newPmd != oldPmd && (Entry.Pfn(pmd) == Phys.HugeZeroPfn || IsAnonPage(Entry.Pfn(pmd))))
        {
            Deposit(newPmd, Withdraw(oldPmd)); // a page-cache folio's leaf has no deposit
        }

        SetPmdAt(newPmd, newIndex, pmd);
        if (Entry.IsHwPresent(pmd))
        {
            FlushTlbRange(cpu, oldAddr, oldAddr + Geometry.PmdSize);
        }

        if (newPmd != oldPmd)
        {
            PmdUnlock(cpu, newPmd);
        }

        PmdUnlock(cpu, oldPmd);
        Interlocked.Increment(ref _movedHugePmds);
        return true;
    }

    /// <summary>
    /// <c>move_ptes</c>: entry by entry under both PTE locks, each cleared and set at the new
    /// place; the old range is flushed once if any entry was present. Returns false when the old
    /// table went away before it could be mapped (<c>-EAGAIN</c>: the caller looks at the pmd again).
    /// </summary>
    private bool MovePtes(Cpu cpu, long oldPmd, int oldIndex, ulong oldAddr, ulong extent, long newPmd, int newIndex, ulong newAddr)
    {
        var oldPt = PteOffsetMapLock(cpu, oldPmd, oldIndex);
        if (oldPt.IsNone)
        {
            return false;
        }

        var newPt = PteOffsetMap(cpu, newPmd, newIndex);
        if (newPt.IsNone)
        {
            PteUnmapUnlock(cpu, oldPt);
            return false;
        }

        if (newPt.Pfn != oldPt.Pfn)
        {
            PtlLockNested(cpu, newPt.Pfn);
        }

        bool flush = false;
        var oldEntries = Phys.Table(oldPt);
        for (ulong off = 0; off < extent; off += Geometry.PageSize)
        {
            int i = Geometry.PteIndex(oldAddr + off);
            if (Entry.IsNone(Volatile.Read(ref oldEntries[i])))
            {
                continue;
            }

            ulong e = PtepGetAndClear(cpu, oldPt, i);
            if (Entry.IsPresent(e))
            {
                flush = true;
            }

            SetPteAt(cpu, newPt, Geometry.PteIndex(newAddr + off), e);
            Interlocked.Increment(ref _movedPtes);
        }

        if (flush)
        {
            FlushTlbRange(cpu, oldAddr, oldAddr + extent);
        }

        if (newPt.Pfn != oldPt.Pfn)
        {
            PtlUnlock(cpu, newPt.Pfn);
        }

        PteUnmap(cpu, newPt);
        PteUnmapUnlock(cpu, oldPt);
        return true;
    }

    /// <summary>
    /// A PTE table moved whole: it now maps the 2 MiB at <paramref name="to"/> (its <c>pt_index</c>).
    /// The pages in it keep their index: the moved VMA keeps its page offset, so the reverse map
    /// finds them at the new address.
    /// </summary>
    private void RetargetPteTable(long ptePfn, ulong to) => Phys.Desc(ptePfn).RmapAddress = to & Geometry.PmdMask;

    /// <summary><c>spin_lock_nested</c> of a second pmd lock (the destination's), safe under <c>mmap_lock</c> held for write.</summary>
    private void PmdLockNested(Cpu cpu, long pmdTable) =>
        Sync.RawSpinLock.Lock(ref Phys.PtLock(pmdTable), Machine.Sync, cpu.Id, Sync.LockClass.PmdLock, pmdTable, subclass: 1);
}
