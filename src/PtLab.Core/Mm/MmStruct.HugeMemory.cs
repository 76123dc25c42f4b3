using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

// mm/huge_memory.c: transparent huge pages of anonymous memory. A PMD leaf maps a 2 MiB folio (or
// the huge zero page); beside it the PMD table keeps one deposited PTE table
// (pgtable_trans_huge_deposit), counted in VmPTE, which becomes the PTE table when the leaf is
// split into 512 entries. A PMD-sized page-cache folio of a regular file (MmStruct.Filemap.cs,
// do_set_pmd) is mapped by a leaf too, with no deposit: splitting it just clears the entry.
public sealed partial class MmStruct
{
    private readonly Dictionary<long, Stack<long>> _deposits = [];
    private long _depositedTables;
    private long _thpFaultAlloc;
    private long _thpFaultFallback;
    private long _thpSplitPmd;
    private long _thpZeroPageMapped;

    /// <summary><c>prctl(PR_SET_THP_DISABLE)</c> (<c>MMF_DISABLE_THP</c>): no huge page in this address space.</summary>
    public bool ThpDisabled { get; set; }

    /// <summary>Transparent huge page events: faults that mapped one, faults that fell back to 4 KiB pages, PMD splits, huge zero pages mapped, folio splits.</summary>
    public ThpCounters ThpCounters() => new(
        Volatile.Read(ref _thpFaultAlloc), Volatile.Read(ref _thpFaultFallback), Volatile.Read(ref _thpSplitPmd), Volatile.Read(ref _thpZeroPageMapped),
        Volatile.Read(ref _thpSplitPage));

    /// <summary>PTE tables deposited beside PMD leaves (part of VmPTE).</summary>
    public long DepositedTables => Volatile.Read(ref _depositedTables);

    /// <summary>
    /// <c>thp_vma_allowable_order(vma, ..., PMD_ORDER)</c> for an anonymous VMA at fault time:
    /// not disabled by prctl or MADV_NOHUGEPAGE, and THP <c>always</c>, or <c>madvise</c> with
    /// VM_HUGEPAGE. File and shmem mappings have their own policy, which the model leaves off
    /// (shmem's <c>shmem_enabled</c> defaults to never; the page cache maps no PMD folios here).
    /// </summary>
    internal bool ThpVmaAllowable(Vma vma)
    {
        if (!vma.IsAnonymous || ThpDisabled || (vma.Flags & VmFlags.NoHugePage) != 0)
        {
            return false;
        }

        var mode = Machine.Options.Thp.Enabled;
        return mode == ThpEnabled.Always || (mode == ThpEnabled.Madvise && (vma.Flags & VmFlags.HugePage) != 0);
    }

    /// <summary>
    /// <c>thp_vma_suitable_order</c>: the 2 MiB at <paramref name="haddr"/> lies inside the VMA,
    /// and for a file VMA its start is congruent to its page offset modulo 2 MiB. An anonymous VMA's
    /// offset is not checked ("Don't have to check pgoff for anonymous vma"): one moved by mremap to
    /// an address of another congruence still faults and collapses huge pages (measured on 6.18).
    /// </summary>
    private static bool ThpVmaSuitable(Vma vma, ulong haddr) =>
        (vma.IsAnonymous || (((vma.Start >> PhysMemory.PageShift) - vma.PgOff) & (PhysMemory.HugeFrames - 1)) == 0) &&
        haddr >= vma.Start && haddr + Geometry.PmdSize <= vma.End;

    /// <summary><c>is_huge_zero_pmd</c>.</summary>
    internal bool IsHugeZeroPmd(ulong pmd) => Entry.IsHuge(pmd) && Entry.Pfn(pmd) == Phys.HugeZeroPfn;

    /// <summary>
    /// <c>pmd_trans_huge_lock</c>: takes the pmd lock if the entry is a huge leaf and returns true
    /// holding it, with the entry read under the lock; otherwise false, no lock held.
    /// </summary>
    internal bool PmdTransHugeLock(Cpu cpu, long pmdTable, int pmdIndex, out ulong pmd)
    {
        pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        if (!Entry.IsHuge(pmd))
        {
            return false;
        }

        PmdLock(cpu, pmdTable);
        pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        if (Entry.IsHuge(pmd))
        {
            return true;
        }

        PmdUnlock(cpu, pmdTable);
        return false;
    }

    /// <summary><c>set_pmd_at</c> of a leaf (or of none). Caller holds the pmd lock.</summary>
    private void SetPmdAt(long pmdTable, int pmdIndex, ulong entry)
    {
        Machine.Sync.Scheduler?.Reached(Sync.SchedulingPointKind.EntryStore, pmdTable);
        // Through the table store, so that a none entry becoming a leaf gets its group.
        Phys.StoreEntry(pmdTable, pmdIndex, Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]), entry);
    }

    /// <summary><c>pmdp_huge_get_and_clear</c>. Caller holds the pmd lock.</summary>
    private ulong PmdpHugeGetAndClear(long pmdTable, int pmdIndex)
    {
        Machine.Sync.Scheduler?.Reached(Sync.SchedulingPointKind.EntryStore, pmdTable);
        ulong old = Interlocked.Exchange(ref Phys.Table(pmdTable)[pmdIndex], 0);
        Phys.EntryCleared(pmdTable, pmdIndex, old);
        return old;
    }

    /// <summary><c>pte_alloc_one</c> for a table to deposit: constructed, not yet reachable.</summary>
    private long AllocDepositTable(Cpu cpu)
    {
        long pfn = Phys.AllocTable(1, cpu.Id);
        if (pfn < 0)
        {
            return -1;
        }

        Phys.Desc(pfn).RmapOwnerId = OwnerId;
        Design.PteTableCtor(this, cpu, pfn);
        return pfn;
    }

    /// <summary><c>pte_free</c> of a table that was never reachable.</summary>
    private void FreeUnreachableTable(long pfn)
    {
        Design.PteTableDtor(this, pfn);
        Phys.FreeTable(pfn);
    }

    /// <summary><c>pgtable_trans_huge_deposit</c> (+ <c>mm_inc_nr_ptes</c> by the caller). Caller holds the pmd lock.</summary>
    private void Deposit(long pmdTable, long pte)
    {
        lock (_deposits)
        {
            if (!_deposits.TryGetValue(pmdTable, out var stack))
            {
                _deposits[pmdTable] = stack = new Stack<long>(1);
            }

            stack.Push(pte);
        }

        Interlocked.Increment(ref _depositedTables);
    }

    /// <summary><c>pgtable_trans_huge_withdraw</c>. Caller holds the pmd lock.</summary>
    private long Withdraw(long pmdTable)
    {
        lock (_deposits)
        {
            if (!_deposits.TryGetValue(pmdTable, out var stack) || !stack.TryPop(out long pte))
            {
                throw new InvalidOperationException($"withdrawing a deposited PTE table from PMD table {pmdTable:x}, which holds none");
            }

            if (stack.Count == 0)
            {
                _deposits.Remove(pmdTable);
            }

            Interlocked.Decrement(ref _depositedTables);
            return pte;
        }
    }

    /// <summary>Whether a PMD table still holds deposited tables (it must not be freed then).</summary>
    private bool HasDeposits(long pmdTable)
    {
        lock (_deposits)
        {
            return _deposits.ContainsKey(pmdTable);
        }
    }

    /// <summary><c>zap_deposited_table</c>: withdraw, <c>pte_free</c>, <c>mm_dec_nr_ptes</c>. Caller holds the pmd lock.</summary>
    private void ZapDepositedTable(long pmdTable)
    {
        long pte = Withdraw(pmdTable);
        DecTables(1);
        FreeUnreachableTable(pte);
    }

    /// <summary>
    /// The pmd-level part of <c>__handle_mm_fault</c>: a none pmd in an eligible VMA gets a huge
    /// page (<c>create_huge_pmd</c>); a huge pmd takes a write-protect fault
    /// (<c>wp_huge_pmd</c>) or just the young/dirty bits. Returns null to go on at the PTE level
    /// (not eligible, or a fallback after which the pmd is none or a split table).
    /// </summary>
    private FaultOutcome? HandleHugePmdFault(Cpu cpu, Vma vma, ulong addr, bool write, long pmdTable)
    {
        int pmdIndex = Geometry.Index(addr, 2);
        ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        if (Entry.IsNone(pmd))
        {
            return ThpVmaAllowable(vma) ? DoHugePmdAnonymousPage(cpu, vma, addr, write, pmdTable, pmdIndex) : null;
        }

        if (!Entry.IsHuge(pmd))
        {
            return null;
        }

        if (Entry.IsProtNone(pmd))
        {
            return FaultOutcome.Ok; // access to a PROT_NONE VMA was refused before: a racing mprotect
        }

        if (write && !Entry.IsWritable(pmd) && !vma.IsAnonymous)
        {
            // wp_huge_pmd of a page-cache folio: copy-on-write and write notification are done at
            // the PTE level, so the leaf goes and the fault goes on there (a shared write then maps
            // the folio again by do_set_pmd, writable).
            SplitHugePmd(cpu, vma, pmdTable, pmdIndex, addr & Geometry.PmdMask);
            return null;
        }

        if (write && !Entry.IsWritable(pmd))
        {
            return DoHugePmdWpPage(cpu, vma, addr, pmdTable, pmdIndex, pmd);
        }

        // huge_pmd_set_accessed / touch_pmd
        PmdLock(cpu, pmdTable);
        ref ulong slot = ref Phys.Table(pmdTable)[pmdIndex];
        ulong want = pmd | Entry.Accessed | (write ? Entry.Dirty : 0);
        if (want != pmd)
        {
            Interlocked.CompareExchange(ref slot, want, pmd);
        }

        PmdUnlock(cpu, pmdTable);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>do_huge_pmd_anonymous_page</c>: a read fault maps the huge zero page if
    /// <c>use_zero_page</c> and the mm may map zero pages (<see cref="MachineOptions.ZeroPage"/>); otherwise a new zeroed huge page, mapped writable and dirty. Both
    /// deposit a PTE table. Returns null on fallback (the 2 MiB does not fit the VMA, or no huge
    /// page could be had), when the fault goes on with a 4 KiB page.
    /// </summary>
    private FaultOutcome? DoHugePmdAnonymousPage(Cpu cpu, Vma vma, ulong addr, bool write, long pmdTable, int pmdIndex)
    {
        ulong haddr = addr & Geometry.PmdMask;
        if (!ThpVmaSuitable(vma, haddr))
        {
            return null;
        }

        AnonVmaPrepare(vma);
        bool noExec = (vma.Flags & VmFlags.Exec) == 0;
        if (!write && Machine.Options.Thp.UseZeroPage && Machine.Options.ZeroPage)
        {
            long pgtable = AllocDepositTable(cpu);
            if (pgtable < 0)
            {
                return FaultOutcome.Oom;
            }

            long zero = Phys.HugeZeroFolio();
            if (zero < 0)
            {
                FreeUnreachableTable(pgtable);
                Interlocked.Increment(ref _thpFaultFallback);
                return null;
            }

            PmdLock(cpu, pmdTable);
            if (Entry.IsNone(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
            {
                Deposit(pmdTable, pgtable);
                SetPmdAt(pmdTable, pmdIndex, Entry.MakeHugePmd(zero, writable: false, dirty: false, noExec));
                IncTables(1);
                Interlocked.Increment(ref _thpZeroPageMapped);
                pgtable = -1;
            }

            PmdUnlock(cpu, pmdTable);
            if (pgtable >= 0)
            {
                FreeUnreachableTable(pgtable);
            }

            return FaultOutcome.Ok;
        }

        long folio = AllocAnonFolioPmd(cpu, vma);
        if (folio < 0)
        {
            Interlocked.Increment(ref _thpFaultFallback);
            return null;
        }

        long table = AllocDepositTable(cpu);
        if (table < 0)
        {
            ReleasePages(cpu, [folio]);
            return FaultOutcome.Oom;
        }

        PmdLock(cpu, pmdTable);
        if (!Entry.IsNone(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex])))
        {
            PmdUnlock(cpu, pmdTable);
            FreeUnreachableTable(table);
            ReleasePages(cpu, [folio]);
            return FaultOutcome.Ok; // someone else got there first: retry the access
        }

        Deposit(pmdTable, table);
        IncTables(1);
        MapAnonFolioPmd(cpu, vma, folio, pmdTable, pmdIndex, haddr);
        PmdUnlock(cpu, pmdTable);
        return FaultOutcome.Ok;
    }

    /// <summary>
    /// <c>vma_alloc_anon_folio_pmd</c>: a zeroed huge page, reclaiming first when the
    /// <c>defrag</c> setting lets this fault stall (always; madvise and defer+madvise for
    /// VM_HUGEPAGE VMAs).
    /// </summary>
    private long AllocAnonFolioPmd(Cpu cpu, Vma vma)
    {
        var defrag = Machine.Options.Thp.Defrag;
        bool madvised = (vma.Flags & VmFlags.HugePage) != 0;
        bool direct = defrag == ThpDefrag.Always || (madvised && defrag is ThpDefrag.Madvise or ThpDefrag.DeferMadvise);
        long folio = Phys.AllocHugeFolio(cpu.Id, direct);
        if (folio >= 0)
        {
            Phys.ZeroHugeFolio(folio);
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                CountPageAllocated(cpu);
            }
        }

        return folio;
    }

    /// <summary>
    /// <c>map_anon_folio_pmd</c>: maps a new huge page by a PMD leaf, dirty and writable if the
    /// VMA is (PROT_NONE if the VMA grants no access, as a collapse there maps it), as an exclusive
    /// anonymous folio on the LRU, and counts 512 pages of RSS. Caller holds the pmd lock; the
    /// table beside it is already deposited. A <paramref name="fault"/> counts <c>thp_fault_alloc</c>.
    /// </summary>
    private void MapAnonFolioPmd(Cpu cpu, Vma vma, long folio, long pmdTable, int pmdIndex, ulong haddr, bool fault = true)
    {
        Phys.Desc(folio).SetFlagsAtomic(NewAnonPageFlags(vma));
        Phys.EntireMapCount(folio) = 1;
        Phys.SetRmap(folio, AnonOwnerId(vma.AnonVma!), vma.LinearPageIndex(haddr));
        LruAddNewPage(folio, vma);
        bool writable = (vma.Flags & VmFlags.Write) != 0;
        ulong leaf = Entry.MakeHugePmd(folio, writable, dirty: true, (vma.Flags & VmFlags.Exec) == 0);
        if ((vma.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0)
        {
            leaf = (leaf & ~Entry.Present) | Entry.ProtNone;
        }

        SetPmdAt(pmdTable, pmdIndex, leaf);
        AddRssAnon(cpu, PhysMemory.HugeFrames);
        if (fault)
        {
            Interlocked.Increment(ref _thpFaultAlloc);
        }
    }

    /// <summary>
    /// <c>do_huge_pmd_wp_page</c>: a write to the huge zero page gets a new huge page in its
    /// place (keeping the deposit), or a split when none can be had; a write to an exclusive huge
    /// page makes it writable. Returns null after a split, to go on at the PTE level.
    /// </summary>
    private FaultOutcome? DoHugePmdWpPage(Cpu cpu, Vma vma, ulong addr, long pmdTable, int pmdIndex, ulong orig)
    {
        ulong haddr = addr & Geometry.PmdMask;
        if (IsHugeZeroPmd(orig))
        {
            // do_huge_zero_wp_pmd
            long folio = AllocAnonFolioPmd(cpu, vma);
            if (folio >= 0)
            {
                PmdLock(cpu, pmdTable);
                if (Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]) != orig)
                {
                    PmdUnlock(cpu, pmdTable);
                    ReleasePages(cpu, [folio]);
                    return FaultOutcome.Ok;
                }

                PmdpHugeGetAndClear(pmdTable, pmdIndex);
                FlushTlbRange(cpu, haddr, haddr + Geometry.PmdSize);
                MapAnonFolioPmd(cpu, vma, folio, pmdTable, pmdIndex, haddr);
                PmdUnlock(cpu, pmdTable);
                return FaultOutcome.Ok;
            }

            Interlocked.Increment(ref _thpFaultFallback);
        }
        else
        {
            PmdLock(cpu, pmdTable);
            ref ulong slot = ref Phys.Table(pmdTable)[pmdIndex];
            if (Volatile.Read(ref slot) != orig)
            {
                PmdUnlock(cpu, pmdTable);
                return FaultOutcome.Ok;
            }

            if (Volatile.Read(ref Phys.EntireMapCount(Entry.Pfn(orig))) == 1 && (vma.Flags & VmFlags.Write) != 0)
            {
                // PageAnonExclusive: reuse it in place (no flush needed for an upgrade).
                Interlocked.CompareExchange(ref slot, orig | Entry.Accessed | Entry.Dirty | Entry.Writable, orig);
                PmdUnlock(cpu, pmdTable);
                return FaultOutcome.Ok;
            }

            PmdUnlock(cpu, pmdTable);
        }

        SplitHugePmd(cpu, vma, pmdTable, pmdIndex, haddr);
        return null;
    }

    /// <summary>
    /// <c>__split_huge_pmd</c>: under the pmd lock, if the entry is still a huge leaf, replace it
    /// by the deposited PTE table filled with 512 entries (<c>__split_huge_pmd_locked</c>).
    /// </summary>
    internal void SplitHugePmd(Cpu cpu, Vma vma, long pmdTable, int pmdIndex, ulong haddr)
    {
        if (!PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong pmd))
        {
            return;
        }

        SplitHugePmdLocked(cpu, vma, pmdTable, pmdIndex, haddr, pmd);
        PmdUnlock(cpu, pmdTable);
    }

    /// <summary>
    /// <c>__split_huge_pmd_locked</c>: the leaf becomes the withdrawn deposit, holding a zero-page
    /// entry for each 4 KiB of the huge zero page, or an entry for each sub-page of the huge page
    /// with the leaf's write, dirty and young bits (each sub-page now mapped once, the folio's
    /// reference count one per entry). The TLB is flushed for the 2 MiB before the table appears.
    /// </summary>
    private void SplitHugePmdLocked(Cpu cpu, Vma vma, long pmdTable, int pmdIndex, ulong haddr, ulong pmd)
    {
        PmdpHugeGetAndClear(pmdTable, pmdIndex); // pmdp_invalidate
        FlushTlbRange(cpu, haddr, haddr + Geometry.PmdSize);
        if (!vma.IsAnonymous)
        {
            // A page-cache folio's leaf is not split into PTEs: the entry just goes (its dirty bit
            // to the folio), and later faults map the pages again from the cache.
            long folio = Entry.Pfn(pmd);
            if (Entry.IsDirty(pmd))
            {
                MarkFolioDirty(folio);
            }

            Interlocked.Decrement(ref Phys.EntireMapCount(folio));
            if ((vma.Flags & VmFlags.Locked) != 0)
            {
                MunlockVmaFolio(folio); // folio_remove_rmap_pmd in a VM_LOCKED VMA
            }

            AddRss(cpu, CounterOf(folio), -PhysMemory.HugeFrames);
            Phys.PutPage(folio);
            Interlocked.Increment(ref _thpSplitPmd);
            return;
        }

        long ptePfn = Withdraw(pmdTable);
        var pt = Phys.Ref(ptePfn);
        Phys.SetRmap(ptePfn, OwnerId, haddr);
        bool noExec = (pmd & Entry.NoExecute) != 0;

        // No other CPU can reach the withdrawn table until pmd_populate below, so the kernel fills
        // it without its lock. The model takes it anyway (pmd lock, then PTE lock: the usual order)
        // so that a design that counts entries under the PTE lock sees these stores as any other.
        PtlLock(cpu, ptePfn);
        if (Entry.Pfn(pmd) == Phys.HugeZeroPfn)
        {
            ulong zero = Entry.MakeZeroPagePte(Phys.ZeroPfn);
            if (!noExec)
            {
                zero &= ~Entry.NoExecute;
            }

            for (int i = 0; i < PhysMemory.EntriesPerTable; i++)
            {
                SetPteAt(cpu, pt, i, Entry.IsProtNone(pmd) ? (zero & ~Entry.Present) | Entry.ProtNone : zero);
            }
        }
        else
        {
            long head = Entry.Pfn(pmd);
            ulong flags = pmd & ~(Entry.PfnMask | Entry.Huge);
            int owner = Phys.Desc(head).RmapOwnerId;
            ulong index = Phys.Desc(head).RmapAddress;
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                Phys.SetRmap(head + i, owner, index + (ulong)i);
                Phys.Desc(head + i).AddMap(1); // another address space may map it by PTEs already
                SetPteAt(cpu, pt, i, flags | ((ulong)(head + i) << 12));
            }

            Interlocked.Decrement(ref Phys.EntireMapCount(head)); // folio_remove_rmap_pmd, after the PTE mappings are counted

            if (Phys.Desc(head).AddRef(PhysMemory.HugeFrames - 1) >= PageDescriptor.MaxRefCount)
            {
                throw new BadPageException($"page refcount overflow on huge page {head:x}");
            }

            Machine.Sync.Profile?.Count(cpu.Id, ProfileOp.SharedAtomic);
        }

        PtlUnlock(cpu, ptePfn);

        // pmd_populate: the entries are in place before the table is (smp_wmb).
        PmdPopulate(cpu, pmdTable, pmdIndex, ptePfn);
        Interlocked.Increment(ref _thpSplitPmd);
    }

    /// <summary>
    /// <c>split_huge_pmd_if_needed</c> (from <c>vma_adjust_trans_huge</c>): a VMA boundary about
    /// to be placed at <paramref name="addr"/>, inside a 2 MiB the VMA maps whole, splits the
    /// huge pmd there.
    /// </summary>
    private void SplitHugePmdIfStraddling(Cpu cpu, Vma vma, ulong addr)
    {
        ulong haddr = addr & Geometry.PmdMask;
        if (addr == haddr || haddr < vma.Start || haddr + Geometry.PmdSize > vma.End)
        {
            return;
        }

        long pmdTable = PmdTableOf(addr);
        if (pmdTable >= 0)
        {
            SplitHugePmd(cpu, vma, pmdTable, Geometry.Index(addr, 2), haddr);
        }
    }

    /// <summary>
    /// <c>zap_huge_pmd</c>: clears a leaf covering the whole zapped 2 MiB, frees its deposit and,
    /// for a huge page, drops its PMD mapping and 512 pages of RSS; the page goes after the flush.
    /// Returns false when the entry is no longer a leaf.
    /// </summary>
    private bool ZapHugePmd(Cpu cpu, MmuGather tlb, long pmdTable, int pmdIndex, ulong addr, bool vmaLocked)
    {
        if (!PmdTransHugeLock(cpu, pmdTable, pmdIndex, out _))
        {
            return false;
        }

        ulong orig = PmdpHugeGetAndClear(pmdTable, pmdIndex);
        tlb.AddRange(addr, addr + Geometry.PmdSize);
        bool zero = Entry.Pfn(orig) == Phys.HugeZeroPfn;
        bool file = !zero && !IsAnonPage(Entry.Pfn(orig));
        if (!file)
        {
            ZapDepositedTable(pmdTable); // a page-cache folio's leaf has none
        }

        if (!zero)
        {
            long head = Entry.Pfn(orig);
            if (Entry.IsDirty(orig) && file)
            {
                MarkFolioDirty(head);
            }
            else if (Entry.IsDirty(orig))
            {
                Phys.Desc(head).SetFlagsAtomic(PageFlags.Dirty);
            }

            if (Interlocked.Decrement(ref Phys.EntireMapCount(head)) < 0)
            {
                throw new InvalidOperationException($"entire mapcount underflow on huge page {head:x} at 0x{addr:x}");
            }

            if (vmaLocked && file)
            {
                MunlockVmaFolio(head); // a page-cache folio's leaf leaving a VM_LOCKED VMA
            }
        }

        PmdUnlock(cpu, pmdTable);
        if (!zero)
        {
            AddRss(cpu, CounterOf(Entry.Pfn(orig)), -PhysMemory.HugeFrames);
            tlb.RemovePage(Entry.Pfn(orig));
        }

        return true;
    }

    /// <summary>
    /// <c>change_huge_pmd</c>: rewrites a leaf covering the whole 2 MiB for the VMA's new
    /// protection: PROT_NONE clears present and sets PROTNONE; write access is kept or granted only
    /// for an exclusive huge page (<c>can_change_pmd_writable</c>), never for the huge zero page.
    /// Returns false when the entry is no longer a leaf.
    /// </summary>
    private bool ChangeHugePmd(Cpu cpu, MmuGather tlb, long pmdTable, int pmdIndex, ulong addr, VmFlags flags)
    {
        if (!PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong old))
        {
            return false;
        }

        ulong n = old & ~(Entry.Writable | Entry.NoExecute | Entry.Present | Entry.ProtNone);
        if ((flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec)) == 0)
        {
            n |= Entry.ProtNone;
        }
        else
        {
            n |= Entry.Present;
            // can_change_pmd_writable: an exclusive anonymous folio, or in a shared mapping a dirty leaf.
            bool anon = IsAnonPage(Entry.Pfn(old));
            if ((flags & VmFlags.Write) != 0 && Entry.Pfn(old) != Phys.HugeZeroPfn
                && (anon ? Volatile.Read(ref Phys.EntireMapCount(Entry.Pfn(old))) == 1 : (flags & VmFlags.Shared) != 0 && Entry.IsDirty(old)))
            {
                n |= Entry.Writable;
            }
        }

        if ((flags & VmFlags.Exec) == 0)
        {
            n |= Entry.NoExecute;
        }

        SetPmdAt(pmdTable, pmdIndex, n);
        tlb.AddRange(addr, addr + Geometry.PmdSize);
        PmdUnlock(cpu, pmdTable);
        return true;
    }

    /// <summary>
    /// <c>madvise_free_huge_pmd</c>: MADV_FREE of a whole huge page marks it lazy-free (clean and
    /// old, off the swap-backed LRU). Part of one splits the folio (<c>split_folio</c>: the leaf
    /// becomes its deposited table of 4 KiB pages) and the caller goes on at the PTE level with the
    /// pages in range (returns false); a folio that cannot be split stays mapped by its leaf, which
    /// the PTE level then skips. The huge zero page and a huge page mapped more than once are left
    /// alone.
    /// </summary>
    private bool MadviseFreeHugePmd(Cpu cpu, MmuGather tlb, Vma vma, long pmdTable, int pmdIndex, ulong addr, ulong next)
    {
        if (!PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong orig))
        {
            return false;
        }

        if (Entry.Pfn(orig) == Phys.HugeZeroPfn || !IsAnonPage(Entry.Pfn(orig)) || Volatile.Read(ref Phys.EntireMapCount(Entry.Pfn(orig))) != 1)
        {
            PmdUnlock(cpu, pmdTable);
            return true;
        }

        if (next - addr != Geometry.PmdSize)
        {
            PmdUnlock(cpu, pmdTable);
            SplitFolio(cpu, vma, Entry.Pfn(orig), addr & Geometry.PmdMask);
            return false;
        }

        long head = Entry.Pfn(orig);
        ref var d = ref Phys.Desc(head);
        d.ClearFlagsAtomic(PageFlags.Dirty);
        if (Entry.IsYoung(orig) || Entry.IsDirty(orig))
        {
            SetPmdAt(pmdTable, pmdIndex, Entry.MkOld(Entry.MkClean(orig)));
            tlb.AddRange(addr, addr + Geometry.PmdSize);
        }

        if ((d.ClearFlagsAtomic(PageFlags.SwapBacked) & PageFlags.SwapBacked) != 0)
        {
            Phys.Lru.Move(head, LruList.File); // folio_mark_lazyfree
        }

        PmdUnlock(cpu, pmdTable);
        return true;
    }

    /// <summary>
    /// <c>try_to_unmap_one</c> for a huge page found by reclaim through its reverse map. A
    /// PMD-mapped lazy-free huge page is discarded whole when it stayed clean and nobody else holds
    /// it (<c>unmap_huge_pmd_locked</c> and <c>__discard_anon_folio_pmd_locked</c>: the pmd and its
    /// deposit go, 512 pages of RSS with them); a young one only loses its young bit; a dirty one
    /// is swap-backed again, but for a droppable VMA's, which goes dirty or not (6.14+). Swap-backed
    /// huge pages and huge pages mapped by PTEs are kept: the model has no THP swap-out and no
    /// folio split (the kernel would split them first).
    /// </summary>
    internal UnmapOutcome TryToUnmapHugePmd(Cpu cpu, long head, ulong haddr, bool droppable)
    {
        ref var d = ref Phys.Desc(head);
        if ((d.Flags & (int)PageFlags.SwapBacked) != 0 || Volatile.Read(ref Phys.EntireMapCount(head)) == 0)
        {
            return UnmapOutcome.Busy;
        }

        if (!RmapLock.TryDownRead(cpu.Id))
        {
            return UnmapOutcome.Busy;
        }

        try
        {
            long pmdTable = _dead ? -1 : PmdTableOf(haddr);
            int pmdIndex = Geometry.Index(haddr, 2);
            if (pmdTable < 0 || !PmdTransHugeLock(cpu, pmdTable, pmdIndex, out ulong pmd))
            {
                return UnmapOutcome.NotMapped;
            }

            try
            {
                ref ulong slot = ref Phys.Table(pmdTable)[pmdIndex];
                if (Entry.Pfn(pmd) != head)
                {
                    return UnmapOutcome.NotMapped;
                }

                if (Entry.IsYoung(pmd) && Interlocked.CompareExchange(ref slot, Entry.MkOld(pmd), pmd) == pmd)
                {
                    FlushTlbRange(cpu, haddr, haddr + Geometry.PmdSize);
                    return UnmapOutcome.Referenced;
                }

                ulong orig = PmdpHugeGetAndClear(pmdTable, pmdIndex);
                FlushTlbRange(cpu, haddr, haddr + Geometry.PmdSize);
                if (Entry.IsDirty(orig))
                {
                    d.SetFlagsAtomic(PageFlags.Dirty);
                }

                if (((d.Flags & (int)PageFlags.Dirty) != 0 && !droppable) || d.RefCount != 1 + 1)
                {
                    SetPmdAt(pmdTable, pmdIndex, orig);
                    if ((d.Flags & (int)PageFlags.Dirty) == 0 || droppable)
                    {
                        return UnmapOutcome.Busy; // someone else holds a reference (a GUP pin)
                    }

                    d.SetFlagsAtomic(PageFlags.SwapBacked);
                    return UnmapOutcome.Redirtied;
                }

                Interlocked.Decrement(ref Phys.EntireMapCount(head));
                ZapDepositedTable(pmdTable);
                AddRssAnon(cpu, -PhysMemory.HugeFrames);
                Phys.PutPage(head); // the mapping's reference; reclaim's isolation keeps the page until it lets go
                CountPageFreed(cpu, PhysMemory.HugeFrames);
                return UnmapOutcome.Discarded;
            }
            finally
            {
                PmdUnlock(cpu, pmdTable);
            }
        }
        finally
        {
            RmapLock.UpRead(cpu.Id);
        }
    }
}

/// <summary>Transparent huge page events of an address space (the <c>thp_*</c> lines of /proc/vmstat).</summary>
/// <param name="FaultAlloc"><c>thp_fault_alloc</c>: faults that mapped a new huge page.</param>
/// <param name="FaultFallback"><c>thp_fault_fallback</c>: eligible faults that fell back to 4 KiB pages.</param>
/// <param name="SplitPmd"><c>thp_split_pmd</c>: PMD leaves split into PTE tables.</param>
/// <param name="ZeroPageMapped">Read faults that mapped the huge zero page.</param>
/// <param name="SplitPage"><c>thp_split_page</c>: huge pages split into 4 KiB pages (<c>split_folio</c>).</param>
public readonly record struct ThpCounters(long FaultAlloc, long FaultFallback, long SplitPmd, long ZeroPageMapped, long SplitPage = 0);
