using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Reclaim;

/// <summary>
/// The walker protocol of upstream since Linux 6.5, shared by the designs that keep no reference on
/// a table: <c>pte_offset_map</c> holds an RCU read section for the whole visit, so a table
/// unhooked meanwhile is freed only after the visitor left, and <c>pte_offset_map_lock</c>
/// rechecks the pmd once it holds the PTE lock, so nobody writes into a table already unhooked.
/// </summary>
public abstract class UpstreamWalkerReclaim : NoReclaim
{
    /// <summary>
    /// <c>__pte_offset_map</c>: enters an RCU read section that lasts until <see cref="PteUnmap"/>,
    /// so the table cannot be freed under the visitor.
    /// </summary>
    public override TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        mm.Rcu.ReadLock(cpu.Id);
        // Through the CPU's table-entry cache, as the plain pte_offset_map reads it (see
        // TableStore.LayoutEpoch): the lockless read returns a value the pmd entry held, and the
        // reference's generation comes from the cache only while no table was freed since.
        ulong pmd = mm.Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex);
        if (Entry.IsNone(pmd) || Entry.IsHuge(pmd))
        {
            mm.Rcu.ReadUnlock(cpu.Id);
            return TableRef.None;
        }

        return mm.Phys.CachedPteTableRef(cpu.TableCache, Entry.Pfn(pmd));
    }

    /// <summary><c>pte_unmap</c>: leaves the RCU read section.</summary>
    public override void PteUnmap(MmStruct mm, Cpu cpu, TableRef pteTable) => mm.Rcu.ReadUnlock(cpu.Id);

    /// <summary>
    /// <c>__pte_offset_map_lock</c>: map, take the PTE lock, and recheck that the pmd still points
    /// at the same table; if the table was unhooked meanwhile, start again (and find none).
    /// </summary>
    public override TableRef PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        while (true)
        {
            var pteTable = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
            if (pteTable.IsNone)
            {
                return pteTable;
            }

            mm.PtlLock(cpu, pteTable.Pfn);
            ulong now = mm.Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex);
            if (SkipPmdRecheckForTesting || (!Entry.IsNone(now) && !Entry.IsHuge(now) && Entry.Pfn(now) == pteTable.Pfn))
            {
                return pteTable;
            }

            mm.PtlUnlock(cpu, pteTable.Pfn);
            PteUnmap(mm, cpu, pteTable);
        }
    }

    /// <summary>Test-only mutation: <c>pte_offset_map_lock</c> without the pmd recheck.</summary>
    internal bool SkipPmdRecheckForTesting { get; set; }
}
