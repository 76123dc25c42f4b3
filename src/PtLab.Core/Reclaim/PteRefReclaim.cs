using PtLab.Mm;
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
public sealed class PteRefReclaim : RefcountReclaim
{
    private long _switches;
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

    private static PercpuRef RefOf(MmStruct mm, long ptePfn) =>
        mm.Phys.Desc(ptePfn).TableState as PercpuRef
        ?? throw new InvalidOperationException($"PTE table {ptePfn:x} has no pte_ref");

    /// <summary><c>pte_ref_init</c>: percpu mode, re-initialisable, started at zero.</summary>
    public override void PteTableCtor(MmStruct mm, Cpu cpu, long ptePfn)
    {
        var r = new PercpuRef(mm.Rcu, release: null, PercpuRefInit.AllowReinit)
        {
            SkipGracePeriodForTesting = SkipSwitchGracePeriodForTesting,
        };
        r.Put(cpu.Id); // "We want to start with the refcount at zero"
        mm.Phys.Desc(ptePfn).TableState = r;
    }

    /// <summary><c>pte_ref_free</c>.</summary>
    public override void PteTableDtor(MmStruct mm, long ptePfn)
    {
        if (mm.Phys.Desc(ptePfn).TableState is PercpuRef r)
        {
            r.Exit();
        }
    }

    /// <inheritdoc/>
    public override long? ExactCount(MmStruct mm, long ptePfn)
    {
        var r = RefOf(mm, ptePfn);
        return r.TrueCount;
    }

    /// <summary><c>percpu_ref_tryget</c>: always succeeds in percpu mode; fails at zero in atomic mode.</summary>
    protected override bool TryGet(MmStruct mm, Cpu cpu, TableRef pte)
    {
        try
        {
            return RefOf(mm, pte.Pfn).TryGet(cpu.Id);
        }
        catch (InvalidOperationException e) when (!mm.Phys.IsLive(pte))
        {
            throw RacedWithFree("pte_tryget", pte, e);
        }
    }


    /// <summary><c>percpu_ref_get</c> (from <c>track_pte_set</c>, by a visitor that already holds a reference).</summary>
    protected override void Get(MmStruct mm, Cpu cpu, TableRef pte)
    {
        if (!mm.Phys.IsLive(pte))
        {
            mm.Phys.Table(pte); // reports the use after free
        }

        var r = RefOf(mm, pte.Pfn);
        if (r.IsZero)
        {
            throw new UseAfterFreeException($"track_pte_set on {pte}, whose pte_ref is zero in atomic mode", Environment.StackTrace, null);
        }

        try
        {
            r.Get(cpu.Id);
        }
        catch (InvalidOperationException e) when (!mm.Phys.IsLive(pte))
        {
            throw RacedWithFree("track_pte_set", pte, e);
        }
    }

    /// <summary><c>percpu_ref_put</c>.</summary>
    protected override void Put(MmStruct mm, Cpu cpu, TableRef pte)
    {
        if (!mm.Phys.IsLive(pte))
        {
            mm.Phys.Table(pte); // reports the use after free
        }

        var r = RefOf(mm, pte.Pfn);
        try
        {
            r.Put(cpu.Id);
        }
        catch (InvalidOperationException e) when (!mm.Phys.IsLive(pte))
        {
            throw RacedWithFree("pte_put", pte, e);
        }
    }

    /// <summary>
    /// A failed <c>pte_tryget</c> means the count reached zero in atomic mode: call
    /// <c>free_user_pte</c> so a free whose owner lost the race is not missed.
    /// </summary>
    protected override void OnTryGetFailed(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, TableRef pte) =>
        FreeAndCount(mm, cpu, pmdTablePfn, pmdIndex, pte);

    /// <summary>Patch 14: after a MADV_DONTNEED zap of a table, <c>try_to_free_user_pte(..., switch_back)</c>.</summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pte, bool unhooked, MmuGather tlb)
    {
        if (zap.Reason == ZapReason.DontNeed)
        {
            TryToFreeUserPte(mm, cpu, zap.PmdTablePfn, zap.PmdIndex, SwitchBack);
        }
    }

    /// <summary>Patch 15: after MADV_FREE, stay atomic if pages were marked lazy-free, so reclaim can free the table.</summary>
    public override void AfterMadvFreePteTable(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, bool markedLazyFree) =>
        TryToFreeUserPte(mm, cpu, pmdTablePfn, pmdIndex, switchBack: !markedLazyFree);

    /// <summary>
    /// Patch 15 in reclaim: after discarding a lazy-free page, <c>page_vma_mapped_walk</c> with
    /// <c>PVMW_MADV_FREE</c> frees the table once its count is zero; a page found dirty again sends
    /// the table back to percpu mode.
    /// </summary>
    public override void AfterLazyFreeUnmap(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, TableRef pte, bool discarded)
    {
        if (discarded)
        {
            mm.Rcu.ReadLock(cpu.Id);
            bool zero = mm.Phys.IsLive(pte) && RefOf(mm, pte.Pfn).IsZero;
            mm.Rcu.ReadUnlock(cpu.Id);
            if (zero)
            {
                FreeAndCount(mm, cpu, pmdTablePfn, pmdIndex, pte);
            }

            return;
        }

        SwitchBackToPercpu(mm, cpu, pmdTablePfn, pmdIndex);
    }

    /// <summary>
    /// <c>try_to_free_user_pte</c>: take a reference, switch to atomic mode (waiting a grace period
    /// so every CPU's share is folded in), drop the reference under RCU, and free the table if the
    /// count is zero; otherwise optionally switch back to percpu mode.
    /// </summary>
    public void TryToFreeUserPte(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, bool switchBack)
    {
        var pte = PteOffsetMap(mm, cpu, pmdTablePfn, pmdIndex);
        if (pte.IsNone)
        {
            return;
        }

        var r = RefOf(mm, pte.Pfn);
        Guard(mm, pte, "percpu_ref_switch_to_atomic_sync", () => r.SwitchToAtomicSync(cpu.Id));
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
            FreeAndCount(mm, cpu, pmdTablePfn, pmdIndex, pte);
            return;
        }

        if (switchBack)
        {
            SwitchBackToPercpu(mm, cpu, pmdTablePfn, pmdIndex);
        }
    }

    /// <summary>Takes a fresh reference on whatever table is there now and switches it back to percpu mode.</summary>
    private void SwitchBackToPercpu(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        var again = PteOffsetMap(mm, cpu, pmdTablePfn, pmdIndex);
        if (!again.IsNone)
        {
            Guard(mm, again, "percpu_ref_switch_to_percpu", () => RefOf(mm, again.Pfn).SwitchToPercpu(cpu.Id));
            Interlocked.Increment(ref _switchBacks);
            PteUnmap(mm, cpu, again);
        }
    }

    /// <summary>
    /// Runs a pte_ref operation; if it fails because the table was freed meanwhile (possible only
    /// when a walker held no reference, under a test mutation), reports the use after free.
    /// </summary>
    private static void Guard(MmStruct mm, TableRef pte, string what, Action op)
    {
        try
        {
            op();
        }
        catch (InvalidOperationException e) when (!mm.Phys.IsLive(pte))
        {
            throw RacedWithFree(what, pte, e);
        }
    }

    /// <summary>A pte_ref operation failed because the table was freed meanwhile: report the use after free.</summary>
    private static UseAfterFreeException RacedWithFree(string what, TableRef pte, Exception e) =>
        new($"{what} on {pte} raced with its free: {e.Message}", Environment.StackTrace, null);

    private void FreeAndCount(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, TableRef pte)
    {
        if (FreeUserPte(mm, cpu, pmdTablePfn, pmdIndex, pte))
        {
            Interlocked.Increment(ref _freed);
        }
    }
}
