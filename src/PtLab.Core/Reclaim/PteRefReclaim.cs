using System.Runtime.CompilerServices;
using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Reclaim;

/// <summary>
/// The <c>pte-ref</c> design: the seed RFC (Qi Zheng, April 2022). Each PTE table carries a
/// <see cref="PercpuRef"/> held by every non-none entry and every visitor. It stays in percpu mode,
/// where gets and puts cost one per-CPU add and the count cannot be known, until MADV_DONTNEED or
/// MADV_FREE calls <c>try_to_free_user_pte</c>: that switches it to atomic mode (one RCU grace
/// period), drops its own reference and frees the table if the count is zero.
/// </summary>
public class PteRefReclaim : RefcountReclaim
{
    private protected long _switches;
    private long _switchBacks;
    private long _freed;

    /// <summary>
    /// Whether <c>try_to_free_user_pte</c> after MADV_DONTNEED switches a table it could not free
    /// back to percpu mode. Patch 14 passes true; the seed's own reply on patch 13 notes that
    /// switching back costs performance.
    /// </summary>
    public bool SwitchBack { get; init; } = true;

    /// <inheritdoc/>
    public override string Name => "pte-ref";

    /// <summary>Mutation: every new pte_ref switches to atomic mode without waiting a grace period.</summary>
    public bool SkipSwitchGracePeriodForTesting { get; set; }

    /// <summary>Switches to atomic mode (<c>percpu_ref_switch_to_atomic_sync</c>), each at least one grace period.</summary>
    public long AtomicSwitches => Volatile.Read(ref _switches);

    /// <summary>Switches back to percpu mode.</summary>
    public long PercpuSwitches => Volatile.Read(ref _switchBacks);

    /// <summary>Tables this design freed (<c>free_user_pte</c> that unhooked a table).</summary>
    public long TablesFreed => Volatile.Read(ref _freed);

    private readonly PercpuPteMap _percpuMap = new();

    /// <summary>
    /// The percpu fast path of <c>pte_tryget_map</c>, which the address space runs itself before
    /// it calls this design's mapping hooks, and which they run first too.
    /// </summary>
    public sealed override PercpuPteMap? PercpuPteMap => _percpuMap;

    /// <inheritdoc/>
    private protected override void SkipTryGetChanged(bool skip) => _percpuMap.Off = skip;

    private protected static PercpuRef RefOf(MmStruct mm, long pteTable) => RefOf(mm.Phys.TableState(pteTable), pteTable);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static PercpuRef RefOf(object? state, long pteTable) => PercpuPteMap.RefOf(state, pteTable);

    /// <summary><c>pte_ref_init</c>: percpu mode, re-initialisable, started at zero.</summary>
    public override void PteTableCtor(MmStruct mm, Cpu cpu, long pteTable)
    {
        var r = new PercpuRef(mm.Rcu, release: null, PercpuRefInit.AllowReinit)
        {
            SkipGracePeriodForTesting = SkipSwitchGracePeriodForTesting,
        };
        r.Put(cpu.Id); // "We want to start with the refcount at zero"
        mm.Phys.SetTableState(pteTable, r);
    }

    /// <summary><c>pte_ref_free</c>.</summary>
    public override void PteTableDtor(MmStruct mm, long pteTable)
    {
        if (mm.Phys.TableState(pteTable) is PercpuRef r)
        {
            r.Exit();
        }
    }

    /// <inheritdoc/>
    public override long? ExactCount(MmStruct mm, long pteTable)
    {
        var r = RefOf(mm, pteTable);
        return r.TrueCount;
    }

    /// <summary><c>percpu_ref_tryget</c>: always succeeds in percpu mode; fails at zero in atomic mode.</summary>
    /// <remarks>
    /// Called inside <c>pte_offset_map</c>'s RCU read section. It keeps percpu_ref_tryget's own
    /// (nested) read section where hooks are on: the section's scheduling point is where the
    /// systematic tester lets a racing free in, and the mutation tests are calibrated on it.
    /// Without hooks the nested section does nothing and is skipped (<see cref="PercpuRef.TryGetNested"/>).
    /// </remarks>
    protected sealed override bool TryGet(MmStruct mm, Cpu cpu, TableRef pteTable, object? state)
    {
        var r = RefOf(state, pteTable.Pfn);
        try
        {
            return r.TryGetNested(cpu.Id);
        }
        catch (PercpuRefException e) when (!mm.Phys.IsLive(pteTable))
        {
            throw RacedWithFree("pte_tryget", pteTable, e);
        }
    }

    /// <summary>
    /// <c>pte_tryget_map</c>: under RCU, read the pmd entry and take a reference on the PTE table it
    /// points to. Without hooks and with the ref in percpu mode this is the kernel's path,
    /// <see cref="Mm.PercpuPteMap.TryMap"/>: the read section's mark, the pmd load, the table and its
    /// ref from this CPU's cache (one descriptor lookup on a miss), one add on this CPU's counter,
    /// the unmark. The ref is left in this CPU's cache for the <c>track_pte_set</c> and
    /// <c>pte_unmap</c> that follow. With the ref in atomic mode the full <c>percpu_ref_tryget</c>
    /// runs; with hooks on (the systematic tester, the profile) or a mutation, the shared
    /// <c>pte_tryget</c> of <see cref="RefcountReclaim"/>.
    /// </summary>
    public sealed override TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex) => Map(mm, cpu, pmdTable, pmdIndex);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TableRef Map(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex) =>
        _percpuMap.TryMap(mm, cpu, pmdTable, pmdIndex, out var pteTable) ? pteTable : MapSlow(mm, cpu, pmdTable, pmdIndex);

    // Not percpu mode, hooks on, or a mutation: the seed's try-get, which may fail and free.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private TableRef MapSlow(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        var rcu = mm.Rcu;
        if (rcu.IsBare && !SkipTryGetForTesting)
        {
            long saved = rcu.ReadLockSaved(cpu.Id);
            var pteTable = PercpuPteMap.MappedUnderRcu(mm, cpu, pmdTable, pmdIndex, out var r);
            if (pteTable.IsNone)
            {
                rcu.ReadUnlockSaved(cpu.Id, saved);
                return TableRef.None;
            }

            return GotOrFailed(mm, cpu, pmdTable, pmdIndex, pteTable, TryGet(mm, cpu, pteTable, r), saved);
        }

        return base.PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
    }

    /// <summary>
    /// <c>handle_pte_fault</c>'s first look. Without hooks and with the ref in percpu mode,
    /// <see cref="Mm.PercpuPteMap.TryMapEntry"/>: the seed's <c>pte_tryget_map</c>, entry read, and
    /// <c>pte_unmap</c> when the entry is none, except that the entry is read first, inside the read
    /// section, and the reference is taken only when the entry is not none (see there why nobody can
    /// tell). A ref seen in atomic mode takes the seed's path unchanged, failed try-get and
    /// <c>free_user_pte</c> included. With hooks on (the systematic tester, the profile) or a
    /// mutation, the shared path of <see cref="NoReclaim"/> runs.
    /// </summary>
    public sealed override TableRef PteOffsetMapEntry(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig) =>
        _percpuMap.TryMapEntry(mm, cpu, pmdTable, pmdIndex, index, out orig, out var pteTable) ? pteTable
            : PteOffsetMapEntrySlow(mm, cpu, pmdTable, pmdIndex, index, out orig);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private TableRef PteOffsetMapEntrySlow(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig)
    {
        var rcu = mm.Rcu;
        if (!rcu.IsBare || SkipTryGetForTesting)
        {
            return base.PteOffsetMapEntry(mm, cpu, pmdTable, pmdIndex, index, out orig);
        }

        // Atomic mode: the seed's try-get (which may fail and free), entry read, pte_unmap if none.
        long saved = rcu.ReadLockSaved(cpu.Id);
        orig = 0;
        var pteTable = PercpuPteMap.MappedUnderRcu(mm, cpu, pmdTable, pmdIndex, out var r);
        if (pteTable.IsNone)
        {
            rcu.ReadUnlockSaved(cpu.Id, saved);
            return TableRef.None;
        }

        return KeepIfNotNone(mm, cpu, GotOrFailed(mm, cpu, pmdTable, pmdIndex, pteTable, TryGet(mm, cpu, pteTable, r), saved), index, out orig);
    }

    // The end of a bare pte_tryget_map: the read section closed, and on a failed try-get the
    // seed's free_user_pte, outside it.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TableRef GotOrFailed(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable, bool got, long saved)
    {
        mm.Rcu.ReadUnlockSaved(cpu.Id, saved);
        if (!got)
        {
            OnTryGetFailed(mm, cpu, pmdTable, pmdIndex, pteTable);
            return TableRef.None;
        }

        return pteTable;
    }

    /// <inheritdoc/>
    public sealed override void PteUnmap(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        if (!SkipTryGetForTesting)
        {
            Put(mm, cpu, pteTable);
        }
    }

    /// <summary><c>pte_tryget_map_lock</c>.</summary>
    public sealed override TableRef PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        var pteTable = Map(mm, cpu, pmdTable, pmdIndex);
        if (!pteTable.IsNone)
        {
            mm.PtlLock(cpu, pteTable.Pfn);
        }

        return pteTable;
    }

    /// <summary><c>pte_unmap_unlock</c>.</summary>
    public sealed override void PteUnmapUnlock(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        mm.PtlUnlock(cpu, pteTable.Pfn);
        if (!SkipTryGetForTesting)
        {
            Put(mm, cpu, pteTable);
        }
    }

    /// <inheritdoc/>
    public sealed override void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry)
    {
        if (Entry.IsNone(oldEntry) && !Entry.IsNone(newEntry))
        {
            Get(mm, cpu, pteTable);
        }
    }

    /// <inheritdoc/>
    public sealed override void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry)
    {
        if (!Entry.IsNone(oldEntry) && !SkipTrackClearForTesting)
        {
            Put(mm, cpu, pteTable);
        }
    }

    /// <summary>
    /// The ref of the table <paramref name="pteTable"/> names: from this CPU's cache when it names
    /// the same frame and generation, else from the table's state after the descriptor check
    /// that the table still lives.
    /// </summary>
    /// <remarks>
    /// A cache hit needs no descriptor check to keep a use after free caught: every PTE table is
    /// freed only after <see cref="PteTableDtor"/> (<c>pte_ref_free</c>) exited its ref, and an
    /// exited ref is never in percpu mode, so a get or put on it leaves the fast path for the full
    /// one, which reports the access to a freed table as a use after free.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static PercpuRef LiveRefOf(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        var cached = cpu.MappedTable;
        if (cached.Pfn == pteTable.Pfn && cached.Generation == pteTable.Generation)
        {
            return cpu.MappedRef!;
        }

        return RefOf(mm.Phys.LiveTableState(pteTable), pteTable.Pfn);
    }

    /// <summary><c>percpu_ref_get</c> (from <c>track_pte_set</c>, by a visitor that already holds a reference).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected sealed override void Get(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        var r = LiveRefOf(mm, cpu, pteTable);
        if (!r.GetIfPercpu(cpu.Id))
        {
            GetSlow(mm, cpu, pteTable, r);
        }
    }

    // Atomic mode, or hooks on: the full percpu_ref_get, with a racing free reported as such.
    private static void GetSlow(MmStruct mm, Cpu cpu, TableRef pteTable, PercpuRef r)
    {
        // A ref found in the CPU's cache was not checked against the descriptor: a freed table
        // is reported here, with its free stack, before its exited ref is touched.
        mm.Phys.LiveTableState(pteTable);
        if (r.IsZero)
        {
            throw new UseAfterFreeException($"track_pte_set on {pteTable}, whose pte_ref is zero in atomic mode", Environment.StackTrace, null);
        }

        try
        {
            r.Get(cpu.Id);
        }
        catch (PercpuRefException e) when (!mm.Phys.IsLive(pteTable))
        {
            throw RacedWithFree("track_pte_set", pteTable, e);
        }
    }

    /// <summary><c>percpu_ref_put</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected sealed override void Put(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        var r = LiveRefOf(mm, cpu, pteTable);
        if (!r.PutIfPercpu(cpu.Id))
        {
            PutSlow(mm, cpu, pteTable, r);
        }
    }

    // Atomic mode, or hooks on: the full percpu_ref_put, with a racing free reported as such.
    private static void PutSlow(MmStruct mm, Cpu cpu, TableRef pteTable, PercpuRef r)
    {
        mm.Phys.LiveTableState(pteTable); // see GetSlow
        try
        {
            r.Put(cpu.Id);
        }
        catch (PercpuRefException e) when (!mm.Phys.IsLive(pteTable))
        {
            throw RacedWithFree("pte_put", pteTable, e);
        }
    }

    /// <summary>
    /// A failed <c>pte_tryget</c> means the count reached zero in atomic mode: call
    /// <c>free_user_pte</c> so a free whose owner lost the race is not missed.
    /// </summary>
    protected override void OnTryGetFailed(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable) =>
        FreeAndCount(mm, cpu, pmdTable, pmdIndex, pteTable);

    /// <summary>Patch 14: after a MADV_DONTNEED zap of a table, <c>try_to_free_user_pte(..., switch_back)</c>.</summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb)
    {
        if (zap.Reason == ZapReason.DontNeed)
        {
            TryToFreeUserPte(mm, cpu, zap.PmdTable, zap.PmdIndex, SwitchBack);
        }
    }

    /// <summary>Patch 15: after MADV_FREE, stay atomic if pages were marked lazy-free, so reclaim can free the table.</summary>
    public override void AfterMadvFreePteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, bool markedLazyFree) =>
        TryToFreeUserPte(mm, cpu, pmdTable, pmdIndex, switchBack: !markedLazyFree);

    /// <summary>
    /// Patch 15 in reclaim: after discarding a lazy-free page, <c>page_vma_mapped_walk</c> with
    /// <c>PVMW_MADV_FREE</c> frees the table once its count is zero; a page found dirty again sends
    /// the table back to percpu mode.
    /// </summary>
    public override void AfterLazyFreeUnmap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable, bool discarded)
    {
        if (discarded)
        {
            mm.Rcu.ReadLock(cpu.Id);
            bool zero = mm.Phys.IsLive(pteTable) && RefOf(mm, pteTable.Pfn).IsZero;
            mm.Rcu.ReadUnlock(cpu.Id);
            if (zero)
            {
                FreeAndCount(mm, cpu, pmdTable, pmdIndex, pteTable);
            }

            return;
        }

        SwitchBackToPercpu(mm, cpu, pmdTable, pmdIndex);
    }

    /// <summary>
    /// <c>try_to_free_user_pte</c>: take a reference, switch to atomic mode (waiting a grace period
    /// so every CPU's share is folded in), drop the reference under RCU, and free the table if the
    /// count is zero; otherwise optionally switch back to percpu mode.
    /// </summary>
    public void TryToFreeUserPte(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, bool switchBack)
    {
        var pteTable = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (pteTable.IsNone)
        {
            return;
        }

        Guard(mm, pteTable, "percpu_ref_switch_to_atomic_sync", cpu.Id, static (r, c) =>
        {
            r.SwitchToAtomicSync(c);
            return true;
        });
        // Under a test mutation the table may have been freed since the switch: report that as the
        // use after free it is, not as a missing pte_ref.
        var r = Guard(mm, pteTable, "__pte_put", cpu.Id, static (r, _) => r);
        Interlocked.Increment(ref _switches);
        mm.Rcu.ReadLock(cpu.Id);
        // Under RCU the table cannot be freed under us even once our reference is gone.
        if (!SkipTryGetForTesting)
        {
            r.Put(cpu.Id); // __pte_put: pairs with the try-get above
        }

        bool zero = r.IsZero;
        mm.Rcu.ReadUnlock(cpu.Id);
        if (zero)
        {
            FreeAndCount(mm, cpu, pmdTable, pmdIndex, pteTable);
            return;
        }

        if (switchBack)
        {
            SwitchBackToPercpu(mm, cpu, pmdTable, pmdIndex);
        }
    }

    /// <summary>Takes a fresh reference on whatever table is there now and switches it back to percpu mode.</summary>
    private void SwitchBackToPercpu(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        var again = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (!again.IsNone)
        {
            Guard(mm, again, "percpu_ref_switch_to_percpu", cpu.Id, static (r, c) =>
            {
                r.SwitchToPercpu(c);
                return true;
            });
            Interlocked.Increment(ref _switchBacks);
            PteUnmap(mm, cpu, again);
        }
    }

    /// <summary>
    /// Runs every pte_ref operation on the table's ref. A <see cref="PercpuRefException"/> from a
    /// table that was freed meanwhile (possible only when a walker held no reference, under a test
    /// mutation) is the use after free it reveals, and is reported as one. Any other failure, and
    /// a percpu_ref failure on a live table, is a different bug and goes on as it is.
    /// </summary>
    private protected static T Guard<T>(MmStruct mm, TableRef pteTable, string what, int cpu, Func<PercpuRef, int, T> op)
    {
        try
        {
            return op(RefOf(mm, pteTable.Pfn), cpu);
        }
        catch (PercpuRefException e) when (!mm.Phys.IsLive(pteTable))
        {
            throw RacedWithFree(what, pteTable, e);
        }
    }

    /// <summary>A pte_ref operation failed because the table was freed meanwhile: report the use after free.</summary>
    private static UseAfterFreeException RacedWithFree(string what, TableRef pteTable, Exception e) =>
        new($"{what} on {pteTable} raced with its free: {e.Message}", Environment.StackTrace, null);

    private protected void FreeAndCount(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable)
    {
        if (FreeUserPte(mm, cpu, pmdTable, pmdIndex, pteTable))
        {
            Interlocked.Increment(ref _freed);
        }
    }
}
