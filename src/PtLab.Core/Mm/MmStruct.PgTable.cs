using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

// The page-table primitives (include/linux/pgtable.h, arch/x86's pgalloc.h and pgtable.h): the
// split locks, and every store of a table entry at every level. Each store is a scheduling point,
// so the systematic tester can run another CPU between a walker's read and the store it races.
public sealed partial class MmStruct
{
    /// <summary><c>pte_lockptr</c> + <c>spin_lock</c>: the split PTE lock of a table page.</summary>
    /// <remarks>
    /// Every taker of a split table lock names its CPU, so on a machine of one CPU without hooks
    /// they are all that CPU's thread, and the lock is the uniprocessor kernel's: no atomic.
    /// </remarks>
    internal void PtlLock(Cpu cpu, long pteTable)
    {
        if (_uniprocessor)
        {
            RawSpinLock.LockUniprocessor(ref Phys.PtLock(pteTable));
            return;
        }

        RawSpinLock.Lock(ref Phys.PtLock(pteTable), Machine.Sync, cpu.Id, LockClass.PteLock, pteTable);
    }

    /// <summary><c>spin_unlock</c> of a split PTE lock.</summary>
    internal void PtlUnlock(Cpu cpu, long pteTable) =>
        RawSpinLock.Unlock(ref Phys.PtLock(pteTable), Machine.Sync, cpu.Id, LockClass.PteLock, pteTable);

    /// <summary><c>pmd_lock</c>: the split lock of a PMD table page.</summary>
    internal void PmdLock(Cpu cpu, long pmdTable)
    {
        if (_uniprocessor)
        {
            RawSpinLock.LockUniprocessor(ref Phys.PtLock(pmdTable)); // see PtlLock
            return;
        }

        RawSpinLock.Lock(ref Phys.PtLock(pmdTable), Machine.Sync, cpu.Id, LockClass.PmdLock, pmdTable);
    }

    /// <summary><c>spin_trylock</c> of a pmd lock.</summary>
    internal bool PmdTryLock(Cpu cpu, long pmdTable) =>
        RawSpinLock.TryLock(ref Phys.PtLock(pmdTable), Machine.Sync, cpu.Id, LockClass.PmdLock, pmdTable);

    /// <summary><c>spin_unlock</c> of a pmd lock.</summary>
    internal void PmdUnlock(Cpu cpu, long pmdTable) =>
        RawSpinLock.Unlock(ref Phys.PtLock(pmdTable), Machine.Sync, cpu.Id, LockClass.PmdLock, pmdTable);

    /// <summary><c>lockdep_assert_held(ptl)</c> for the PTE lock of <paramref name="pteTable"/>; free when lock checking is off.</summary>
    internal void AssertPtlHeld(Cpu cpu, long pteTable) => Machine.Sync.LockDep?.AssertHeld(cpu.Id, LockClass.PteLock, pteTable);

    /// <summary><c>lockdep_assert_held</c> for the pmd lock of <paramref name="pmdTable"/>; free when lock checking is off.</summary>
    internal void AssertPmdLockHeld(Cpu cpu, long pmdTable) => Machine.Sync.LockDep?.AssertHeld(cpu.Id, LockClass.PmdLock, pmdTable);

    /// <summary>
    /// <c>pte_offset_map</c> without RCU or a reference (the <c>none</c> design's, and what the
    /// kernel did before tables could be freed under <c>mmap_lock</c> for read): the PTE table under
    /// a pmd entry, or <see cref="TableRef.None"/> when the entry is none or huge.
    /// </summary>
    internal TableRef PlainPteOffsetMap(long pmdTable, int pmdIndex)
    {
        ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]);
        return Entry.IsNone(pmd) || Entry.IsHuge(pmd) ? TableRef.None : Phys.Ref(Entry.Pfn(pmd));
    }

    /// <summary><c>pte_offset_map</c>: the design's, or the plain one without a call where the design's is plain.</summary>
    internal TableRef PteOffsetMap(Cpu cpu, long pmdTable, int pmdIndex) =>
        _plainPteMap ? PlainPteOffsetMap(cpu, pmdTable, pmdIndex)
        : _percpuMap is { } m && m.TryMap(this, cpu, pmdTable, pmdIndex, out var pteTable) ? pteTable
        : Design.PteOffsetMap(this, cpu, pmdTable, pmdIndex);

    // The plain map on CPU cpu, reading the pmd entry through the CPU's table cache.
    private TableRef PlainPteOffsetMap(Cpu cpu, long pmdTable, int pmdIndex)
    {
        ulong pmd = Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex);
        return Entry.IsNone(pmd) || Entry.IsHuge(pmd) ? TableRef.None : Phys.CachedPteTableRef(cpu.TableCache, Entry.Pfn(pmd));
    }

    /// <summary>
    /// <c>handle_pte_fault</c>'s first look (see <see cref="IPageTableReclaim.PteOffsetMapEntry"/>):
    /// the table stays mapped only when entry <paramref name="index"/> is not none.
    /// </summary>
    internal TableRef PteOffsetMapEntry(Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig)
    {
        if (!_plainPteMap)
        {
            return _percpuMap is { } m && m.TryMapEntry(this, cpu, pmdTable, pmdIndex, index, out orig, out var mapped) ? mapped
                : Design.PteOffsetMapEntry(this, cpu, pmdTable, pmdIndex, index, out orig);
        }

        orig = 0;
        var pteTable = PlainPteOffsetMap(cpu, pmdTable, pmdIndex);
        if (!pteTable.IsNone)
        {
            orig = Phys.ReadCachedEntry(cpu.TableCache, 1, pteTable, index);
            if (Entry.IsNone(orig))
            {
                return TableRef.None;
            }
        }

        return pteTable;
    }

    /// <summary><c>pte_unmap</c>: nothing to do where the design maps plainly.</summary>
    internal void PteUnmap(Cpu cpu, TableRef pteTable)
    {
        if (!_plainPteMap)
        {
            Design.PteUnmap(this, cpu, pteTable);
        }
    }

    /// <summary><c>pte_offset_map_lock</c>: the design's, or the plain map and the PTE lock.</summary>
    internal TableRef PteOffsetMapLock(Cpu cpu, long pmdTable, int pmdIndex)
    {
        TableRef pteTable;
        if (!_plainPteMap)
        {
            if (_percpuMap is not { } m || !m.TryMap(this, cpu, pmdTable, pmdIndex, out pteTable))
            {
                return Design.PteOffsetMapLock(this, cpu, pmdTable, pmdIndex);
            }
        }
        else
        {
            pteTable = PlainPteOffsetMap(cpu, pmdTable, pmdIndex);
        }

        if (!pteTable.IsNone)
        {
            PtlLock(cpu, pteTable.Pfn);
        }

        return pteTable;
    }

    /// <summary><c>pte_unmap_unlock</c>: the design's, or only the unlock.</summary>
    internal void PteUnmapUnlock(Cpu cpu, TableRef pteTable)
    {
        if (_plainPteMap)
        {
            PtlUnlock(cpu, pteTable.Pfn);
        }
        else
        {
            Design.PteUnmapUnlock(this, cpu, pteTable);
        }
    }

    /// <summary>
    /// <c>set_pte_at</c>: stores a leaf entry. Every store of a PTE goes through here or the clear
    /// primitives, so a reclaim design sees each none/non-none transition.
    /// </summary>
    internal void SetPteAt(Cpu cpu, TableRef pteTable, int index, ulong pte)
    {
        ReachedEntryStore(pteTable.Pfn);
        // Under the PTE lock, which every give-back of the table's storage holds: what the cache
        // finds stays the table's until the unlock (see TableStore.LayoutEpoch).
        ulong old = Volatile.Read(ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, index));
        if (_tracksEntries)
        {
            Design.TrackPteSet(this, cpu, pteTable, old, pte);
        }

        Phys.CachedStoreEntry(cpu.TableCache, 1, pteTable, index, old, pte);
    }

    /// <summary>
    /// <see cref="SetPteAt"/> of entry <paramref name="index"/>, then <see cref="PteUnmapUnlock"/>
    /// of the visit that mapped and locked the table: the end of a fault that installs an entry.
    /// A design whose visitors and entries hold the same reference hands the visitor's to the new
    /// entry here (see <see cref="IPageTableReclaim.TrackPteSetHandOver"/>), and the visit then
    /// ends with the unlock alone.
    /// </summary>
    internal void SetPteAtUnmapUnlock(Cpu cpu, TableRef pteTable, int index, ulong pte, ulong preloadVa = 0)
    {
        if (_plainPteMap || !_tracksEntries)
        {
            SetPteAt(cpu, pteTable, index, pte);
            UpdateMmuCache(cpu, preloadVa, pte);
            PteUnmapUnlock(cpu, pteTable);
            return;
        }

        ReachedEntryStore(pteTable.Pfn);
        ulong old = Volatile.Read(ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, index));
        // A design with the percpu fast path hands the visitor's reference over whenever the
        // entry goes from none to non-none (see IPageTableReclaim.PercpuPteMap), unless a mutation
        // took it off; the call is left out then, as the kernel's track_pte_set is inline.
        bool handedOver = (_percpuMap is { Off: false } && Entry.IsNone(old) && !Entry.IsNone(pte))
            || Design.TrackPteSetHandOver(this, cpu, pteTable, old, pte);
        Phys.CachedStoreEntry(cpu.TableCache, 1, pteTable, index, old, pte);
        UpdateMmuCache(cpu, preloadVa, pte);
        if (handedOver)
        {
            // The unlock is the visit's last touch of the table: from here on the new entry's
            // reference, which only a clear under this lock can drop, is what keeps it.
            PtlUnlock(cpu, pteTable.Pfn);
        }
        else
        {
            Design.PteUnmapUnlock(this, cpu, pteTable);
        }
    }

    /// <summary>
    /// <c>update_mmu_cache</c> after a fault installed <paramref name="pte"/> for
    /// <paramref name="va"/> (0: none), under its PTE lock: the faulting CPU's TLB takes the entry
    /// as the walk of the access's retry would (a walk may fill the TLB at any moment the entry is
    /// in memory; the entry carries its accessed and dirty bits), so the retry needs no walk. A
    /// clear of the entry needs this lock and flushes after it, so the cached entry goes with it.
    /// Only on the CPU that runs this address space, and only without a scheduler plugged in, whose
    /// explored interleavings stay the walk's.
    /// </summary>
    private void UpdateMmuCache(Cpu cpu, ulong va, ulong pte)
    {
        if (va == 0 || !_preloadTlb || !ReferenceEquals(cpu.Mm, this))
        {
            return;
        }

        cpu.Tlb.Lock(Machine.Sync, cpu.Id);
        cpu.Tlb.Insert(va, pte);
        cpu.Tlb.Unlock(Machine.Sync, cpu.Id);
    }

    /// <summary><c>ptep_get_and_clear[_full]</c>: atomically, as hardware may be setting A/D bits (on one CPU, only its own walker can, on this thread).</summary>
    internal ulong PtepGetAndClear(Cpu cpu, TableRef pteTable, int index)
    {
        // The scheduling point comes before the table is looked up, so a table freed meanwhile is
        // caught by the lookup rather than written through a stale slot.
        ReachedEntryStore(pteTable.Pfn);
        return GetAndClearTracked(cpu, pteTable, index);
    }

    /// <summary><c>pte_clear_not_present_full</c> / <c>pte_clear</c>.</summary>
    internal void PteClear(Cpu cpu, TableRef pteTable, int index) => PtepGetAndClear(cpu, pteTable, index);

    /// <summary><c>pmd_populate</c>: points a pmd entry at a fresh PTE table, under the pmd lock.</summary>
    internal void PmdPopulate(Cpu cpu, long pmdTable, int pmdIndex, long pteTable)
    {
        AssertPmdLockHeld(cpu, pmdTable);
        PopulateEntry(pmdTable, pmdIndex, pteTable);
    }

    /// <summary>
    /// <c>pmd_clear</c>: unhooks a PTE table. Caller holds the pmd lock, or <c>mmap_lock</c> for
    /// write and the rmap locks (<c>free_pgtables</c>); the table is freed only after a TLB flush
    /// and a grace period.
    /// </summary>
    internal void PmdClear(long pmdTable, int pmdIndex) => ClearEntry(pmdTable, pmdIndex);

    /// <summary><c>pud_populate</c>: points a pud entry at a fresh PMD table, under <c>page_table_lock</c>.</summary>
    internal void PudPopulate(Cpu cpu, long pudTable, int pudIndex, long pmdTable)
    {
        Machine.Sync.LockDep?.AssertHeld(cpu.Id, LockClass.PageTableLock);
        PopulateEntry(pudTable, pudIndex, pmdTable);
    }

    /// <summary><c>pud_clear</c>: unhooks a PMD table (<c>free_pmd_range</c>).</summary>
    internal void PudClear(long pudTable, int pudIndex) => ClearEntry(pudTable, pudIndex);

    /// <summary>
    /// <c>p4d_populate</c>: points a PGD entry at a fresh PUD table (the P4D level is folded into
    /// the PGD with 4-level paging), under <c>page_table_lock</c>.
    /// </summary>
    internal void P4dPopulate(Cpu cpu, long pgdTable, int pgdIndex, long pudTable)
    {
        Machine.Sync.LockDep?.AssertHeld(cpu.Id, LockClass.PageTableLock);
        PopulateEntry(pgdTable, pgdIndex, pudTable);
    }

    /// <summary><c>p4d_clear</c>: unhooks a PUD table (<c>free_pud_range</c>).</summary>
    internal void P4dClear(long pgdTable, int pgdIndex) => ClearEntry(pgdTable, pgdIndex);

    /// <summary>
    /// <see cref="PtepGetAndClear"/> for a caller that holds the PTE lock of
    /// <paramref name="pteTable"/> (<c>zap_pte_range</c>): the slot is found through the CPU's table
    /// cache, not the descriptor, slot and group lookups. Exact under the lock: every unlinking of
    /// the table's storage holds that lock, so a line whose stamp the layout epoch still reads
    /// names the table's own group (see <see cref="TableStore.LayoutEpoch"/>); a group this caller's
    /// own earlier clear gave back advanced the epoch, and the lookup runs again. A table freed
    /// meanwhile (which a lock holder cannot see) would fail the line's generation check and the
    /// full lookup's, as <see cref="PhysMemory.Table(TableRef)"/> does.
    /// </summary>
    internal ulong PtepGetAndClearLocked(Cpu cpu, TableRef pteTable, int index)
    {
        ReachedEntryStore(pteTable.Pfn);
        return GetAndClearTracked(cpu, pteTable, index, ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, index), cached: true);
    }

    private ulong GetAndClearTracked(Cpu cpu, TableRef pteTable, int index) =>
        GetAndClearTracked(cpu, pteTable, index, ref Phys.Table(pteTable)[index], cached: false);

    // The clear itself, then its count: through the CPU's table cache where the slot was found there.
    private ulong GetAndClearTracked(Cpu cpu, TableRef pteTable, int index, ref ulong slot, bool cached)
    {
        ulong old = _uniprocessor ? LocalGetAndClear(ref slot) : Interlocked.Exchange(ref slot, 0);
        if (old != 0)
        {
            if (cached)
            {
                Phys.CachedEntryCleared(cpu.TableCache, pteTable, index);
            }
            else
            {
                Phys.EntryCleared(pteTable.Pfn, index, old, cpu.Id);
            }

            if (_tracksEntries)
            {
                Design.TrackPteClear(this, cpu, pteTable, old);
            }
        }

        return old;
    }

    /// <summary>
    /// <c>native_local_ptep_get_and_clear</c>, the uniprocessor kernel's: a load and a store, no
    /// locked exchange, for the one CPU of a machine without hooks (see <see cref="_uniprocessor"/>).
    /// </summary>
    private static ulong LocalGetAndClear(ref ulong slot)
    {
        ulong old = Volatile.Read(ref slot);
        Volatile.Write(ref slot, 0);
        return old;
    }

    private void PopulateEntry(long table, int index, long child)
    {
        ReachedEntryStore(table);
        // Release: the child table's zeroed entries are visible before the entry that points at
        // it (smp_wmb in pmd_install, __pud_alloc and __p4d_alloc). Pairs with the acquire loads of
        // every lockless walker: the hardware walk, GUP-fast, and pte_offset_map's read of the pmd.
        Phys.StoreEntry(table, index, Volatile.Read(ref Phys.Table(table)[index]), Entry.MakeTable(child));
    }

    private void ClearEntry(long table, int index)
    {
        ReachedEntryStore(table);
        // Pairs with the recheck of walkers that read the entry without the lock that orders
        // this store: pte_offset_map_lock's pmd_same under the PTE lock, and GUP-fast's reread
        // after it grabbed the page. A walker that read the old entry still reads a live table,
        // since the table is freed only after a TLB flush and an RCU grace period.
        Phys.StoreEntry(table, index, Volatile.Read(ref Phys.Table(table)[index]), 0);
    }

    private void ReachedEntryStore(long table) => Machine.Sync.Scheduler?.Reached(SchedulingPointKind.EntryStore, table);
}
