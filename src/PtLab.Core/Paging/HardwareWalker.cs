using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Paging;

/// <summary>
/// One CPU's hardware page walker: on a TLB miss it walks the four levels from the PGD the CPU
/// runs on (CR3), sets the accessed and dirty bits as hardware does, and fills the TLB.
/// </summary>
/// <param name="phys">Physical memory, where the tables are.</param>
/// <param name="rcu">The machine's RCU; the walk is one read section.</param>
/// <param name="tlb">The CPU's TLB.</param>
/// <param name="cpu">The CPU's number.</param>
internal sealed class HardwareWalker(PhysMemory phys, Rcu rcu, Tlb tlb, int cpu)
{
    private readonly ISchedulingPoint? _sched = rcu.Hooks?.Scheduler;

    /// <summary>
    /// The hardware page walk on a TLB miss, in an RCU read section (the model of the walker's
    /// IRQs-off window). Sets the accessed and dirty bits as hardware does, and fills the TLB.
    /// </summary>
    public bool Walk(long pgdPfn, ulong va, bool write, out ulong pte)
    {
        pte = 0;
        rcu.ReadLock(cpu);
        try
        {
            long table = pgdPfn;
            int index = Geometry.PteIndex(va);
            bool leafPmd = false;
            for (int level = 4; level > 1; level--)
            {
                ulong e = Volatile.Read(ref phys.Table(table)[Geometry.Index(va, level)]);
                if (!Entry.IsHwPresent(e) || (Entry.IsHuge(e) && level != 2))
                {
                    return false;
                }

                if (Entry.IsHuge(e))
                {
                    // A 2 MiB leaf: its A/D bits are set in the pmd, the TLB caches the 4 KiB piece.
                    index = Geometry.Index(va, 2);
                    leafPmd = true;
                    break;
                }

                table = Entry.Pfn(e);
            }

            _sched?.Reached(SchedulingPointKind.EntryLoad, table);
            ref ulong slot = ref phys.Table(table)[index];
            ulong v = Volatile.Read(ref slot);
            while (true)
            {
                if (!Entry.IsHwPresent(v) || (v & Entry.User) == 0 || (write && !Entry.IsWritable(v)) || (leafPmd && !Entry.IsHuge(v)))
                {
                    return false;
                }

                ulong want = v | Entry.Accessed | (write ? Entry.Dirty : 0);
                if (want == v)
                {
                    break;
                }

                ulong seen = Interlocked.CompareExchange(ref slot, want, v);
                if (seen == v)
                {
                    v = want;
                    break;
                }

                v = seen;
            }

            // A table gives back a group of entries that all went none; if another table took it
            // since this walk read it, the entry read belongs to that table: refault instead.
            if (!phys.SameEntry(table, index, ref slot))
            {
                return false;
            }

            if (leafPmd)
            {
                v = Entry.HugeSubPte(v, va);
            }

            tlb.Insert(va, v);
            pte = v;
            return true;
        }
        finally
        {
            rcu.ReadUnlock(cpu);
        }
    }
}
