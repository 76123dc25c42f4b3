using PtLab.Mm;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Reclaim;

/// <summary>
/// The <c>pte-ref-batched</c> design: the seed's <c>pte_ref</c> with the same freeing rules, but
/// MADV_DONTNEED never waits a grace period per table. It starts each table's switch to atomic mode
/// asynchronously (<c>percpu_ref_switch_to_atomic</c>: the switch's RCU callback confirms it), so
/// every switch one call starts shares one grace period, as RCU callbacks do; at the end of the
/// call it polls that grace period once and frees every table whose switch is confirmed and whose
/// count is zero. A table that is not empty then stays in atomic mode, where its count is exact,
/// so later zaps free it the moment it empties, with no further grace period.
/// </summary>
/// <remarks>
/// Nobody proposed this for pte_ref; the kernel's primitives for it exist (the asynchronous switch
/// with a confirm callback, polled grace periods). A fault that meets a table whose switch is still
/// pending takes its reference as in percpu mode, and the bias percpu_ref keeps on the atomic count
/// until the switch is confirmed keeps the table from looking empty meanwhile. The cost is that a
/// table that survived a DONTNEED stays atomic: its gets and puts are atomic operations, as in the
/// <c>atomic</c> design. A table whose switch is still pending at the end of a call (a reader held
/// the grace period) is freed by a later call, or by the first try-get that finds it at zero.
/// </remarks>
public sealed class PteRefBatchedReclaim : PteRefReclaim
{
    private readonly Lock _lock = new();
    private readonly Dictionary<MmStruct, HashSet<(long PmdTable, int PmdIndex)>> _pending = [];
    private long _directFrees;

    /// <inheritdoc/>
    public override string Name => "pte-ref-batched";

    /// <summary>Test-only mutation: free a table whose switch is still pending, trusting its count before the grace period.</summary>
    internal bool SkipSwitchConfirmForTesting { get; set; }

    /// <summary>Zaps that found their table already atomic and checked its count at once, with no grace period.</summary>
    public long DirectChecks => Volatile.Read(ref _directFrees);

    /// <summary>
    /// <c>pte_ref_free</c> for a table freed (by munmap or exit) while its switch is still in flight:
    /// the switch's RCU callback will still touch the ref, so its exit is queued behind it as an RCU
    /// callback of its own (callbacks run in the order they were queued).
    /// </summary>
    public override void PteTableDtor(MmStruct mm, long pteTable)
    {
        if (mm.Phys.Desc(pteTable).TableState is PercpuRef { SwitchPending: true } r)
        {
            mm.Rcu.CallRcu(r.Exit);
            return;
        }

        base.PteTableDtor(mm, pteTable);
    }

    /// <summary>
    /// The exact count, except while a switch is pending: percpu_ref then keeps a bias on the atomic
    /// count until the grace period confirms the switch, so nobody can tell the count.
    /// </summary>
    public override long? ExactCount(MmStruct mm, long pteTable) => RefOf(mm, pteTable).SwitchPending ? null : base.ExactCount(mm, pteTable);

    /// <summary>
    /// After a DONTNEED zap of a table: if its ref is already atomic (an earlier switch was
    /// confirmed), its count is exact, so drop our reference and free it if zero. Otherwise start the
    /// switch without waiting and leave the table to <see cref="AfterMadvise"/>.
    /// </summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb)
    {
        if (zap.Reason == ZapReason.DontNeed)
        {
            StartOrCheck(mm, cpu, zap.PmdTable, zap.PmdIndex);
        }
    }

    /// <summary>MADV_FREE: the same, so reclaim finds the table atomic and frees it once its lazy-free pages are gone.</summary>
    public override void AfterMadvFreePteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, bool markedLazyFree) =>
        StartOrCheck(mm, cpu, pmdTable, pmdIndex);

    /// <summary>
    /// The end of the call: poll the grace period every switch it started shares (once, without
    /// waiting), then free each table whose switch is confirmed and whose count is zero.
    /// </summary>
    public override void AfterMadvise(MmStruct mm, Cpu cpu)
    {
        List<(long PmdTable, int PmdIndex)> ready;
        lock (_lock)
        {
            if (!_pending.TryGetValue(mm, out var set) || set.Count == 0)
            {
                return;
            }

            ready = [.. set];
            set.Clear();
        }

        mm.Rcu.Poll();
        var later = new List<(long, int)>();
        foreach (var (pmdTable, pmdIndex) in ready)
        {
            var t = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
            if (t.IsNone)
            {
                continue; // gone, or at zero: the failed try-get freed it
            }

            var r = RefOf(mm, t.Pfn);
            if (r.SwitchPending && !SkipSwitchConfirmForTesting)
            {
                PteUnmap(mm, cpu, t);
                later.Add((pmdTable, pmdIndex)); // a reader held the grace period: a later call finishes it
                continue;
            }

            PutAndFreeIfZero(mm, cpu, pmdTable, pmdIndex, t);
        }

        if (later.Count > 0)
        {
            lock (_lock)
            {
                _pending[mm].UnionWith(later);
            }
        }
    }

    private void StartOrCheck(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        var t = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (t.IsNone)
        {
            return;
        }

        var r = RefOf(mm, t.Pfn);
        if (!r.IsPercpu && !r.SwitchPending)
        {
            Interlocked.Increment(ref _directFrees);
            PutAndFreeIfZero(mm, cpu, pmdTable, pmdIndex, t);
            return;
        }

        if (r.IsPercpu)
        {
            Guard(mm, t, "percpu_ref_switch_to_atomic", cpu.Id, static (x, c) =>
            {
                x.SwitchToAtomic(c);
                return true;
            });
            Interlocked.Increment(ref _switches);
        }

        PteUnmap(mm, cpu, t);
        lock (_lock)
        {
            if (!_pending.TryGetValue(mm, out var set))
            {
                _pending[mm] = set = [];
            }

            set.Add((pmdTable, pmdIndex));
        }
    }

    /// <summary>Drops the reference a try-get took, under RCU, and frees the table if that left its exact count at zero.</summary>
    private void PutAndFreeIfZero(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef t)
    {
        var r = RefOf(mm, t.Pfn);
        mm.Rcu.ReadLock(cpu.Id);
        if (!SkipTryGetForTesting)
        {
            r.Put(cpu.Id); // pairs with the try-get that mapped the table
        }

        // The mutation reads the atomic count less percpu_ref's bias before the grace period folded
        // the per-CPU counts in: a reference taken in percpu mode meanwhile is not in it yet.
        bool zero = r.IsZero || (SkipSwitchConfirmForTesting && r.SwitchPending && unchecked(r.SharedCount - PercpuRef.CountBias) <= 0);
        mm.Rcu.ReadUnlock(cpu.Id);
        if (zero)
        {
            FreeAndCount(mm, cpu, pmdTable, pmdIndex, t);
        }
    }
}
