using System.Runtime.CompilerServices;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary>
    /// The user page-fault entry (<c>do_user_addr_fault</c>): <c>mmap_lock</c> for read, find the
    /// VMA, check access, then <c>handle_mm_fault</c>.
    /// </summary>
    internal FaultOutcome HandleUserFault(Cpu cpu, ulong va, bool write)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            var vma = FindVma(cpu, va);
            if (vma is not null && va < vma.Start && (vma.Flags & VmFlags.GrowsDown) != 0)
            {
                vma = ExpandStackForFault(cpu, va); // lock_mm_and_find_vma
            }

            if (vma is null || va < vma.Start)
            {
                return FaultOutcome.SegvMapErr;
            }

            // access_error: the protection key is checked first (arch_vma_access_permitted), then the VMA's flags.
            if (PkeyDeniesData(vma))
            {
                return FaultOutcome.SegvPkuErr;
            }

            if (!AccessAllowed(vma, write))
            {
                return FaultOutcome.SegvAccErr;
            }

            return HandleMmFault(cpu, vma, va, write);
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <c>arch_vma_access_permitted</c> for a data access by the process itself, false: the VMA
    /// carries the execute-only protection key (<see cref="VmFlags.PkeyExecOnly"/>: mapped or
    /// mprotected with exactly PROT_EXEC on a host that gives it), whose PKRU bits deny reads and
    /// writes alike.
    /// </summary>
    internal static bool PkeyDeniesData(Vma vma) => (vma.Flags & VmFlags.PkeyExecOnly) != 0;

    /// <summary>
    /// Whether a VMA of this address space ever got the execute-only key (the mm context's
    /// <c>execute_only_pkey</c> was allocated). Until then no access needs the key checked.
    /// </summary>
    internal bool ExecOnlyKeyed { get; private set; }

    /// <summary>Notes that <paramref name="flags"/>, given to a VMA, carry the execute-only key.</summary>
    private void NoteKey(VmFlags flags)
    {
        if ((flags & VmFlags.PkeyExecOnly) != 0)
        {
            ExecOnlyKeyed = true;
        }
    }

    /// <summary>
    /// The hardware's protection-key check of a data access at <paramref name="va"/>, for a page
    /// that may be present: every entry of a keyed VMA carries the key (its protection is the
    /// VMA's, set at each fault and by mprotect's change of the entries), and the PKRU of every
    /// thread denies data access with it, so the access faults with PF_PK and the kernel answers
    /// SEGV_PKUERR. Checked by the VMA under <c>mmap_lock</c> for read, which is what the key
    /// bits in the entries stand for.
    /// </summary>
    internal bool PkeyDeniesAccess(Cpu cpu, ulong va)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            var vma = FindVma(cpu, va);
            return vma is not null && va >= vma.Start && PkeyDeniesData(vma);
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary><c>access_error</c> on x86: a write needs VM_WRITE; a read needs any of VM_READ/WRITE/EXEC.</summary>
    internal static bool AccessAllowed(Vma vma, bool write) =>
        write ? (vma.Flags & VmFlags.Write) != 0 : (vma.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) != 0;

    /// <summary><c>handle_mm_fault</c> for a private anonymous VMA, with <c>mmap_lock</c> held.</summary>
    internal FaultOutcome HandleMmFault(Cpu cpu, Vma vma, ulong addr, bool write)
    {
        MmapLock.AssertHeld(cpu.Id);
        CountFault(cpu);
        long pud = PudAlloc(cpu, addr);
        if (pud < 0)
        {
            return FaultOutcome.Oom;
        }

        long pmdTable = PmdAlloc(cpu, pud, addr);
        if (pmdTable < 0)
        {
            return FaultOutcome.Oom;
        }

        // A pmd entry that points at a PTE table leaves nothing for the huge-page path to do.
        int pmdIndex = Geometry.Index(addr, 2);
        ulong pmd = Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex);
        if ((Entry.IsNone(pmd) || Entry.IsHuge(pmd)) && HandleHugePmdFault(cpu, vma, addr, write, pmdTable) is { } huge)
        {
            return huge;
        }

        return HandlePteFault(cpu, vma, addr, write, pmdTable, pmdIndex);
    }

    /// <summary><c>__pud_alloc</c>: the PUD table under the PGD entry for <paramref name="addr"/>, allocated if none.</summary>
    private long PudAlloc(Cpu cpu, ulong addr) => UpperTableAlloc(cpu, PgdPfn, addr, level: 3);

    /// <summary><c>__pmd_alloc</c>: the PMD table under the pud entry for <paramref name="addr"/>, allocated if none.</summary>
    private long PmdAlloc(Cpu cpu, long pudTable, ulong addr) => UpperTableAlloc(cpu, pudTable, addr, level: 2);

    /// <summary>
    /// <c>__pud_alloc</c> and <c>__pmd_alloc</c>: the table of <paramref name="level"/> (3 PUD,
    /// 2 PMD) that the entry of <paramref name="parentTable"/> for <paramref name="addr"/> points
    /// at. A missing one is allocated and populated under <c>page_table_lock</c>, unless another
    /// thread did first. Returns -1 when memory ran out.
    /// </summary>
    private long UpperTableAlloc(Cpu cpu, long parentTable, ulong addr, int level)
    {
        ulong e = Phys.ReadCachedEntry(cpu.TableCache, level + 1, parentTable, Geometry.Index(addr, level + 1));
        return Entry.IsNone(e) ? UpperTableAllocSlow(cpu, parentTable, addr, level) : Entry.Pfn(e);
    }

    // The allocation, out of line so that the common case (the table is there) stays small.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private long UpperTableAllocSlow(Cpu cpu, long parentTable, ulong addr, int level)
    {
        int index = Geometry.Index(addr, level + 1);
        // Entries are read afresh each time, not through a ref kept across: an absent entry's
        // storage appears only when it is stored (see TableEntries).
        var parent = Phys.Table(parentTable);
        long fresh = Phys.AllocTable(level, cpu.Id);
        if (fresh < 0)
        {
            return -1;
        }

        // A table of level L maps 2^(12 + 9L) bytes: 512 GiB for a PUD table, 1 GiB for a PMD table.
        Phys.SetRmap(fresh, OwnerId, addr & ~((1UL << (12 + (9 * level))) - 1));

        PageTableLock.Lock(cpu.Id);
        if (Entry.IsNone(Volatile.Read(ref parent[index])))
        {
            IncTables(level);
            if (level == 3)
            {
                P4dPopulate(cpu, parentTable, index, fresh);
            }
            else
            {
                PudPopulate(cpu, parentTable, index, fresh);
            }

            fresh = -1;
        }

        PageTableLock.Unlock(cpu.Id);
        if (fresh >= 0)
        {
            Phys.FreeTable(fresh); // lost the race; it was never visible
        }

        return Entry.Pfn(Volatile.Read(ref parent[index]));
    }

    /// <summary>
    /// <c>__pte_alloc</c> + <c>pmd_install</c>: allocates a PTE table and installs it under the pmd
    /// lock, unless another thread did first. Returns false when memory ran out.
    /// </summary>
    internal bool PteAlloc(Cpu cpu, long pmdTable, int pmdIndex) =>
        !Entry.IsNone(Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex)) || PteAllocSlow(cpu, pmdTable, pmdIndex);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool PteAllocSlow(Cpu cpu, long pmdTable, int pmdIndex)
    {
        var pmds = Phys.Table(pmdTable);
        long fresh = Phys.AllocTable(1, cpu.Id);
        if (fresh < 0)
        {
            return false;
        }

        // The table remembers who owns it and which 2 MiB it maps (ptdesc's pt_mm / pt_index), so
        // a design that frees it can find its pmd entry again.
        Phys.SetRmap(fresh, OwnerId, PmdBase(pmdTable, pmdIndex));
        Design.PteTableCtor(this, cpu, fresh);
        PmdLock(cpu, pmdTable);
        if (Entry.IsNone(Volatile.Read(ref pmds[pmdIndex])))
        {
            IncTables(1);
            PmdPopulate(cpu, pmdTable, pmdIndex, fresh);
            fresh = -1;
        }

        PmdUnlock(cpu, pmdTable);
        if (fresh >= 0)
        {
            Design.PteTableDtor(this, fresh);
            Phys.FreeTable(fresh);
        }

        return true;
    }

    /// <summary><c>handle_pte_fault</c>.</summary>
    private FaultOutcome HandlePteFault(Cpu cpu, Vma vma, ulong addr, bool write, long pmdTable, int pmdIndex)
    {
        int index = Geometry.PteIndex(addr);
        var pteTable = PteOffsetMapEntry(cpu, pmdTable, pmdIndex, index, out ulong orig);
        if (pteTable.IsNone)
        {
            // do_pte_missing: anonymous memory, or a file (shmem included) through do_fault.
            return vma.Special is { } special ? SpecialMappingFault(cpu, vma, special, addr, write, pmdTable, pmdIndex)
                : vma.IsAnonymous
                ? DoAnonymousPage(cpu, vma, addr, write, pmdTable, pmdIndex)
                : DoFault(cpu, vma, addr, write, pmdTable, pmdIndex);
        }

        if (!Entry.IsPresent(orig))
        {
            PteUnmap(cpu, pteTable);
            if (Entry.IsGuardMarker(orig))
            {
                // handle_pte_marker: touching a guard region is fatal, VM_FAULT_SIGSEGV, which x86
                // delivers as SEGV_MAPERR (bad_area_nosemaphore).
                return FaultOutcome.SegvMapErr;
            }

            return DoSwapPage(cpu, vma, addr, write, orig, pmdTable, pmdIndex);
        }

        if (Entry.IsProtNone(orig))
        {
            // PROT_NONE entries exist only in inaccessible VMAs (no NUMA hinting modelled), and
            // access to those was refused before we got here; seeing one means a racing mprotect.
            PteUnmap(cpu, pteTable);
            return FaultOutcome.Ok;
        }

        PtlLock(cpu, pteTable.Pfn);
        ref ulong slot = ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, index);
        ulong entry = Volatile.Read(ref slot);
        if (entry != orig)
        {
            // Changed under us: let the access retry.
            PtlUnlock(cpu, pteTable.Pfn);
            PteUnmap(cpu, pteTable);
            return FaultOutcome.Ok;
        }

        if (write && !Entry.IsWritable(entry))
        {
            return DoWpPage(cpu, vma, addr, pmdTable, pmdIndex, pteTable, index, entry);
        }

        // A spurious fault: the TLB was stale. Set young/dirty (ptep_set_access_flags).
        ulong want = entry | Entry.Accessed | (write ? Entry.Dirty : 0);
        if (want != entry)
        {
            Interlocked.CompareExchange(ref slot, want, entry);
        }

        PtlUnlock(cpu, pteTable.Pfn);
        PteUnmap(cpu, pteTable);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>do_swap_page</c>: read the slot into a fresh page, map it where the swap entry still is,
    /// and free the slot (no swap cache is modelled, so the page is exclusive at once).
    /// </summary>
    private FaultOutcome DoSwapPage(Cpu cpu, Vma vma, ulong addr, bool write, ulong entry, long pmdTable, int pmdIndex)
    {
        var swap = Phys.Swap ?? throw new BadSwapEntryException(
            $"CPU {cpu.Id}: swap entry {entry:x} at 0x{addr:x} in {vma}, but no swap device is configured");
        long pfn = Phys.AllocFrame(cpu.Id);
        if (pfn < 0)
        {
            return FaultOutcome.Oom;
        }

        long slot = Entry.SwapOffset(entry);
        swap.ReadIn(slot, pfn);
        CountPageAllocated(cpu);
        var pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        if (pteTable.IsNone)
        {
            FreeUnusedPage(cpu, pfn);
            return FaultOutcome.Ok;
        }

        int index = Geometry.PteIndex(addr);
        if (Volatile.Read(ref Phys.Table(pteTable)[index]) != entry)
        {
            PteUnmapUnlock(cpu, pteTable);
            FreeUnusedPage(cpu, pfn); // someone else swapped it in, or zapped it
            return FaultOutcome.Ok;
        }

        bool writable = (vma.Flags & VmFlags.Write) != 0;
        AddRssAnon(cpu, 1);
        AddSwapEnts(cpu, -1);
        AnonVmaPrepare(vma);
        PageAddNewAnonRmap(pfn, vma, addr);
        SetPteAt(cpu, pteTable, index, Entry.MakePte(pfn, writable, dirty: writable && write, (vma.Flags & VmFlags.Exec) == 0));
        swap.Free(slot);
        PteUnmapUnlock(cpu, pteTable);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>do_anonymous_page</c>: the zero page on a read (unless the host's read faults take
    /// private pages: <see cref="MachineOptions.ZeroPage"/> false), a fresh zeroed page on a write.
    /// </summary>
    private FaultOutcome DoAnonymousPage(Cpu cpu, Vma vma, ulong addr, bool write, long pmdTable, int pmdIndex)
    {
        if (!PteAlloc(cpu, pmdTable, pmdIndex))
        {
            return FaultOutcome.Oom;
        }

        int index = Geometry.PteIndex(addr);
        bool noExec = (vma.Flags & VmFlags.Exec) == 0;
        TableRef pteTable;
        if (!write && Machine.Options.ZeroPage)
        {
            ulong zero = Entry.MakeZeroPagePte(Phys.ZeroPfn);
            if (!noExec)
            {
                zero &= ~Entry.NoExecute;
            }

            pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
            if (pteTable.IsNone)
            {
                return FaultOutcome.Ok; // the table went away: retry the access
            }

            if (Entry.IsNone(Volatile.Read(ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, index))))
            {
                SetPteAtUnmapUnlock(cpu, pteTable, index, zero);
            }
            else
            {
                PteUnmapUnlock(cpu, pteTable);
            }

            return FaultOutcome.Ok;
        }

        AnonVmaPrepare(vma);
        long pfn = Phys.AllocZeroedPage(cpu.Id);
        if (pfn < 0)
        {
            return FaultOutcome.Oom;
        }

        CountPageAllocated(cpu);
        ulong pte = Entry.MakePte(pfn, writable: (vma.Flags & VmFlags.Write) != 0, dirty: (vma.Flags & VmFlags.Write) != 0, noExec);
        pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        if (pteTable.IsNone)
        {
            FreeUnusedPage(cpu, pfn);
            return FaultOutcome.Ok;
        }

        if (!Entry.IsNone(Volatile.Read(ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, index))))
        {
            PteUnmapUnlock(cpu, pteTable);
            FreeUnusedPage(cpu, pfn);
            return FaultOutcome.Ok;
        }

        AddRssAnon(cpu, 1);
        PageAddNewAnonRmap(pfn, vma, addr);
        SetPteAtUnmapUnlock(cpu, pteTable, index, pte, preloadVa: addr & Geometry.PageMask);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>do_wp_page</c>, entered with the PTE lock held: make a shared file page writable in place
    /// (<c>wp_page_shared</c>), reuse an exclusive anonymous page, or copy (the zero page, a
    /// page-cache page of a private mapping, or an anonymous page mapped more than once).
    /// </summary>
    private FaultOutcome DoWpPage(Cpu cpu, Vma vma, ulong addr, long pmdTable, int pmdIndex, TableRef pteTable, int index, ulong entry)
    {
        AssertPtlHeld(cpu, pteTable.Pfn);
        long oldPfn = Entry.Pfn(entry);
        bool special = Entry.IsSpecial(entry);
        ref ulong slot = ref Phys.Table(pteTable)[index];
        bool anon = !special && IsAnonPage(oldPfn);
        if (!special && !anon && (vma.Flags & VmFlags.Shared) != 0)
        {
            return WpPageShared(cpu, pteTable, ref slot, entry);
        }

        // wp_can_reuse_anon_folio: reuse only a page nobody else holds (one mapping, no GUP or
        // reclaim reference).
        if (anon && Phys.Desc(oldPfn).RefCount == 1 && Phys.Desc(oldPfn).MapCount == 1)
        {
            // wp_page_reuse: make it writable in place; no TLB flush needed for an upgrade.
            Interlocked.CompareExchange(ref slot, entry | Entry.Writable | Entry.Dirty | Entry.Accessed, entry);
            PtlUnlock(cpu, pteTable.Pfn);
            PteUnmap(cpu, pteTable);
            return FaultOutcome.Ok;
        }

        // wp_page_copy: drop the lock to allocate, then recheck.
        if (!special)
        {
            Phys.GetPage(oldPfn);
        }

        PtlUnlock(cpu, pteTable.Pfn);
        PteUnmap(cpu, pteTable);
        AnonVmaPrepare(vma);
        long fresh = special ? Phys.AllocZeroedPage(cpu.Id) : Phys.AllocFrame(cpu.Id);
        if (fresh < 0)
        {
            if (!special)
            {
                Phys.PutPage(oldPfn);
            }

            return FaultOutcome.Oom;
        }

        if (!special)
        {
            Phys.Content.Copy(oldPfn, fresh);
        }

        CountPageAllocated(cpu);
        pteTable = PteOffsetMapLock(cpu, pmdTable, pmdIndex);
        bool installed = false;
        if (!pteTable.IsNone)
        {
            if (Volatile.Read(ref Phys.Table(pteTable)[index]) == entry)
            {
                // ptep_clear_flush, then set the new entry. A page-cache page leaves RssFile (or
                // RssShmem) for the new anonymous copy; an anonymous one is replaced one for one.
                PtepGetAndClear(cpu, pteTable, index);
                FlushTlbRange(cpu, addr, addr + Geometry.PageSize);
                if (special)
                {
                    AddRssAnon(cpu, 1);
                }
                else
                {
                    PageRemoveRmap(cpu, oldPfn, vma);
                    AddRssAnon(cpu, 1);
                }

                PageAddNewAnonRmap(fresh, vma, addr);
                SetPteAt(cpu, pteTable, index, Entry.MakePte(fresh, writable: true, dirty: true, (vma.Flags & VmFlags.Exec) == 0));
                installed = true;
            }

            PteUnmapUnlock(cpu, pteTable);
        }

        if (!installed)
        {
            FreeUnusedPage(cpu, fresh);
        }

        if (!special)
        {
            // Drop our temporary reference, then the mapping's if the entry was replaced above.
            Phys.PutPage(oldPfn);
            if (installed)
            {
                ReleasePages(cpu, [oldPfn]);
            }
        }

        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>anon_vma_prepare</c>: reuse a compatible neighbour's anon_vma, else create one, and link
    /// the VMA to it before any page can name it, so that every rmap walk finds the VMA.
    /// </summary>
    private void AnonVmaPrepare(Vma vma)
    {
        if (Volatile.Read(ref vma.AnonVmaSlot) is null)
        {
            AnonVmaPrepareSlow(vma);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AnonVmaPrepareSlow(Vma vma)
    {
        var candidate = FindMergeableAnonVma(vma) ?? new AnonVma();
        lock (vma.AnonVmaChain)
        {
            if (vma.AnonVmaSlot is null)
            {
                candidate.Link(vma);
                Volatile.Write(ref vma.AnonVmaSlot, candidate);
            }
        }
    }

    /// <summary>
    /// The flags <c>folio_add_new_anon_rmap</c> gives a new anonymous page (small or huge):
    /// swap-backed, but in a droppable VMA, whose pages are lazy-free from birth.
    /// </summary>
    private static PageFlags NewAnonPageFlags(Vma vma) =>
        (vma.Flags & VmFlags.Droppable) != 0 ? PageFlags.Anon : PageFlags.Anon | PageFlags.SwapBacked;

    /// <summary>
    /// <c>folio_add_new_anon_rmap</c> + LRU add: a fresh exclusive anonymous page mapped once, its
    /// mapping the VMA's anon_vma and its index the linear page index of <paramref name="addr"/>.
    /// </summary>
    private void PageAddNewAnonRmap(long pfn, Vma vma, ulong addr)
    {
        Phys.Desc(pfn).InitAnonRmap(NewAnonPageFlags(vma), AnonOwnerId(vma.AnonVma!), vma.LinearPageIndex(addr & Geometry.PageMask));
        LruAddNewPage(pfn, vma);
    }

    /// <summary>
    /// <c>folio_remove_rmap_pte</c> and the RSS counter the page counted in. Unmapped from a
    /// <c>VM_LOCKED</c> VMA the page is munlocked once (<c>munlock_vma_folio</c>), as a zap does:
    /// the page-cache page a private write fault replaces by its copy in an mlocked VMA gives back
    /// the mlock count its mapping there took, so that a later munlock of its other mappings
    /// leaves it evictable.
    /// </summary>
    private void PageRemoveRmap(Cpu cpu, long pfn, Vma vma)
    {
        ref var d = ref Phys.Desc(pfn);
        if (d.AddMap(-1) < 0)
        {
            throw new BadPageException($"mapcount underflow on frame {pfn:x}");
        }

        if ((vma.Flags & VmFlags.Locked) != 0)
        {
            MunlockVmaFolio(pfn);
        }

        AddRss(cpu, CounterOf(pfn), -1);
    }

    private void FreeUnusedPage(Cpu cpu, long pfn)
    {
        Phys.PutPage(pfn);
        CountPageFreed(cpu, 1);
    }

    /// <summary>Drops the mapping references of pages already unmapped and flushed (<c>tlb_finish_mmu</c>'s free).</summary>
    internal void ReleasePages(Cpu? cpu, ReadOnlySpan<long> pfns)
    {
        CountPageFreed(cpu, Phys.PutPages(pfns));
    }
}
