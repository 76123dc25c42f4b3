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
/// <param name="tables">The CPU's memo of where it found table entries.</param>
internal sealed class HardwareWalker(PhysMemory phys, Rcu rcu, Tlb tlb, int cpu, TableEntryCache tables)
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
            int start = 4;
            var psc = tlb.Psc;
            if (psc is not null && psc.Lookup(va, out int cachedLevel, out var cached))
            {
                // The walk starts at the cached table without reading the entries above it.
                CheckCachedTable(va, cachedLevel, cached);
                table = cached.Pfn;
                start = cachedLevel;
            }

            for (int level = start; level > 1; level--)
            {
                ulong e = phys.ReadCachedEntry(tables, level, table, Geometry.Index(va, level));
                if (!Entry.IsHwPresent(e) || (Entry.IsHuge(e) && level != 2))
                {
                    psc?.Invalidate(va, va + 1); // a page fault drops the cached entries for its address
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
                psc?.Insert(level, va, phys.Ref(table));
            }

            _sched?.Reached(SchedulingPointKind.EntryLoad, table);
            int leafLevel = leafPmd ? 2 : 1;
            ref ulong slot = ref phys.CachedEntry(tables, leafLevel, table, index);
            ulong v = Volatile.Read(ref slot);
            while (true)
            {
                if (!Entry.IsHwPresent(v) || (v & Entry.User) == 0 || (write && !Entry.IsWritable(v)) || (leafPmd && !Entry.IsHuge(v)))
                {
                    psc?.Invalidate(va, va + 1);
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
            // since this walk read it, the entry read belongs to that table: refault instead. The
            // check reads the layout epoch after the entry (seqlock style, see
            // TableStore.LayoutEpoch): while it still reads the line's stamp, the group was not
            // given back since the line found it.
            if (!phys.SameCachedEntry(tables, leafLevel, table, index, ref slot))
            {
                psc?.Invalidate(va, va + 1);
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

    /// <summary>
    /// A walk may follow a cached entry only into the table it was cached for: a frame that was
    /// freed (or freed and reused) since means a table was freed while this CPU's
    /// paging-structure caches still pointed at it, the flush the kernel owes before the free
    /// was missing. Hardware would read the frame's new contents as entries (and set accessed
    /// bits in them); the model reports the use-after-free.
    /// </summary>
    private void CheckCachedTable(ulong va, int tableLevel, TableRef cached)
    {
        if (phys.IsLive(cached))
        {
            return;
        }

        try
        {
            phys.Table(cached);
        }
        catch (UseAfterFreeException e)
        {
            string entry = tableLevel switch { 1 => "PDE", 2 => "PDPTE", _ => "PML4E" };
            throw new UseAfterFreeException(
                $"CPU {cpu}'s walk of 0x{va:x} followed its paging-structure cache's {entry} into {cached}, which was freed without a flush of that cache: " +
                e.Message.Split('\n')[0],
                e.AccessStack,
                e.FreeStack);
        }
    }
}
