using PtLab.Paging;

namespace PtLab.Mm;

// mm/mprotect.c: mprotect, mprotect_fixup and change_pte_range.
public sealed partial class MmStruct
{
    /// <summary><c>PROT_GROWSDOWN</c>: apply to the whole stack VMA, from its start.</summary>
    private const Prot ProtGrowsDown = (Prot)0x0100_0000;

    /// <summary><c>PROT_GROWSUP</c>: x86 has no upward-growing VMAs.</summary>
    private const Prot ProtGrowsUp = (Prot)0x0200_0000;

    /// <summary><c>mprotect(addr, length, prot)</c> (<c>do_mprotect_pkey</c>).</summary>
    public Errno Mprotect(Cpu cpu, ulong addr, ulong length, Prot prot)
    {
        var grows = prot & (ProtGrowsDown | ProtGrowsUp);
        prot &= ~(ProtGrowsDown | ProtGrowsUp);
        if (grows == (ProtGrowsDown | ProtGrowsUp))
        {
            return Errno.EINVAL;
        }

        if ((addr & ~Geometry.PageMask) != 0)
        {
            return Errno.EINVAL;
        }

        if (length == 0)
        {
            return Errno.None;
        }

        ulong len = Geometry.PageAlign(length);
        ulong end = addr + len;
        if (end <= addr)
        {
            return Errno.ENOMEM;
        }

        if ((prot & ~(Prot.Read | Prot.Write | Prot.Exec | Prot.Sem)) != 0)
        {
            return Errno.EINVAL; // arch_validate_prot
        }

        var newAccess = ProtToVmFlags(prot) | ExecOnlyKey(prot);
        NoteKey(newAccess);
        MmapLock.DownWrite(cpu.Id);
        try
        {
            // vma_find(start, end): the first VMA in the range, then the grows rules.
            var vma = FindVma(addr);
            if (vma is null || vma.Start >= end)
            {
                return Errno.ENOMEM;
            }

            if (grows == ProtGrowsDown)
            {
                if ((vma.Flags & VmFlags.GrowsDown) == 0)
                {
                    return Errno.EINVAL;
                }

                addr = vma.Start;
            }
            else if (vma.Start > addr)
            {
                return Errno.ENOMEM;
            }
            else if (grows == ProtGrowsUp)
            {
                return Errno.EINVAL; // VM_GROWSUP is no flag on x86
            }

            ulong nstart = addr;
            var tlb = new MmuGather(this, cpu);
            Errno error = Errno.None;
            while (true)
            {
                vma = FindVma(nstart)!;
                ulong tmp = Math.Min(vma.End, end);
                error = MprotectFixup(cpu, tlb, vma, nstart, tmp, newAccess);
                if (error != Errno.None)
                {
                    break;
                }

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

    /// <summary>
    /// <c>do_mprotect_pkey</c>'s check of one VMA (EACCES for an access its VM_MAY* bits do not
    /// allow, as on the vvar pages, which lack VM_MAYWRITE), then <c>mprotect_fixup</c>: charge or
    /// uncharge, split (which a special mapping refuses: EINVAL, the charge given back), set the
    /// flags, change the entries, merge.
    /// </summary>
    private Errno MprotectFixup(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, VmFlags access)
    {
        MmapLock.AssertWriteHeld(cpu.Id);
        const VmFlags accessMask = VmFlags.Read | VmFlags.Write | VmFlags.Exec;
        var newFlags = (vma.Flags & ~(accessMask | VmFlags.PkeyExecOnly)) | access;
        if (((ulong)newFlags & ~((ulong)newFlags >> 4) & (ulong)accessMask) != 0)
        {
            return Errno.EACCES; // VM_MAYREAD/WRITE/EXEC sit four bits above VM_READ/WRITE/EXEC
        }

        if (IsSealed(vma))
        {
            return Errno.EPERM; // mprotect_fixup: before the no-change shortcut, so even that fails
        }

        if (newFlags == vma.Flags)
        {
            return Errno.None;
        }

        var oldFlags = vma.Flags;
        long pages = (long)((end - start) >> PtLab.Phys.PhysMemory.PageShift);
        if ((newFlags & VmFlags.Write) != 0)
        {
            if ((oldFlags & (VmFlags.Write | VmFlags.Account | VmFlags.NoReserve | VmFlags.Shared)) == 0)
            {
                // A private mapping made writable is charged from now on (a shared one never); the
                // charge can be refused.
                if (!VmEnoughMemory(pages))
                {
                    return Errno.ENOMEM;
                }

                newFlags |= VmFlags.Account;
                _committedPages += pages;
            }
        }
        else if ((oldFlags & VmFlags.Account) != 0 && vma.File is null && vma.AnonVma is null)
        {
            // An anonymous mapping made unwritable before any page was written (no anon_vma yet):
            // nothing can need the charge any more, so it is dropped, and the VMA can merge with
            // unaccounted neighbours. A private file mapping keeps it (vma_is_anonymous is false).
            newFlags &= ~VmFlags.Account;
        }

        if (SplitEdges(cpu, start, end) is var refused and not Errno.None)
        {
            if ((newFlags & VmFlags.Account) != 0 && (oldFlags & VmFlags.Account) == 0)
            {
                _committedPages -= pages;
            }

            return refused;
        }

        var target = FindVma(start)!;
        target.Flags = newFlags;
        ChangeProtection(cpu, tlb, target, start, end, newFlags);
        target = MergeAround(target);
        if ((oldFlags & VmFlags.Account) != 0 && (newFlags & VmFlags.Account) == 0)
        {
            _committedPages -= pages; // vm_unacct_memory
        }

        if ((oldFlags & (VmFlags.Write | VmFlags.Shared | VmFlags.Locked)) == VmFlags.Locked && (newFlags & VmFlags.Write) != 0)
        {
            // A private locked VMA made writable is faulted in for writing now (COW done at once),
            // so a locked page never takes a fault later (populate_vma_page_range).
            PopulateVmaPageRange(cpu, target, start, end);
        }

        return Errno.None;
    }

    /// <summary>
    /// <c>change_pte_range</c>: rewrites present entries for the new protection through
    /// <c>ptep_modify_prot_start/commit</c> (a clear then a set). Write access is granted at once only
    /// where <see cref="CanChangePteWritable"/> allows it (exclusive, dirty anonymous pages; shared
    /// pages that need no write notification); others fault to get it.
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
            if (Entry.IsHuge(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
            {
                // change_pmd_range: a leaf the range covers whole is rewritten, part of one split first.
                if (next - addr == Geometry.PmdSize && ChangeHugePmd(cpu, tlb, pmdTable, pmdIndex, addr, flags))
                {
                    addr = next;
                    continue;
                }

                SplitHugePmd(cpu, vma, pmdTable, pmdIndex, addr & Geometry.PmdMask);
            }

            var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
            if (!pteTable.IsNone)
            {
                var entries = Phys.Table(pteTable);
                for (ulong va = addr; va < next; va += Geometry.PageSize)
                {
                    int i = Geometry.PteIndex(va);
                    ulong e = Volatile.Read(ref entries[i]);
                    if (!Entry.IsPresent(e))
                    {
                        continue;
                    }

                    ulong old = PtepGetAndClear(cpu, pteTable, i);
                    ulong n = old & ~(Entry.Writable | Entry.NoExecute | Entry.Present | Entry.ProtNone);
                    if (none)
                    {
                        n |= Entry.ProtNone;
                    }
                    else
                    {
                        n |= Entry.Present;
                        if (writable && CanChangePteWritable(vma, old))
                        {
                            n |= Entry.Writable;
                        }
                    }

                    if (noExec)
                    {
                        n |= Entry.NoExecute;
                    }

                    SetPteAt(cpu, pteTable, i, n);
                    tlb.RemoveTlbEntry(va);
                }

                PteUnmapUnlock(cpu, pteTable);
            }

            addr = next;
        }
    }
}
