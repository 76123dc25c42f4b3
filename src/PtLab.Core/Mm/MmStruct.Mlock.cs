using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/mlock.c: mlock, mlock2, munlock, mlockall, munlockall, and the mlocked-page bookkeeping.
public sealed partial class MmStruct
{
    private const VmFlags LockedMask = VmFlags.Locked | VmFlags.LockOnFault; // VM_LOCKED_MASK

    private long _lockedPages;
    private VmFlags _defFlags;

    /// <summary><c>mm-&gt;def_flags</c>: VM_LOCKED (and VM_LOCKONFAULT) after <c>mlockall(MCL_FUTURE)</c>.</summary>
    public VmFlags DefFlags => _defFlags;

    /// <summary><c>mm-&gt;locked_vm</c> in kB (VmLck in /proc/PID/status).</summary>
    public long LockedVmKb => Volatile.Read(ref _lockedPages) * 4;

    /// <summary><c>RLIMIT_MEMLOCK</c> in bytes (the kernel's default, 8 MiB, unless set).</summary>
    public ulong RlimitMemlock { get; set; } = 8UL << 20;

    /// <summary>Whether the process has <c>CAP_IPC_LOCK</c>, which lifts the memlock limit (root has it; the default).</summary>
    public bool CapIpcLock { get; set; } = true;

    /// <summary><c>can_do_mlock</c>.</summary>
    private bool CanDoMlock => RlimitMemlock != 0 || CapIpcLock;

    /// <summary><c>mlock_future_ok</c>: whether <paramref name="bytes"/> more locked memory fits the limit.</summary>
    private bool MlockFutureOk(VmFlags flags, ulong bytes)
    {
        if ((flags & VmFlags.Locked) == 0 || CapIpcLock)
        {
            return true;
        }

        ulong pages = (bytes >> PhysMemory.PageShift) + (ulong)Volatile.Read(ref _lockedPages);
        return pages <= RlimitMemlock >> PhysMemory.PageShift;
    }

    /// <summary><c>mlock(start, len)</c>.</summary>
    public Errno Mlock(Cpu cpu, ulong start, ulong length) => DoMlock(cpu, start, length, VmFlags.Locked);

    /// <summary><c>mlock2(start, len, flags)</c>.</summary>
    public Errno Mlock2(Cpu cpu, ulong start, ulong length, MlockFlags flags)
    {
        if ((flags & ~MlockFlags.OnFault) != 0)
        {
            return Errno.EINVAL;
        }

        return DoMlock(cpu, start, length, VmFlags.Locked | ((flags & MlockFlags.OnFault) != 0 ? VmFlags.LockOnFault : 0));
    }

    /// <summary><c>munlock(start, len)</c>.</summary>
    public Errno Munlock(Cpu cpu, ulong start, ulong length)
    {
        (start, length) = LockRange(start, length);
        MmapLock.DownWrite(cpu.Id);
        try
        {
            return ApplyVmaLockFlags(cpu, start, length, VmFlags.None);
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary><c>mlockall(flags)</c>.</summary>
    public Errno Mlockall(Cpu cpu, MlockallFlags flags)
    {
        const MlockallFlags all = MlockallFlags.Current | MlockallFlags.Future | MlockallFlags.OnFault;
        if (flags == MlockallFlags.None || (flags & ~all) != 0 || flags == MlockallFlags.OnFault)
        {
            return Errno.EINVAL;
        }

        if (!CanDoMlock)
        {
            return Errno.EPERM;
        }

        MmapLock.DownWrite(cpu.Id);
        try
        {
            if ((flags & MlockallFlags.Current) != 0 && !CapIpcLock && _vmas.TotalBytes > RlimitMemlock)
            {
                return Errno.ENOMEM;
            }

            ApplyMlockallFlags(cpu, flags);
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        if ((flags & MlockallFlags.Current) != 0)
        {
            MmPopulate(cpu, 0, Geometry.TaskSize, ignoreErrors: true);
        }

        return Errno.None;
    }

    /// <summary><c>munlockall()</c>.</summary>
    public Errno Munlockall(Cpu cpu)
    {
        MmapLock.DownWrite(cpu.Id);
        try
        {
            ApplyMlockallFlags(cpu, MlockallFlags.None);
            return Errno.None;
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary>The page-aligned range mlock and munlock act on (the start rounded down, the length up to cover it).</summary>
    private static (ulong Start, ulong Length) LockRange(ulong start, ulong length) =>
        (start & Geometry.PageMask, Geometry.PageAlign(length + (start & ~Geometry.PageMask)));

    /// <summary><c>do_mlock</c>: the limit check, the flags, then <c>__mm_populate</c>.</summary>
    private Errno DoMlock(Cpu cpu, ulong start, ulong length, VmFlags flags)
    {
        if (!CanDoMlock)
        {
            return Errno.EPERM;
        }

        (start, length) = LockRange(start, length);
        MmapLock.DownWrite(cpu.Id);
        try
        {
            ulong limit = RlimitMemlock >> PhysMemory.PageShift;
            ulong locked = (length >> PhysMemory.PageShift) + (ulong)_lockedPages;
            if (locked > limit && !CapIpcLock)
            {
                // Pages of the range already locked are not charged twice (count_mm_mlocked_page_nr).
                locked -= CountMlockedPages(start, length);
            }

            if (locked > limit && !CapIpcLock)
            {
                return Errno.ENOMEM;
            }

            var error = ApplyVmaLockFlags(cpu, start, length, flags);
            if (error != Errno.None)
            {
                return error;
            }
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        // __mlock_posix_error_return: a fault that failed reads as ENOMEM, no memory as EAGAIN.
        return MmPopulate(cpu, start, start + length, ignoreErrors: false) switch
        {
            Errno.EFAULT => Errno.ENOMEM,
            Errno.ENOMEM => Errno.EAGAIN,
            var e => e,
        };
    }

    /// <summary><c>count_mm_mlocked_page_nr</c>: pages of [start, start + length) in VM_LOCKED VMAs.</summary>
    private ulong CountMlockedPages(ulong start, ulong length)
    {
        ulong end = start + length, count = 0;
        for (var v = length == 0 ? null : FindVma(start); v is not null && v.Start < end; v = v.NextVma)
        {
            if ((v.Flags & VmFlags.Locked) != 0)
            {
                count += (Math.Min(end, v.End) - Math.Max(start, v.Start)) >> PhysMemory.PageShift;
            }
        }

        return count;
    }

    /// <summary>
    /// <c>apply_vma_lock_flags</c>: sets the lock flags of every VMA in the range, which must be
    /// mapped from its start; a hole gives ENOMEM, after the VMAs before it were changed.
    /// </summary>
    private Errno ApplyVmaLockFlags(Cpu cpu, ulong start, ulong length, VmFlags flags)
    {
        ulong end = start + length;
        if (end < start)
        {
            return Errno.EINVAL;
        }

        if (end == start)
        {
            return Errno.None;
        }

        var vma = VmaLookup(start);
        if (vma is null)
        {
            return Errno.ENOMEM;
        }

        ulong nstart = start, tmp = vma.Start;
        while (vma is not null && vma.Start < end)
        {
            if (vma.Start != tmp)
            {
                return Errno.ENOMEM;
            }

            var newFlags = (vma.Flags & ~LockedMask) | flags;
            tmp = Math.Min(vma.End, end);
            tmp = MlockFixup(cpu, vma, nstart, tmp, newFlags).End; // vma_iter_end
            nstart = tmp;
            vma = FindVma(tmp);
        }

        return tmp < end ? Errno.ENOMEM : Errno.None;
    }

    /// <summary>
    /// <c>apply_mlockall_flags</c>: sets <see cref="DefFlags"/> for MCL_FUTURE and the lock flags
    /// of every VMA for MCL_CURRENT (clearing them for munlockall).
    /// </summary>
    private void ApplyMlockallFlags(Cpu cpu, MlockallFlags flags)
    {
        _defFlags &= ~LockedMask;
        if ((flags & MlockallFlags.Future) != 0)
        {
            _defFlags |= VmFlags.Locked | ((flags & MlockallFlags.OnFault) != 0 ? VmFlags.LockOnFault : 0);
            if ((flags & MlockallFlags.Current) == 0)
            {
                return;
            }
        }

        var add = VmFlags.None;
        if ((flags & MlockallFlags.Current) != 0)
        {
            add = VmFlags.Locked | ((flags & MlockallFlags.OnFault) != 0 ? VmFlags.LockOnFault : 0);
        }

        for (var vma = _vmas.First; vma is not null;)
        {
            var done = MlockFixup(cpu, vma, vma.Start, vma.End, (vma.Flags & ~LockedMask) | add);
            vma = done.NextVma;
        }
    }

    /// <summary>
    /// <c>mlock_fixup</c>: gives [start, end) the new lock flags (splitting and merging), keeps
    /// <c>locked_vm</c>, and mlocks or munlocks the pages already mapped there. Returns the VMA
    /// that covers the range afterwards.
    /// </summary>
    private Vma MlockFixup(Cpu cpu, Vma vma, ulong start, ulong end, VmFlags newFlags)
    {
        var oldFlags = vma.Flags;
        if (newFlags == oldFlags || (oldFlags & (VmSpecial | VmFlags.Droppable)) != 0)
        {
            // A VM_SPECIAL VMA (the vDSO, the vvar pages) is passed over: never locked nor
            // counted, and never split, which it would refuse. So is a droppable one, whose
            // pages may go whatever a lock says.
            return vma;
        }

        vma = VmaModifyFlags(cpu, vma, start, end, newFlags)!; // only special mappings refuse a split
        long pages = (long)((end - start) >> PhysMemory.PageShift);
        if ((newFlags & VmFlags.Locked) == 0)
        {
            _lockedPages -= pages;
        }
        else if ((oldFlags & VmFlags.Locked) == 0)
        {
            _lockedPages += pages;
        }

        if (((newFlags ^ oldFlags) & VmFlags.Locked) != 0)
        {
            MlockVmaPagesRange(cpu, start, end, (newFlags & VmFlags.Locked) != 0);
        }

        return vma;
    }

    /// <summary>
    /// <c>mlock_vma_pages_range</c> (<c>mlock_pte_range</c>, one PMD at a time): each folio mapped
    /// in [start, end) is mlocked once more (<c>mlock_folio</c>), or munlocked once
    /// (<c>munlock_folio</c>), per batch of its pages. A huge pmd is one batch. PTEs that map
    /// consecutive pages of one huge folio in one PTE table are one batch (<c>folio_mlock_step</c>),
    /// and the folio is mlocked only when that batch is the whole folio (<c>allow_mlock_munlock</c>:
    /// <c>folio_within_range</c> and a step of all its pages): one moved by mremap to an address of
    /// another alignment lies in two tables and stays evictable, as does one cut by the VMA's edge,
    /// and a split of it later maps its zero-filled pages the zero page. Munlock takes any batch.
    /// </summary>
    private void MlockVmaPagesRange(Cpu cpu, ulong start, ulong end, bool mlock)
    {
        long batchHead = -1, nextPfn = -1;
        ulong nextVa = 0;
        int batch = 0;
        WalkPageRangeLocked(cpu, start, end, p =>
        {
            if (!Entry.IsPresent(p.Entry) || Entry.IsSpecial(p.Entry))
            {
                return;
            }

            long pfn = Entry.Pfn(p.Entry);
            long head = Phys.CompoundHead(pfn);
            bool sameTable = (p.Address & Geometry.PmdMask) == ((nextVa - PhysMemory.PageSize) & Geometry.PmdMask);
            if (head == batchHead && pfn == nextPfn && p.Address == nextVa && (p.MappedByPmd || sameTable))
            {
                // The next page of the batch: a huge folio is mlocked once all of it was seen.
                nextPfn++;
                nextVa += PhysMemory.PageSize;
                if (mlock && ++batch == PhysMemory.HugeFrames)
                {
                    MlockFolio(head);
                }

                return;
            }

            (batchHead, nextPfn, nextVa, batch) = (head, pfn + 1, p.Address + PhysMemory.PageSize, 1);
            if (!mlock)
            {
                MunlockFolio(head);
            }
            else if (!Phys.IsHugeFrame(pfn))
            {
                MlockFolio(head);
            }
        }, skipHoles: true);
    }

    /// <summary>
    /// <c>mlock_folio</c>: sets PG_mlocked and counts one more locked mapping
    /// (<c>folio->mlock_count</c>), moving the page to the unevictable list the first time.
    /// </summary>
    private void MlockFolio(long pfn)
    {
        long head = Phys.CompoundHead(pfn);
        Phys.Desc(head).SetFlagsAtomic(PageFlags.Mlocked);
        Phys.Lru.MlockFolio(head);
    }

    /// <summary>
    /// <c>munlock_folio</c>: one locked mapping fewer; the last one clears PG_mlocked and moves the
    /// page back to the list reclaim scans. A page locked through two VMAs (a file page mapped
    /// twice, a shared anonymous page locked by parent and child) stays mlocked until both let go.
    /// </summary>
    private void MunlockFolio(long pfn)
    {
        long head = Phys.CompoundHead(pfn);
        var list = Phys.Desc(head).Has(PageFlags.SwapBacked) ? LruList.Anon : LruList.File;
        Phys.Lru.MunlockFolio(head, list);
    }

    /// <summary>
    /// <c>mlock_vma_folio</c> as <c>folio_add_file_rmap_ptes</c> calls it: a small page-cache or shmem
    /// page mapped into a <c>VM_LOCKED</c> VMA is mlocked once more, whether a fault or fault-around mapped it.
    /// </summary>
    private void MlockVmaFolio(long pfn, Vma vma)
    {
        if ((vma.Flags & VmFlags.Locked) != 0 && !Phys.IsHugeFrame(pfn))
        {
            MlockFolio(pfn);
        }
    }

    /// <summary>
    /// <c>munlock_vma_folio</c>: a page unmapped from a <c>VM_LOCKED</c> VMA is munlocked once.
    /// </summary>
    private void MunlockVmaFolio(long pfn) => MunlockFolio(pfn);

    /// <summary>The LRU list for a page just mapped in <paramref name="vma"/> (<c>folio_add_lru_vma</c>).</summary>
    private void LruAddNewPage(long pfn, Vma vma)
    {
        if ((vma.Flags & VmFlags.Locked) != 0)
        {
            Phys.Desc(pfn).SetFlagsAtomic(PageFlags.Mlocked); // mlock_new_folio
            Phys.Lru.AddNewMlocked(pfn);
            return;
        }

        // folio_add_lru: a page that is not swap-backed (a droppable VMA's) goes to the file list.
        Phys.Lru.Add(pfn, (vma.Flags & VmFlags.Droppable) != 0 ? LruList.File : LruList.Anon);
    }
}
