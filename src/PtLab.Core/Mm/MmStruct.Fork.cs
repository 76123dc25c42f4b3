using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

// fork's copy of an address space (kernel/fork.c dup_mmap, mm/memory.c copy_page_range and
// vma_needs_copy), and the mm_users count exec and exit drop.
public sealed partial class MmStruct
{
    private int _users = 1;

    /// <summary><c>mm_users</c>: processes sharing this address space (vfork, <c>CLONE_VM</c>).</summary>
    public int Users => Volatile.Read(ref _users);

    /// <summary><c>mmget</c>: one more process uses the address space.</summary>
    internal void Mmget() => Interlocked.Increment(ref _users);

    /// <summary><c>mmput</c>: a process stops using the address space; the last one tears it down (<see cref="Exit"/>).</summary>
    public void Mmput(Cpu cpu)
    {
        int left = Interlocked.Decrement(ref _users);
        if (left < 0)
        {
            throw new InvalidOperationException("mmput of an address space nobody uses");
        }

        if (left == 0)
        {
            Exit(cpu);
        }
    }

    /// <summary>
    /// <c>dup_mmap</c>: a new address space with a copy of every VMA but those marked
    /// <c>VM_DONTCOPY</c> (MADV_DONTFORK) (flags, page offset, file, committed memory) and the
    /// parent's heap (<c>start_brk</c>, <c>brk</c>), linked into the same reverse maps (<c>anon_vma_fork</c>: the parent's
    /// anon_vmas plus a new one of its own; <c>i_mmap</c> for files). Page tables are copied only
    /// where <see cref="VmaNeedsCopy"/> says a fault could not rebuild them; there
    /// <see cref="CopyPageRange"/> shares every page and write-protects private writable ones in
    /// both. The parent's TLBs are flushed at the end (<c>flush_tlb_mm</c>). Both mmap_locks are
    /// held for write throughout. A <c>VM_WIPEONFORK</c> VMA is copied empty: no anon_vma, no
    /// tables. Returns null, leaving nothing behind, when memory ran out.
    /// </summary>
    public MmStruct? Fork(Cpu cpu)
    {
        var child = Machine.NewAddressSpace(MmapBase);
        bool ok = true;
        MmapLock.DownWrite(cpu.Id);
        try
        {
            if (_dead)
            {
                throw new InvalidOperationException("fork of an address space that has exited");
            }

            child.MmapLock.DownWriteNested(cpu.Id, 1);
            try
            {
                // dup_mm copies the whole mm_struct: the child's heap is the parent's, with its break.
                (child._startBrk, child._brk) = (_startBrk, _brk);
                child.ExecOnlyKeyed = ExecOnlyKeyed; // the execute-only key is the mm context's, copied with it
                foreach (var src in _vmas.Snapshot())
                {
                    if ((src.Flags & VmFlags.DontCopy) != 0)
                    {
                        continue; // MADV_DONTFORK: the child has a hole here
                    }

                    // dup_mmap: memory locks are not inherited (VM_LOCKED_MASK cleared); the child's def_flags
                    // start empty, so MCL_FUTURE is not inherited either.
                    var dst = new Vma(src.Start, src.End, src.Flags & ~LockedMask, null) { Mm = child, PgOff = src.PgOff, File = src.File, Ra = src.Ra, Special = src.Special };
                    bool wipe = (src.Flags & VmFlags.WipeOnFork) != 0;
                    if (wipe)
                    {
                        // MADV_WIPEONFORK: a clean slate, no anon_vma until the child's first fault,
                        // and no tables copied: the child faults in zero-filled pages.
                        dst.File?.LinkVma(dst);
                    }
                    else
                    {
                        dst.CloneRmapLinksFrom(src);
                    }

                    if (!wipe && src.AnonVma is { } parentAv)
                    {
                        var own = new AnonVma { Parent = parentAv };
                        own.Link(dst);
                        dst.AnonVmaSlot = own;
                    }

                    child._vmas.Insert(dst);

                    if ((src.Flags & VmFlags.Account) != 0)
                    {
                        child._committedPages += (long)(src.Length >> PhysMemory.PageShift);
                    }

                    if (!wipe && VmaNeedsCopy(src) && !CopyPageRange(cpu, child, dst, src))
                    {
                        ok = false;
                        break;
                    }
                }

                FlushTlbRange(cpu, 0, Geometry.TaskSize);
            }
            finally
            {
                child.MmapLock.UpWrite(cpu.Id);
            }
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        if (!ok)
        {
            child.Exit(cpu);
            return null;
        }

        return child;
    }

    /// <summary>
    /// <c>vma_needs_copy</c>: page tables must be copied when the VMA has an anon_vma (anonymous
    /// pages, private copies of file pages, swap entries exist only in the tables). A file or shmem
    /// VMA without one is skipped: the child refaults from the page cache, as a [vdso] child refaults
    /// the vDSO's pages. A VM_PFNMAP or VM_MIXEDMAP VMA (a [vvar]) is copied, since no fault handler
    /// is bound to rebuild raw frame numbers. Guard markers need no rule of their own here (Linux
    /// 6.18): <c>MADV_GUARD_INSTALL</c> gives the VMA an anon_vma, so its tables are copied. (uffd-wp,
    /// the other reason, is not modelled.)
    /// </summary>
    internal static bool VmaNeedsCopy(Vma src) => src.AnonVma is not null || (src.Flags & (VmFlags.PfnMap | VmFlags.MixedMap | VmFlags.MaybeGuard)) != 0;

    /// <summary>
    /// <c>copy_page_range</c> down to <c>copy_pte_range</c>: for each table level, the child gets a
    /// table wherever the parent has an entry at the level above within the VMA (so a PTE table for
    /// every PTE table of the parent's that the VMA touches, even one with no entry in the VMA's
    /// range). Returns false when a table could not be allocated.
    /// </summary>
    private bool CopyPageRange(Cpu cpu, MmStruct child, Vma dst, Vma src)
    {
        ulong addr = src.Start, end = src.End;
        var pgd = Phys.Table(PgdPfn);
        while (addr < end)
        {
            ulong nextPgd = Geometry.PgdAddrEnd(addr, end);
            ulong pgde = Volatile.Read(ref pgd[Geometry.Index(addr, 4)]);
            if (!Entry.IsNone(pgde))
            {
                long childPud = child.PudAlloc(cpu, addr);
                if (childPud < 0)
                {
                    return false;
                }

                var pud = Phys.Table(Entry.Pfn(pgde));
                for (ulong a = addr; a < nextPgd;)
                {
                    ulong nextPud = Geometry.PudAddrEnd(a, nextPgd);
                    ulong pude = Volatile.Read(ref pud[Geometry.Index(a, 3)]);
                    if (!Entry.IsNone(pude) && !Entry.IsHuge(pude) && !CopyPmdRange(cpu, child, dst, src, Entry.Pfn(pude), childPud, a, nextPud))
                    {
                        return false;
                    }

                    a = nextPud;
                }
            }

            addr = nextPgd;
        }

        return true;
    }

    /// <summary>
    /// <c>copy_pmd_range</c>: the child's PMD table, then a PTE table per present pmd entry of the
    /// parent's. An anonymous huge pmd is shared whole (<c>copy_huge_pmd</c>, write-protected in
    /// both); one that cannot be is split in the parent first and copied entry by entry.
    /// </summary>
    private bool CopyPmdRange(Cpu cpu, MmStruct child, Vma dst, Vma src, long pmdTable, long childPud, ulong addr, ulong end)
    {
        long childPmd = child.PmdAlloc(cpu, childPud, addr);
        if (childPmd < 0)
        {
            return false;
        }

        var pmds = Phys.Table(pmdTable);
        while (addr < end)
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            int pmdIndex = Geometry.Index(addr, 2);
            ulong pmd = Volatile.Read(ref pmds[pmdIndex]);
            if (Entry.IsHuge(pmd) && !src.IsAnonymous)
            {
                // copy_huge_pmd leaves a page-cache folio's leaf to the child's faults.
                addr = next;
                continue;
            }

            if (Entry.IsHuge(pmd))
            {
                switch (CopyHugePmd(cpu, child, src, pmdTable, pmdIndex, childPmd, addr & Geometry.PmdMask))
                {
                    case false:
                        return false;
                    case true:
                        addr = next;
                        continue;
                }

                pmd = Volatile.Read(ref pmds[pmdIndex]);
            }

            if (!Entry.IsNone(pmd) && !Entry.IsHuge(pmd) && !CopyPteRange(cpu, child, dst, src, pmdTable, childPmd, pmdIndex, addr, next))
            {
                return false;
            }

            addr = next;
        }

        return true;
    }

    /// <summary>
    /// <c>copy_pte_range</c> + <c>copy_present_ptes</c> / <c>copy_nonpresent_pte</c>: allocates the
    /// child's PTE table, then, with the child's PTE lock and the parent's nested inside it, copies
    /// each entry of [<paramref name="addr"/>, <paramref name="end"/>). A page gets one more
    /// reference and mapping and counts in the child's RSS; in a copy-on-write mapping a writable
    /// entry is write-protected in the parent and copied read-only; a shared mapping's entry is
    /// copied clean; every copy is old. The zero page is copied as it is. A swap entry is copied
    /// and its slot gets one more user.
    /// </summary>
    private bool CopyPteRange(Cpu cpu, MmStruct child, Vma dst, Vma src, long pmdTable, long childPmd, int pmdIndex, ulong addr, ulong end)
    {
        if (!child.PteAlloc(cpu, childPmd, pmdIndex))
        {
            return false;
        }

        // Map the parent's table before taking any PTE lock: a refcount design may free a table
        // whose try-get fails, which takes the pmd lock.
        var spt = PteOffsetMap(cpu, pmdTable, pmdIndex);
        if (spt.IsNone)
        {
            return true;
        }

        // The child's VMA is in the reverse map already, so reclaim may visit its new, empty table
        // and, under a design that frees tables at zero references, free it again: install another.
        TableRef dpt;
        while ((dpt = child.PteOffsetMapLock(cpu, childPmd, pmdIndex)).IsNone)
        {
            if (!child.PteAlloc(cpu, childPmd, pmdIndex))
            {
                PteUnmap(cpu, spt);
                return false;
            }
        }

        PtlLockNested(cpu, spt.Pfn);
        long anon = 0, file = 0, shmem = 0, swapEnts = 0;
        bool cow = src.IsCowMapping;
        bool shared = (src.Flags & VmFlags.Shared) != 0;
        var entries = Phys.Table(spt);
        for (ulong va = addr; va < end; va += Geometry.PageSize)
        {
            int i = Geometry.PteIndex(va);
            ref ulong slot = ref entries[i];
            ulong e = Volatile.Read(ref slot);
            if (Entry.IsNone(e))
            {
                continue;
            }

            if (Entry.IsGuardMarker(e))
            {
                // copy_nonpresent_pte -> copy_pte_marker: a guard marker is always copied.
                child.SetPteAt(cpu, dpt, i, e);
                continue;
            }

            if (!Entry.IsPresent(e))
            {
                (Phys.Swap ?? throw new InvalidOperationException($"swap entry {e:x} at 0x{va:x}, but no swap device is configured"))
                    .Duplicate(Entry.SwapOffset(e));
                swapEnts++;
                child.SetPteAt(cpu, dpt, i, e);
                continue;
            }

            if (!Entry.IsSpecial(e))
            {
                long pfn = Entry.Pfn(e);
                ref var d = ref Phys.Desc(pfn);
                Phys.GetPage(pfn);
                d.AddMap(1);
                switch (CounterOf(pfn))
                {
                    case MmCounter.Anon: anon++; break;
                    case MmCounter.File: file++; break;
                    default: shmem++; break;
                }

                if (cow && Entry.IsWritable(e))
                {
                    e = WrProtectInPlace(ref slot, spt);
                }

                if (shared)
                {
                    e = Entry.MkClean(e);
                }
            }

            child.SetPteAt(cpu, dpt, i, Entry.MkOld(e));
        }

        child.AddRssAnon(cpu, anon);
        child.AddRss(cpu, MmCounter.File, file);
        child.AddRss(cpu, MmCounter.Shmem, shmem);
        child.AddSwapEnts(cpu, swapEnts);
        PtlUnlock(cpu, spt.Pfn);
        child.PteUnmapUnlock(cpu, dpt);
        // Only now, with no PTE lock held, drop the visit of the parent's table: under a design that
        // frees a table at its last reference, that put may free it, which takes the pmd lock.
        PteUnmap(cpu, spt);
        return true;
    }

    /// <summary>
    /// <c>ptep_set_wrprotect</c>: clears the writable bit of a present entry atomically (hardware may
    /// be setting accessed and dirty bits meanwhile) and returns the new entry. Not a none/non-none
    /// change, so no design tracks it; the caller flushes the TLBs.
    /// </summary>
    private ulong WrProtectInPlace(ref ulong slot, TableRef pt)
    {
        Machine.Sync.Scheduler?.Reached(SchedulingPointKind.EntryStore, pt.Pfn);
        while (true)
        {
            ulong e = Volatile.Read(ref slot);
            ulong want = Entry.WrProtect(e);
            if (Interlocked.CompareExchange(ref slot, want, e) == e)
            {
                return want;
            }
        }
    }

    /// <summary><c>spin_lock_nested(ptl, SINGLE_DEPTH_NESTING)</c>: a second PTE lock taken under one held.</summary>
    private void PtlLockNested(Cpu cpu, long ptePfn) =>
        RawSpinLock.Lock(ref Phys.PtLock(ptePfn), Machine.Sync, cpu.Id, LockClass.PteLock, ptePfn, subclass: 1);
}
