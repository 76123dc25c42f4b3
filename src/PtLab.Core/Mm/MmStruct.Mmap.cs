using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/mmap.c and mm/vma.c: mmap, mm_populate, munmap and the unmap of a region.
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
    /// <c>mmap(addr, length, prot, flags, -1, 0)</c>: anonymous memory, private or shared (a shmem
    /// file behind it), with Linux's checks in Linux's order. Without MAP_ANONYMOUS there is no
    /// file to map: EBADF.
    /// </summary>
    public MmapResult Mmap(Cpu cpu, ulong addr, ulong length, Prot prot, MapFlags flags) =>
        Mmap(cpu, addr, length, prot, flags, null, 0);

    /// <summary>
    /// <c>mmap(addr, length, prot, flags, fd, offset)</c> where the descriptor refers to
    /// <paramref name="file"/> (opened for reading and writing); with MAP_ANONYMOUS the file is
    /// ignored, as Linux ignores the descriptor. See MmStruct.Filemap.cs for the faults.
    /// </summary>
    public MmapResult Mmap(Cpu cpu, ulong addr, ulong length, Prot prot, MapFlags flags, SimFile? file, ulong offset)
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

        if ((flags & MapFlags.Anonymous) != 0)
        {
            file = null;
            offset = 0;
        }
        else if (file is null)
        {
            return new(0, Errno.EBADF); // fd -1 without MAP_ANONYMOUS
        }

        if ((offset & ~Geometry.PageMask) != 0 || (flags & MapFlags.HugeTlb) != 0)
        {
            return new(0, Errno.EINVAL); // an unaligned offset; hugetlb is outside this model
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
        bool shared = type != MapFlags.Private;
        if (shared)
        {
            vmFlags |= VmFlags.Shared | VmFlags.MayShare;
        }

        // file_mmap_ok: the mapping must end below MAX_LFS_FILESIZE.
        if (file is not null && (offset > long.MaxValue || len > long.MaxValue - offset))
        {
            return new(0, Errno.EOVERFLOW);
        }

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
                    bool thp = addr == 0 && (len & (Geometry.PmdSize - 1)) == 0 && file is null && !shared;
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
            bool account = (vmFlags & VmFlags.Write) != 0 && !shared && (flags & MapFlags.NoReserve) == 0;
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

            // vm_pgoff: the file offset; 0 for shared anonymous memory (its own shmem file,
            // shmem_zero_setup); the address in pages for private anonymous memory.
            if (file is null && shared)
            {
                file = Machine.Files.CreateShmem(len);
            }

            ulong pgoff = file is not null ? offset >> PhysMemory.PageShift : start >> PhysMemory.PageShift;
            InsertVma(start, start + len, vmFlags, file, pgoff);
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

    /// <summary>Inserts a new VMA at a free range, links it into its file's <c>i_mmap</c>, and merges it with compatible neighbours.</summary>
    private void InsertVma(ulong start, ulong end, VmFlags flags, SimFile? file, ulong pgoff)
    {
        int i = FirstEndingAbove(start);
        var vma = new Vma(start, end, flags, null) { Mm = this, PgOff = pgoff, File = file };
        file?.LinkVma(vma);
        lock (_vmas)
        {
            _vmas.Insert(i, vma);
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

                bool write = (vma.Flags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
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

        // unlink_anon_vmas and unlink_file_vma run before the tables go, under the anon_vma lock
        // the rmap walk takes.
        RmapLock.DownWrite(cpu.Id);
        UnlinkRmap(doomed);
        FreePgtables(tlb, doomed, floor, ceiling);
        RmapLock.UpWrite(cpu.Id);
        tlb.Finish();
    }

    /// <summary>Memory charged against overcommit by writable private mappings (<c>Committed_AS</c> share), in pages.</summary>
    public long CommittedPages => _committedPages;
}
