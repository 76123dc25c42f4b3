using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/mmap.c and mm/vma.c: mmap, get_unmapped_area, munmap and the unmap of a region.
public sealed partial class MmStruct
{
    /// <summary><c>MAP_TYPE</c>: the bits that say shared, private, shared-validate or droppable.</summary>
    private const int MapTypeMask = 0x0f;

    /// <summary>
    /// <c>LEGACY_MAP_MASK</c>: the flags MAP_SHARED_VALIDATE accepts for any file; newer ones
    /// (MAP_FIXED_NOREPLACE, MAP_SYNC where the file system does not offer it) are EOPNOTSUPP there.
    /// </summary>
    private const MapFlags LegacyMapMask =
        MapFlags.SharedValidate | MapFlags.Fixed | MapFlags.Anonymous | MapFlags.DenyWrite | MapFlags.Executable |
        MapFlags.GrowsDown | MapFlags.Locked | MapFlags.NoReserve | MapFlags.Populate | MapFlags.NonBlock |
        MapFlags.Stack | MapFlags.HugeTlb | MapFlags.Map32Bit | MapFlags.Uninitialized | MapFlags.Huge2MB | MapFlags.Huge1GB;

    /// <summary><c>MAP_HUGE_SHIFT</c>: where the log2 of a hugetlb page size sits in the flags (6 bits).</summary>
    private const int MapHugeShift = 26;

    /// <summary><c>MAP_HUGE_MASK &lt;&lt; MAP_HUGE_SHIFT</c>: the bits that name a hugetlb page size.</summary>
    public const MapFlags HugetlbSizeBits = unchecked((MapFlags)(0x3f << MapHugeShift));


    /// <summary>
    /// <c>round_hint_to_min</c>: a hint is rounded down to its page, and one below
    /// <c>mmap_min_addr</c> (but not 0) is raised to it.
    /// </summary>
    private static ulong RoundHintToMin(ulong hint)
    {
        hint &= Geometry.PageMask;
        return hint != 0 && hint < MmapMinAddr ? Geometry.PageAlign(MmapMinAddr) : hint;
    }

    /// <summary>
    /// The execute-only key for a VMA mapped or mprotected with <paramref name="prot"/> (do_mmap's
    /// <c>prot == PROT_EXEC</c>, <c>arch_override_mprotect_pkey</c>): exactly PROT_EXEC on a host
    /// that gives the key; none otherwise, which also takes it off a VMA that had it.
    /// </summary>
    private VmFlags ExecOnlyKey(Prot prot) => Machine.Options.ExecOnlyPkey && prot == Prot.Exec ? VmFlags.PkeyExecOnly : VmFlags.None;

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
    /// <c>mmap(addr, length, prot, flags, -1, 0)</c>: anonymous memory, private, droppable or shared
    /// (a shmem file behind it), with Linux's checks in Linux's order (<c>ksys_mmap_pgoff</c>, then
    /// <c>do_mmap</c>). Without MAP_ANONYMOUS there is no file to map: EBADF. Hugetlb memory
    /// (MAP_HUGETLB) is checked as the kernel checks it, its reservation against
    /// <see cref="MachineOptions.HugetlbPools"/>, and is not mapped: a call the kernel would grant
    /// comes back <see cref="MmapResult.NotModelled"/>.
    /// </summary>
    public MmapResult Mmap(Cpu cpu, ulong addr, ulong length, Prot prot, MapFlags flags) =>
        Mmap(cpu, addr, length, prot, flags, null, 0);

    /// <summary>
    /// <c>mmap(addr, length, prot, flags, fd, offset)</c> where the descriptor refers to
    /// <paramref name="file"/> (opened for reading and writing); with MAP_ANONYMOUS the file is
    /// ignored, as Linux ignores the descriptor. <paramref name="ra"/> is the readahead state of the
    /// open file the descriptor names (<see cref="SimFile.Open"/>), which the mapping's faults read
    /// ahead with; null for the file's shared one. See MmStruct.Filemap.cs for the faults.
    /// </summary>
    public MmapResult Mmap(Cpu cpu, ulong addr, ulong length, Prot prot, MapFlags flags, SimFile? file, ulong offset, FileRaState? ra = null)
    {
        if (ra is not null && file is not null && (flags & MapFlags.Anonymous) == 0 && !ReferenceEquals(ra.File, file))
        {
            throw new ArgumentException($"the readahead state belongs to {ra.File}, not to the mapped file", nameof(ra));
        }

        if ((offset & ~Geometry.PageMask) != 0)
        {
            return new(0, Errno.EINVAL); // the x86 mmap entry: an offset not on a page
        }

        bool hugetlb = (flags & MapFlags.HugeTlb) != 0;
        if ((flags & MapFlags.Anonymous) != 0)
        {
            file = null;
            offset = hugetlb ? offset : 0; // anonymous hugetlb memory is a file: the offset stays its pgoff
        }
        else if (file is null)
        {
            return new(0, Errno.EBADF); // fd -1 without MAP_ANONYMOUS
        }

        // ksys_mmap_pgoff: MAP_HUGETLB on a file needs a hugetlbfs file (the model has none);
        // anonymous hugetlb memory takes the hstate the size bits name (0: the default one) and
        // becomes a hugetlb file of the length rounded up to its page size (wrapping to 0: EINVAL).
        HugetlbPool huge = default;
        if (hugetlb)
        {
            if (file is not null || Hstate(flags) is not { } h)
            {
                return new(0, Errno.EINVAL);
            }

            huge = h;
            length = (length + h.Size - 1) & ~(h.Size - 1);
        }

        if (length == 0)
        {
            return new(0, Errno.EINVAL);
        }

        ulong len = Geometry.PageAlign(length);
        if (len == 0)
        {
            return new(0, Errno.ENOMEM);
        }

        if ((flags & MapFlags.FixedNoReplace) != 0)
        {
            flags |= MapFlags.Fixed;
        }

        if ((flags & MapFlags.Fixed) == 0)
        {
            addr = RoundHintToMin(addr);
        }

        // calc_vm_prot_bits | calc_vm_flag_bits | mm->def_flags (mlockall's MCL_FUTURE)
        var vmFlags = ProtToVmFlags(prot) | ExecOnlyKey(prot) | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec | DefFlags;
        NoteKey(vmFlags);
        if ((flags & MapFlags.Locked) != 0)
        {
            vmFlags |= VmFlags.Locked;
        }

        if ((flags & MapFlags.GrowsDown) != 0)
        {
            vmFlags |= VmFlags.GrowsDown;
        }

        if ((flags & MapFlags.Stack) != 0)
        {
            vmFlags |= VmFlags.NoHugePage; // calc_vm_flag_bits: a stack gets no transparent huge pages
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

            var placed = hugetlb ? HugetlbUnmappedArea(addr, len, flags, huge.Size) : GetUnmappedArea(addr, len, flags, file, offset);
            if (placed.Error != Errno.None)
            {
                return placed;
            }

            start = placed.Address;
            if ((flags & MapFlags.FixedNoReplace) != 0 && AnyVmaIn(start, start + len))
            {
                return new(0, Errno.EEXIST);
            }

            if ((flags & MapFlags.Locked) != 0 && !CanDoMlock)
            {
                return new(0, Errno.EPERM);
            }

            if (!MlockFutureOk(vmFlags, len))
            {
                return new(0, Errno.EAGAIN);
            }

            // The mapping type is checked only after placement (and for a file after file_mmap_ok,
            // which wants the mapping to end below MAX_LFS_FILESIZE).
            if ((file is not null || hugetlb) && (offset > long.MaxValue || len > long.MaxValue - offset))
            {
                return new(0, Errno.EOVERFLOW);
            }

            if (MapTypeError(flags, file is not null || hugetlb, file is { IsShmem: false }) is { } typeError)
            {
                return new(0, typeError);
            }

            // vms_gather_munmap_vmas: MAP_FIXED splits what it replaces at the range's edges
            // before anything else, and fails there (EINVAL) over part of a special mapping, or
            // (EPERM) over a sealed VMA.
            if ((flags & MapFlags.Fixed) != 0)
            {
                var refused = MunmapSealRefused(cpu, start, start + len);
                if (refused == Errno.None)
                {
                    refused = SplitEdges(cpu, start, start + len);
                }

                if (refused != Errno.None)
                {
                    return new(0, refused);
                }
            }

            int mapType = (int)flags & MapTypeMask;
            bool shared = mapType is (int)MapFlags.Shared or (int)MapFlags.SharedValidate;
            if (shared)
            {
                vmFlags |= VmFlags.Shared | VmFlags.MayShare;
            }
            else if (mapType == (int)MapFlags.Droppable)
            {
                // Pages that can go at any time reserve nothing, survive no fork and no core dump.
                vmFlags |= VmFlags.Droppable | VmFlags.NoReserve | VmFlags.WipeOnFork | VmFlags.DontDump;
            }

            // Overcommit heuristic (mode 0): a private writable mapping is charged unless MAP_NORESERVE.
            // MAP_FIXED over accounted VMAs charges only the pages they did not carry (mmap_region),
            // and a charge larger than RAM + swap is refused after the VMAs to be replaced were split
            // at the range's edges (vms_gather_munmap_vmas), which the failure leaves in place.
            ulong pages = len >> PhysMemory.PageShift;
            // Hugetlb memory is not charged: it reserves huge pages instead (below).
            bool account = (vmFlags & VmFlags.Write) != 0 && !shared && (flags & MapFlags.NoReserve) == 0 && (vmFlags & VmFlags.Droppable) == 0 && !hugetlb;
            if (account)
            {
                long charged = (long)pages - ((flags & MapFlags.Fixed) != 0 ? AccountedPagesIn(start, start + len) : 0);
                if (!VmEnoughMemory(charged))
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

            // From here on the old mappings in the range are gone (vms_clean_up_area): a failure
            // below leaves a gap where they were (vms_abort_munmap_vmas).
            if ((flags & MapFlags.Fixed) != 0)
            {
                UnmapLocked(cpu, start, start + len);
            }

            Errno late = Errno.None;
            if (hugetlb)
            {
                // hugetlbfs_file_mmap: the offset must be a whole huge page, and, unless
                // MAP_NORESERVE (honoured for hugetlb whatever the overcommit mode), the pages
                // must be reservable now (hugetlb_reserve_pages, hugetlb_acct_memory).
                late = (offset & (huge.Size - 1)) != 0 ? Errno.EINVAL
                    : (flags & MapFlags.NoReserve) == 0 && huge.Available is { } room && (long)(len >> huge.PageShift) > room ? Errno.ENOMEM
                    : Errno.None;
                if (late == Errno.None)
                {
                    return new(0, Errno.EINVAL) { NotModelled = true };
                }
            }
            else if (file is { IsShmem: false } && (flags & MapFlags.Sync) != 0)
            {
                // MAP_SYNC sets VM_SYNC whatever the type; the file system's mmap_prepare (ext4,
                // xfs: daxdev_mapping_supported) refuses it on a file that is not DAX.
                late = Errno.EOPNOTSUPP;
            }
            else if (file is null && shared && (vmFlags & VmFlags.NoReserve) == 0 && !VmEnoughMemory((long)pages))
            {
                late = Errno.ENOMEM; // shmem_zero_setup charges the whole shmem object (shmem_acct_size)
            }

            if (late != Errno.None)
            {
                if (account)
                {
                    _committedPages -= (long)pages;
                }

                return new(0, late);
            }

            // vm_pgoff: the file offset; 0 for shared anonymous memory (its own shmem file,
            // shmem_zero_setup); the address in pages for private anonymous memory.
            if (file is null && shared)
            {
                file = Machine.Files.CreateShmem(len);
            }

            ulong pgoff = file is not null ? offset >> PhysMemory.PageShift : start >> PhysMemory.PageShift;

            var vma = InsertVma(start, start + len, vmFlags, file, pgoff, (flags & MapFlags.Anonymous) != 0 ? null : ra);

            // __mmap_complete: a droppable VMA takes no lock from mlockall(MCL_FUTURE). Its
            // VM_LOCKED and VM_LOCKONFAULT are cleared after the merge was tried with them (so it
            // merged with nothing, and stays apart from a droppable neighbour), nothing counts in
            // VmLck, but the populate below still follows the lock asked for, and with no
            // VM_LOCKONFAULT left on the VMA it faults the whole range in.
            if ((vmFlags & VmFlags.Droppable) != 0)
            {
                vma.Flags &= ~LockedMask;
            }

            if ((vma.Flags & VmFlags.Locked) != 0)
            {
                _lockedPages += (long)pages;
            }
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        bool populate = (flags & (MapFlags.Populate | MapFlags.NonBlock)) == MapFlags.Populate || (vmFlags & VmFlags.Locked) != 0;
        if (populate)
        {
            MmPopulate(cpu, start, start + len, ignoreErrors: true);
        }

        return new(start, Errno.None);
    }

    /// <summary>
    /// The page size of the hugetlb memory a MAP_HUGETLB mmap with <paramref name="flags"/> asks
    /// for (<see cref="HugetlbSizeBits"/>), or null where the host has no such size (EINVAL).
    /// </summary>
    public ulong? HugetlbPageSize(MapFlags flags) => Hstate(flags)?.Size;

    /// <summary>
    /// <c>hstate_sizelog</c>: the hugetlb size whose log2 the size bits of <paramref name="flags"/>
    /// give, the default one (the first of <see cref="MachineOptions.HugetlbPools"/>) for 0; null
    /// where the host has none.
    /// </summary>
    private HugetlbPool? Hstate(MapFlags flags)
    {
        int log = (int)((uint)(flags & HugetlbSizeBits) >> MapHugeShift);
        var pools = Machine.Options.HugetlbPools;
        if (log == 0)
        {
            return pools.Count > 0 ? pools[0] : null;
        }

        foreach (var p in pools)
        {
            if (p.PageShift == log)
            {
                return p;
            }
        }

        return null;
    }

    /// <summary>
    /// <c>hugetlb_get_unmapped_area</c>, after <c>__get_unmapped_area</c>'s length check (ENOMEM):
    /// MAP_FIXED needs an address on a huge page (EINVAL); a hint
    /// is rounded up to one and taken where it is free; otherwise the highest free range below
    /// <see cref="MmapBase"/> aligned to the huge page size.
    /// </summary>
    private MmapResult HugetlbUnmappedArea(ulong addr, ulong len, MapFlags flags, ulong size)
    {
        ulong mask = size - 1;
        if (len > Geometry.TaskSize)
        {
            return new(0, Errno.ENOMEM); // __get_unmapped_area, before the file's own
        }

        if ((flags & MapFlags.Fixed) != 0)
        {
            return (addr & mask) != 0 ? new(0, Errno.EINVAL) : GetUnmappedArea(addr, len, flags, null, 0);
        }

        ulong hint = addr == 0 ? 0 : (addr + mask) & ~mask; // wrapping to 0: no hint
        if (HintFits(hint, len))
        {
            return new(hint, Errno.None);
        }

        ulong start = UnmappedAreaTopDown(len, mask, 0);
        return start == 0 ? new(0, Errno.ENOMEM) : new(start, Errno.None);
    }

    /// <summary>
    /// <c>get_unmapped_area</c> with x86's <c>arch_get_unmapped_area_topdown</c>: MAP_FIXED takes
    /// the address as it is; a regular file places itself (<see cref="FileThpUnmappedArea"/>); for
    /// anonymous memory a free hint is honoured (keeping clear of a stack's guard gap), otherwise the
    /// highest free range below <see cref="MmapBase"/>, 2 MiB aligned for memory that is not shared and whose
    /// length is a multiple of 2 MiB (<c>__thp_get_unmapped_area</c>).
    /// </summary>
    private MmapResult GetUnmappedArea(ulong addr, ulong len, MapFlags flags, SimFile? file, ulong offset)
    {
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

            return addr < MmapMinAddr ? new(0, Errno.EPERM) : new(addr, Errno.None); // security_mmap_addr
        }

        if (file is { IsShmem: false })
        {
            // A regular file's get_unmapped_area (thp_get_unmapped_area) tries the hint itself.
            ulong placed = FileThpUnmappedArea(addr, len, offset);
            return placed == 0 ? new(0, Errno.ENOMEM) : new(placed, Errno.None);
        }

        // The hint check of arch_get_unmapped_area_topdown (round_hint_to_min ran before).
        if (HintFits(addr, len))
        {
            return new(addr, Errno.None);
        }

        // stack_guard_placement asks for a gap below the new mapping only for a shadow stack (not
        // modelled); a MAP_GROWSDOWN stack may be placed right above another mapping, and its own
        // guard gap then only limits how far it grows.
        ulong startGap = 0;
        ulong start = 0;
        if (addr == 0 && (len & (Geometry.PmdSize - 1)) == 0 && file is null && (flags & MapFlags.Shared) == 0)
        {
            // __thp_get_unmapped_area: ask for len + PMD_SIZE, then move the result up to a 2 MiB
            // boundary (a whole PMD_SIZE up when it already is one: the top-down search put the
            // padding above the mapping).
            ulong padded = UnmappedAreaTopDown(len + Geometry.PmdSize, 0, startGap);
            if (padded != 0)
            {
                ulong sub = (0 - padded) & (Geometry.PmdSize - 1);
                start = sub == 0 ? padded + Geometry.PmdSize : padded + sub;
            }
        }

        if (start == 0)
        {
            start = UnmappedAreaTopDown(len, 0, startGap);
        }

        return start == 0 ? new(0, Errno.ENOMEM) : new(start, Errno.None);
    }

    /// <summary>
    /// The type switch of <c>do_mmap</c>: for anonymous memory MAP_PRIVATE, MAP_SHARED (not with
    /// MAP_GROWSDOWN) and MAP_DROPPABLE (not with MAP_LOCKED or MAP_GROWSDOWN); for a file
    /// MAP_PRIVATE, MAP_SHARED (unknown flags ignored) and MAP_SHARED_VALIDATE (unknown flags
    /// EOPNOTSUPP), none with MAP_GROWSDOWN. Anything else is EINVAL. Null when the type is fine.
    /// </summary>
    private static Errno? MapTypeError(MapFlags flags, bool file, bool mapSync)
    {
        int type = (int)flags & MapTypeMask;
        if (type == (int)MapFlags.Private)
        {
            return file && (flags & MapFlags.GrowsDown) != 0 ? Errno.EINVAL : null;
        }

        if (!file)
        {
            return type switch
            {
                (int)MapFlags.Shared => (flags & MapFlags.GrowsDown) == 0 ? null : Errno.EINVAL,
                (int)MapFlags.Droppable => (flags & (MapFlags.Locked | MapFlags.GrowsDown)) == 0 ? null : Errno.EINVAL,
                _ => Errno.EINVAL,
            };
        }

        // A regular file is taken to live on a file system that advertises MAP_SYNC
        // (FOP_MMAP_SYNC: ext4, xfs); shmem and hugetlbfs do not.
        // Every file type then refuses a mapping that would grow (VM_GROWSDOWN).
        var mask = mapSync ? LegacyMapMask | MapFlags.Sync : LegacyMapMask;
        var growsDown = (flags & MapFlags.GrowsDown) != 0 ? Errno.EINVAL : (Errno?)null;
        return type switch
        {
            (int)MapFlags.Shared => growsDown,
            (int)MapFlags.SharedValidate => (flags & ~mask) != 0 ? Errno.EOPNOTSUPP : growsDown,
            _ => Errno.EINVAL,
        };
    }

    /// <summary>Inserts a new VMA at a free range, links it into its file's <c>i_mmap</c>, and merges it with compatible neighbours.</summary>
    private Vma InsertVma(ulong start, ulong end, VmFlags flags, SimFile? file, ulong pgoff, FileRaState? ra)
    {
        var vma = new Vma(start, end, flags, null, pgoff) { Mm = this, File = file, Ra = ra };
        file?.LinkVma(vma);
        _vmas.Insert(vma);
        return MergeAround(vma);
    }

    /// <summary>Pages of VM_ACCOUNT VMAs inside [start, end) (<c>vms-&gt;nr_accounted</c>).</summary>
    private long AccountedPagesIn(ulong start, ulong end)
    {
        long pages = 0;
        for (var v = FindVma(start); v is not null && v.Start < end; v = v.NextVma)
        {
            if ((v.Flags & VmFlags.Account) != 0)
            {
                pages += (long)((Math.Min(v.End, end) - Math.Max(v.Start, start)) >> PhysMemory.PageShift);
            }
        }

        return pages;
    }

    /// <summary>
    /// <c>__vm_enough_memory</c> in the default overcommit mode (heuristic): one charge may not exceed
    /// RAM plus swap; no charge is ever refused for what is already committed.
    /// </summary>
    private bool VmEnoughMemory(long pages) => pages <= Phys.TotalFrames + (Phys.Swap?.Slots ?? 0);

    /// <summary><c>munmap(addr, length)</c>.</summary>
    public Errno Munmap(Cpu cpu, ulong addr, ulong length)
    {
        if ((addr & ~Geometry.PageMask) != 0 || addr > Geometry.TaskSize || length > Geometry.TaskSize - addr)
        {
            return Errno.EINVAL;
        }

        ulong len = Geometry.PageAlign(length);
        if (len == 0)
        {
            return Errno.EINVAL;
        }

        Errno error;
        MmapLock.DownWrite(cpu.Id);
        try
        {
            error = UnmapLocked(cpu, addr, addr + len);
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        Rcu.Poll();
        return error;
    }

    /// <summary>
    /// <c>do_vmi_munmap</c> + <c>unmap_region</c>, with <c>mmap_lock</c> held for write: split at
    /// the edges, detach the VMAs inside, zap them, then <c>free_pgtables</c> between the
    /// neighbours' floor and ceiling. An empty range is refused before anything is split, as
    /// <c>do_vmi_munmap</c> refuses it (EINVAL, which mremap's move of an old length of 0, the
    /// duplication of a shared mapping, ignores): the source VMA stays whole. EINVAL when the
    /// range cuts a special mapping, which refuses the split (the split at the start, if made, stays).
    /// </summary>
    private Errno UnmapLocked(Cpu cpu, ulong start, ulong end)
    {
        if (start >= end || !AnyVmaIn(start, end))
        {
            return Errno.None;
        }

        if (MunmapSealRefused(cpu, start, end) is var sealRefused and not Errno.None)
        {
            return sealRefused;
        }

        if (SplitEdges(cpu, start, end) is var refused and not Errno.None)
        {
            return refused;
        }

        var doomed = new List<Vma>();
        for (var v = FindVma(start); v is not null && v.Start < end; v = v.NextVma)
        {
            doomed.Add(v);
        }

        ulong floor = doomed[0].PrevVma?.End ?? 0;
        ulong ceiling = doomed[^1].NextVma?.Start ?? 0; // USER_PGTABLES_CEILING
        foreach (var v in doomed)
        {
            _vmas.Remove(v);
            if ((v.Flags & VmFlags.Locked) != 0)
            {
                _lockedPages -= (long)(v.Length >> PhysMemory.PageShift);
            }
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
        return Errno.None;
    }

    /// <summary>Memory charged against overcommit by writable private mappings (<c>Committed_AS</c> share), in pages.</summary>
    public long CommittedPages => _committedPages;
}
