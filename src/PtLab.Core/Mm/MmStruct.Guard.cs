using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/madvise.c: MADV_GUARD_INSTALL and MADV_GUARD_REMOVE (Linux 6.13+).
public sealed partial class MmStruct
{
    /// <summary>What one install pass over a range found (the page walk's return value).</summary>
    private enum GuardInstallPass
    {
        /// <summary>Every page of the range holds a guard marker now.</summary>
        Done,

        /// <summary>A page or huge pmd is mapped in the range: zap it and walk again.</summary>
        NeedsZap,

        /// <summary>A table could not be allocated.</summary>
        OutOfMemory,
    }

    /// <summary>
    /// <c>is_valid_guard_vma</c>: no guard markers in a <c>VM_SPECIAL</c> VMA (<c>VM_IO</c>,
    /// <c>VM_DONTEXPAND</c>, <c>VM_PFNMAP</c>, <c>VM_MIXEDMAP</c>) or a hugetlb one (the model maps
    /// none); an install also refuses a <c>VM_LOCKED</c> VMA, whose pages it would have to zap,
    /// while a remove, which destroys nothing, accepts it.
    /// </summary>
    private static bool IsValidGuardVma(Vma vma, bool allowLocked)
    {
        var disallowed = VmFlags.Io | VmFlags.DontExpand | VmFlags.PfnMap | VmFlags.MixedMap;
        if (!allowLocked)
        {
            disallowed |= VmFlags.Locked;
        }

        return (vma.Flags & disallowed) == 0;
    }

    /// <summary>
    /// <c>madvise_guard_install</c> over [start, end) of <paramref name="vma"/>, under
    /// <c>mmap_lock</c> for read. The whole VMA gets <see cref="VmFlags.MaybeGuard"/> (so fork
    /// copies its tables and with them the markers), an anonymous VMA an anon_vma too (a
    /// file-backed or shared one gets none, and still merges as before), then a page walk that allocates any missing table stores a guard marker in
    /// every none entry. Where it meets a mapped page, a swap entry or a huge pmd it stops (the
    /// markers stored so far stay), the range is zapped with no details (markers stay, everything
    /// else goes; a huge pmd is split or zapped whole), and the walk runs again. Upstream gives up
    /// after three tries and restarts the system call, which a caller sees as the same loop.
    /// </summary>
    private Errno MadviseGuardInstall(Cpu cpu, Vma vma, ulong start, ulong end)
    {
        if (!IsValidGuardVma(vma, allowLocked: false))
        {
            return Errno.EINVAL;
        }

        // vma_flag_set_atomic, under the read lock and without a split. A plain read-modify-write
        // does here: every other change of a VMA's flags holds mmap_lock for write, so the only
        // racing writer is another install setting the same bit.
        vma.Flags |= VmFlags.MaybeGuard;
        if (vma.IsAnonymous)
        {
            AnonVmaPrepare(vma);
        }

        while (true)
        {
            switch (GuardInstallWalk(cpu, start, end))
            {
                case GuardInstallPass.Done:
                    return Errno.None;
                case GuardInstallPass.OutOfMemory:
                    return Errno.ENOMEM;
            }

            // zap_page_range_single: its own gather, finished (flushed) before the next walk.
            var tlb = new MmuGather(this, cpu);
            try
            {
                UnmapPageRange(cpu, tlb, vma, start, end, ZapReason.NoDetails);
            }
            finally
            {
                tlb.Finish();
            }
        }
    }

    /// <summary>
    /// One pass of <c>walk_page_range_mm</c> with <c>guard_install_walk_ops</c>: allocates the PUD,
    /// PMD and PTE tables the range lacks, and under each PTE lock stores a marker in each none entry
    /// in address order, until an entry that is neither none nor a marker, or a huge pmd, ends it.
    /// </summary>
    private GuardInstallPass GuardInstallWalk(Cpu cpu, ulong start, ulong end)
    {
        MmapLock.AssertHeld(cpu.Id);
        for (ulong addr = start; addr < end;)
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            long pud = PudAlloc(cpu, addr);
            long pmdTable = pud < 0 ? -1 : PmdAlloc(cpu, pud, addr);
            if (pmdTable < 0)
            {
                return GuardInstallPass.OutOfMemory;
            }

            int pmdIndex = Geometry.Index(addr, 2);
            TableRef pteTable;
            while ((pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex)).IsNone)
            {
                // guard_install_pmd_entry: a huge pmd (one a racing fault just mapped, too) needs the zap.
                if (Entry.IsHuge(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
                {
                    return GuardInstallPass.NeedsZap;
                }

                if (!PteAlloc(cpu, pmdTable, pmdIndex))
                {
                    return GuardInstallPass.OutOfMemory;
                }
            }

            var entries = Phys.Table(pteTable);
            for (ulong va = addr; va < next; va += Geometry.PageSize)
            {
                int i = Geometry.PteIndex(va);
                ulong e = Volatile.Read(ref entries[i]);
                if (Entry.IsNone(e))
                {
                    SetPteAt(cpu, pteTable, i, Entry.GuardMarker); // guard_install_set_pte
                }
                else if (!Entry.IsGuardMarker(e))
                {
                    PteUnmapUnlock(cpu, pteTable);
                    return GuardInstallPass.NeedsZap; // guard_install_pte_entry: populated
                }
            }

            PteUnmapUnlock(cpu, pteTable);
            addr = next;
        }

        return GuardInstallPass.Done;
    }

    /// <summary>
    /// <c>madvise_guard_remove</c> over [start, end) of <paramref name="vma"/>, under
    /// <c>mmap_lock</c> for read: clears each guard marker in the tables that exist
    /// (<c>pte_clear_not_present_full</c>; no flush, nothing was present), skipping huge pmds, which
    /// hold none. Pages mapped in the range stay, and no table is freed.
    /// </summary>
    private Errno MadviseGuardRemove(Cpu cpu, Vma vma, ulong start, ulong end)
    {
        if (!IsValidGuardVma(vma, allowLocked: true))
        {
            return Errno.EINVAL;
        }

        MmapLock.AssertHeld(cpu.Id);
        for (ulong addr = start, next; addr < end; addr = next)
        {
            long pmdTable = PmdTableOf(addr);
            next = pmdTable < 0 ? Geometry.PudAddrEnd(addr, end) : Geometry.PmdAddrEnd(addr, end);
            if (pmdTable >= 0)
            {
                ClearGuardMarkers(cpu, pmdTable, addr, next);
            }
        }

        return Errno.None;
    }

    /// <summary><c>guard_remove_pte_entry</c> over [addr, next), all in one PTE table, under its lock; a huge pmd maps no table and is skipped.</summary>
    private void ClearGuardMarkers(Cpu cpu, long pmdTable, ulong addr, ulong next)
    {
        var pteTable = PteOffsetMapLock(cpu, pmdTable, Geometry.Index(addr, 2));
        if (pteTable.IsNone)
        {
            return;
        }

        var entries = Phys.Table(pteTable);
        for (ulong va = addr; va < next; va += Geometry.PageSize)
        {
            int i = Geometry.PteIndex(va);
            if (Entry.IsGuardMarker(Volatile.Read(ref entries[i])))
            {
                PteClear(cpu, pteTable, i);
            }
        }

        PteUnmapUnlock(cpu, pteTable);
    }
}
