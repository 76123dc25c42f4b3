using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Reclaim;

/// <summary>
/// The <c>pt-reclaim</c> design: upstream <c>CONFIG_PT_RECLAIM</c> (Linux 6.14+, mm/pt_reclaim.c).
/// No refcount. Only a MADV_DONTNEED zap that covers a table's whole 2 MiB and leaves every entry
/// none frees it. Walkers are safe because <c>pte_offset_map</c> holds an RCU read section for
/// the whole visit and <c>pte_offset_map_lock</c> rechecks the pmd once it holds the PTE lock.
/// </summary>
public sealed class PtReclaim : NoReclaim
{
    private long _fastPath;
    private long _slowPath;
    private long _slowPathAborted;

    /// <inheritdoc/>
    public override string Name => "pt-reclaim";

    /// <summary>Tables unhooked by the trylock fast path under the PTE lock.</summary>
    public long FastPathFrees => Volatile.Read(ref _fastPath);

    /// <summary>Tables freed by the locked rescan slow path.</summary>
    public long SlowPathFrees => Volatile.Read(ref _slowPath);

    /// <summary>Slow paths that found an entry repopulated and kept the table.</summary>
    public long SlowPathAborted => Volatile.Read(ref _slowPathAborted);

    /// <summary>
    /// <c>__pte_offset_map</c>: enters an RCU read section that lasts until <see cref="PteUnmap"/>,
    /// so the table cannot be freed under the visitor.
    /// </summary>
    public override TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        mm.Rcu.ReadLock(cpu.Id);
        ulong pmd = Volatile.Read(ref mm.Phys.Table(pmdTablePfn)[pmdIndex]);
        if (Entry.IsNone(pmd) || Entry.IsHuge(pmd))
        {
            mm.Rcu.ReadUnlock(cpu.Id);
            return TableRef.None;
        }

        return mm.Phys.Ref(Entry.Pfn(pmd));
    }

    /// <summary><c>pte_unmap</c>: leaves the RCU read section.</summary>
    public override void PteUnmap(MmStruct mm, Cpu cpu, TableRef pte) => mm.Rcu.ReadUnlock(cpu.Id);

    /// <summary>
    /// <c>__pte_offset_map_lock</c>: map, take the PTE lock, and recheck that the pmd still points
    /// at the same table; if the table was unhooked meanwhile, start again (and find none).
    /// </summary>
    public override TableRef PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        while (true)
        {
            var pte = PteOffsetMap(mm, cpu, pmdTablePfn, pmdIndex);
            if (pte.IsNone)
            {
                return pte;
            }

            mm.PtlLock(cpu, pte.Pfn);
            ulong now = Volatile.Read(ref mm.Phys.Table(pmdTablePfn)[pmdIndex]);
            if (SkipPmdRecheckForTesting || (!Entry.IsNone(now) && !Entry.IsHuge(now) && Entry.Pfn(now) == pte.Pfn))
            {
                return pte;
            }

            mm.PtlUnlock(cpu, pte.Pfn);
            PteUnmap(mm, cpu, pte);
        }
    }

    /// <summary>
    /// The fast path at the end of <c>zap_pte_range</c>: if this zap may reclaim the table, try the
    /// pmd lock without waiting (the PTE lock is held, and the usual order is pmd lock first) and
    /// clear the pmd (<c>try_get_and_clear_pmd</c>).
    /// </summary>
    public override bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pte)
    {
        if (!CanReclaim(zap))
        {
            return false;
        }

        if (!mm.PmdTryLock(cpu, zap.PmdTablePfn))
        {
            return false;
        }

        Volatile.Write(ref mm.Phys.Table(zap.PmdTablePfn)[zap.PmdIndex], 0);
        mm.PmdUnlock(cpu, zap.PmdTablePfn);
        Interlocked.Increment(ref _fastPath);
        return true;
    }

    /// <summary>
    /// After <c>zap_pte_range</c> unlocked: free the unhooked table through the gather
    /// (<c>free_pte</c>), or take the slow path, which rechecks all 512 entries under both locks
    /// (<c>try_to_free_pte</c>).
    /// </summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pte, bool unhooked, MmuGather tlb)
    {
        if (!CanReclaim(zap))
        {
            return;
        }

        if (unhooked)
        {
            FreePte(mm, tlb, pte, zap.Start);
            return;
        }

        mm.PmdLock(cpu, zap.PmdTablePfn);
        pte = PteOffsetMap(mm, cpu, zap.PmdTablePfn, zap.PmdIndex);
        if (pte.IsNone)
        {
            mm.PmdUnlock(cpu, zap.PmdTablePfn);
            return;
        }

        mm.PtlLock(cpu, pte.Pfn);
        bool empty = true;
        foreach (ulong e in mm.Phys.Table(pte))
        {
            if (e != 0)
            {
                empty = false;
                break;
            }
        }

        if (empty)
        {
            Volatile.Write(ref mm.Phys.Table(zap.PmdTablePfn)[zap.PmdIndex], 0);
        }

        mm.PtlUnlock(cpu, pte.Pfn);
        PteUnmap(mm, cpu, pte);
        mm.PmdUnlock(cpu, zap.PmdTablePfn);
        if (empty)
        {
            Interlocked.Increment(ref _slowPath);
            FreePte(mm, tlb, pte, zap.Start);
        }
        else
        {
            Interlocked.Increment(ref _slowPathAborted);
        }
    }

    /// <summary>
    /// <c>free_pte</c>: the table was unhooked from its pmd; account it and hand it to the gather,
    /// which frees it after the TLB flush and a grace period.
    /// </summary>
    private void FreePte(MmStruct mm, MmuGather tlb, TableRef pte, ulong addr)
    {
        long ptePfn = pte.Pfn;
        mm.DecTables(1);
        tlb.AddRange(addr & Geometry.PmdMask, (addr & Geometry.PmdMask) + Geometry.PmdSize);
        PteTableDtor(mm, ptePfn);
        tlb.RemoveTable(ptePfn);
    }

    /// <summary>Test-only mutation: <c>pte_offset_map_lock</c> without the pmd recheck.</summary>
    internal bool SkipPmdRecheckForTesting { get; set; }

    /// <summary>
    /// <c>reclaim_pt_is_enabled</c> and the skip rule: only MADV_DONTNEED, only a zap covering the
    /// whole 2 MiB, and only if it left no entry behind.
    /// </summary>
    private static bool CanReclaim(in ZapInfo zap) =>
        zap.Reason == ZapReason.DontNeed && zap.End - zap.Start >= Geometry.PmdSize && zap.Skipped == 0;
}
