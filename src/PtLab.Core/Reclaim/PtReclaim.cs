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
public sealed class PtReclaim : UpstreamWalkerReclaim
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
    /// The fast path at the end of <c>zap_pte_range</c>: if this zap may reclaim the table, try the
    /// pmd lock without waiting (the PTE lock is held, and the usual order is pmd lock first) and
    /// clear the pmd (<c>try_get_and_clear_pmd</c>).
    /// </summary>
    public override bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable)
    {
        mm.AssertPtlHeld(cpu, pteTable.Pfn);
        if (!CanReclaim(zap))
        {
            return false;
        }

        if (!mm.PmdTryLock(cpu, zap.PmdTable))
        {
            return false;
        }

        mm.PmdClear(zap.PmdTable, zap.PmdIndex);
        mm.PmdUnlock(cpu, zap.PmdTable);
        Interlocked.Increment(ref _fastPath);
        return true;
    }

    /// <summary>
    /// After <c>zap_pte_range</c> unlocked: free the unhooked table through the gather
    /// (<c>free_pte</c>), or take the slow path, which rechecks all 512 entries under both locks
    /// (<c>try_to_free_pte</c>).
    /// </summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb)
    {
        if (!CanReclaim(zap))
        {
            return;
        }

        if (unhooked)
        {
            FreePte(mm, tlb, pteTable, zap.Start);
            return;
        }

        mm.PmdLock(cpu, zap.PmdTable);
        pteTable = PteOffsetMap(mm, cpu, zap.PmdTable, zap.PmdIndex);
        if (pteTable.IsNone)
        {
            mm.PmdUnlock(cpu, zap.PmdTable);
            return;
        }

        mm.PtlLock(cpu, pteTable.Pfn);
        bool empty = mm.Phys.Table(pteTable).FirstNotNone() < 0;
        if (empty)
        {
            mm.PmdClear(zap.PmdTable, zap.PmdIndex);
        }

        mm.PtlUnlock(cpu, pteTable.Pfn);
        PteUnmap(mm, cpu, pteTable);
        mm.PmdUnlock(cpu, zap.PmdTable);
        if (empty)
        {
            Interlocked.Increment(ref _slowPath);
            FreePte(mm, tlb, pteTable, zap.Start);
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
    private static void FreePte(MmStruct mm, MmuGather tlb, TableRef pteTable, ulong addr) => mm.PteFreeTlb(tlb, pteTable.Pfn, addr);

    /// <summary>
    /// <c>reclaim_pt_is_enabled</c> and the skip rule: only MADV_DONTNEED, only a zap covering the
    /// whole 2 MiB, and only when it left no entry in place (a guard marker stays through
    /// DONTNEED, so a table holding one is kept).
    /// </summary>
    private static bool CanReclaim(in ZapInfo zap) =>
        zap.Reason == ZapReason.DontNeed && zap.End - zap.Start >= Geometry.PmdSize && !zap.AnySkipped;
}
