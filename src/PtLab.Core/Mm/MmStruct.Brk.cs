using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/mmap.c: brk and do_brk_flags, the heap that grows above the program's data.
public sealed partial class MmStruct
{
    /// <summary>
    /// Where the heap starts when nothing sets it: just above a small position-independent
    /// program loaded at x86-64's <c>ELF_ET_DYN_BASE</c> (0x555555554000) without randomisation.
    /// </summary>
    public const ulong DefaultStartBrk = 0x5555_5556_0000UL;

    private ulong _startBrk = DefaultStartBrk;
    private ulong _brk = DefaultStartBrk;

    /// <summary><c>mm-&gt;start_brk</c>.</summary>
    public ulong StartBrk => _startBrk;

    /// <summary><c>mm-&gt;brk</c>: the current break, as the program last set it (not page-aligned).</summary>
    public ulong CurrentBrk => _brk;

    /// <summary><c>RLIMIT_DATA</c> in bytes (unlimited unless set, as by default).</summary>
    public ulong RlimitData { get; set; } = ulong.MaxValue;

    /// <summary>
    /// Sets where the heap starts and the break to it (what exec does from the ELF's end, and
    /// what <c>prctl(PR_SET_MM_START_BRK/PR_SET_MM_BRK)</c> can do): a replay starts with the
    /// recorded process's initial break. The address is rounded up to a page.
    /// </summary>
    public void SetBrkBase(Cpu cpu, ulong start)
    {
        start = Geometry.PageAlign(start);
        if (start < MmapMinAddr || start >= Geometry.TaskSize)
        {
            throw new ArgumentOutOfRangeException(nameof(start), $"0x{start:x} is outside user space");
        }

        MmapLock.DownWrite(cpu.Id);
        _startBrk = _brk = start;
        MmapLock.UpWrite(cpu.Id);
    }

    /// <summary>
    /// <c>brk(addr)</c>: returns the new break, or the old one when the request is refused (below
    /// <c>start_brk</c>, over <c>RLIMIT_DATA</c>, into another mapping or a stack's guard gap, over
    /// the memlock limit after <c>mlockall(MCL_FUTURE)</c>, or out of memory). Growing extends the
    /// heap VMA (read-write, accounted) when it ends at the old break, else maps a new one;
    /// shrinking unmaps, which frees tables as munmap does.
    /// </summary>
    public ulong Brk(Cpu cpu, ulong brk)
    {
        bool populate = false;
        ulong oldBrkPage, newBrkPage;
        MmapLock.DownWrite(cpu.Id);
        try
        {
            ulong orig = _brk;
            if (_dead || brk < _startBrk || !CheckDataRlimit(brk))
            {
                return orig;
            }

            newBrkPage = Geometry.PageAlign(brk);
            oldBrkPage = Geometry.PageAlign(_brk);
            if (oldBrkPage == newBrkPage)
            {
                _brk = brk;
                return brk;
            }

            if (brk <= _brk)
            {
                // Always allow shrinking, unless the range holds something that is not the heap.
                var brkVma = FindVma(newBrkPage);
                if (brkVma is null || brkVma.Start >= oldBrkPage)
                {
                    return orig;
                }

                _brk = brk;
                if (UnmapLocked(cpu, newBrkPage, oldBrkPage) != Errno.None)
                {
                    _brk = orig; // a sealed heap: brk answers with the old break
                    return orig;
                }

                return brk;
            }

            ulong len = newBrkPage - oldBrkPage;
            // check_brk_limits, then a stack's guard gap above.
            if (!GetUnmappedArea(oldBrkPage, len, MapFlags.Fixed, null, 0).Ok || !MlockFutureOk(DefFlags, len))
            {
                return orig;
            }

            var next = FindVma(oldBrkPage);
            if (next is not null && next.Start < newBrkPage + Geometry.PageSize + StackGuardGap &&
                newBrkPage + Geometry.PageSize > VmStartGap(next))
            {
                return orig;
            }

            if (!DoBrkFlags(oldBrkPage, len))
            {
                return orig;
            }

            _brk = brk;
            populate = (DefFlags & VmFlags.Locked) != 0;
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        if (populate)
        {
            MmPopulate(cpu, oldBrkPage, newBrkPage, ignoreErrors: true);
        }

        return brk;
    }

    /// <summary><c>check_data_rlimit</c> (no data segment is modelled: only the heap counts).</summary>
    private bool CheckDataRlimit(ulong brk) => RlimitData == ulong.MaxValue || brk - _startBrk <= RlimitData;

    /// <summary>
    /// <c>do_brk_flags</c>: [addr, addr + len) read-write, accounted, with <c>mm-&gt;def_flags</c>.
    /// It extends the VMA just below when that one reaches above <c>start_brk</c> (brk finds it with
    /// <c>vma_prev_limit(start_brk)</c>, which returns a VMA that only overlaps the heap's start
    /// too, such as a mapping the heap merged with), ends at <paramref name="addr"/> and has the
    /// same flags but for the sticky ones (a heap that took guard markers still grows in place);
    /// otherwise it is a VMA of its own, merged with nothing.
    /// </summary>
    private bool DoBrkFlags(ulong addr, ulong len)
    {
        var flags = VmFlags.Read | VmFlags.Write | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec | VmFlags.Account | DefFlags;
        long pages = (long)(len >> PhysMemory.PageShift);
        if (_vmas.Count > MaxMapCount || pages > Phys.TotalFrames)
        {
            return false;
        }

        var prev = FindVma(addr - 1);
        if (prev is not null && prev.End > _startBrk && prev.End == addr && ((prev.Flags ^ flags) & ~VmSticky) == 0 &&
            prev.PgOff + (prev.Length >> PhysMemory.PageShift) == addr >> PhysMemory.PageShift)
        {
            _vmas.SetEnd(prev, addr + len);
        }
        else
        {
            _vmas.Insert(new Vma(addr, addr + len, flags, null, addr >> PhysMemory.PageShift) { Mm = this });
        }

        _committedPages += pages;
        if ((flags & VmFlags.Locked) != 0)
        {
            _lockedPages += pages;
        }

        return true;
    }
}
