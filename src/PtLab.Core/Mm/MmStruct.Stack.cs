using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/mmap.c and mm/vma.c: stacks that grow down (MAP_GROWSDOWN) when a fault lands below them.
public sealed partial class MmStruct
{
    /// <summary><c>RLIMIT_STACK</c> in bytes (8 MiB, the usual default): the most a stack VMA may grow to.</summary>
    public ulong RlimitStack { get; set; } = 8UL << 20;

    /// <summary>Stack expansions done (a fault below a VM_GROWSDOWN VMA that grew it).</summary>
    public long StackExpansions => Volatile.Read(ref _stackExpansions);

    private long _stackExpansions;

    /// <summary>
    /// <c>lock_mm_and_find_vma</c>'s stack case: the fault at <paramref name="addr"/> is below a
    /// VM_GROWSDOWN VMA. <c>mmap_lock</c> is taken for write (the caller's read hold is dropped
    /// and taken again), the VMA found again and grown (<c>expand_stack_locked</c>). Returns the
    /// VMA that now covers the address, or null (SIGSEGV) when it may not grow.
    /// </summary>
    private Vma? ExpandStackForFault(Cpu cpu, ulong addr)
    {
        MmapLock.UpRead(cpu.Id);
        MmapLock.DownWrite(cpu.Id);
        try
        {
            var vma = FindVma(addr);
            if (vma is null || (vma.Start > addr && ((vma.Flags & VmFlags.GrowsDown) == 0 || ExpandDownwards(vma, addr) != Errno.None)))
            {
                return null;
            }
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
            MmapLock.DownRead(cpu.Id);
        }

        var now = FindVma(addr);
        return now is not null && now.Start <= addr ? now : null;
    }

    /// <summary>
    /// <c>expand_downwards</c>: lowers the VMA's start to the page of <paramref name="addr"/>,
    /// unless the address is below <c>mmap_min_addr</c> (EPERM), a non-stack accessible VMA ends
    /// less than <see cref="StackGuardGap"/> below it, or <c>acct_stack_growth</c> refuses
    /// (ENOMEM). Caller holds <c>mmap_lock</c> for write.
    /// </summary>
    internal Errno ExpandDownwards(Vma vma, ulong addr)
    {
        if ((vma.Flags & VmFlags.GrowsDown) == 0)
        {
            return Errno.EFAULT;
        }

        addr &= Geometry.PageMask;
        if (addr < MmapMinAddr)
        {
            return Errno.EPERM;
        }

        if (vma.PrevVma is { } prev && (prev.Flags & VmFlags.GrowsDown) == 0 &&
            (prev.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) != 0 && addr - prev.End < StackGuardGap)
        {
            return Errno.ENOMEM;
        }

        if (vma.PrevVma is { } below && addr < below.End)
        {
            return Errno.ENOMEM; // the guard gap of a neighbour stack, or none at all
        }

        AnonVmaPrepare(vma);
        if (addr >= vma.Start)
        {
            return Errno.None; // someone else grew it already
        }

        ulong size = vma.End - addr;
        ulong grow = (vma.Start - addr) >> PhysMemory.PageShift;
        if (grow > vma.PgOff)
        {
            return Errno.ENOMEM; // the page offset cannot go below zero
        }

        var error = AcctStackGrowth(vma, size, grow);
        if (error != Errno.None)
        {
            return error;
        }

        if ((vma.Flags & VmFlags.Locked) != 0)
        {
            _lockedPages += (long)grow;
        }

        if ((vma.Flags & VmFlags.Account) != 0)
        {
            _committedPages += (long)grow;
        }

        _vmas.SetStart(vma, addr);
        vma.PgOff -= grow;
        Interlocked.Increment(ref _stackExpansions);
        return Errno.None;
    }

    /// <summary><c>acct_stack_growth</c>: the new size within <c>RLIMIT_STACK</c> and the memlock limit.</summary>
    private Errno AcctStackGrowth(Vma vma, ulong size, ulong grow)
    {
        if (size > RlimitStack)
        {
            return Errno.ENOMEM;
        }

        if (!MlockFutureOk(vma.Flags, grow << PhysMemory.PageShift))
        {
            return Errno.ENOMEM;
        }

        return Errno.None;
    }
}
