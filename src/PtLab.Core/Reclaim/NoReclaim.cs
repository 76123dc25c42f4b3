using PtLab.Mm;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Reclaim;

/// <summary>
/// The <c>none</c> design: Linux before 6.14. Tables are freed only by <c>free_pgtables</c> (munmap
/// and exit), under <c>mmap_lock</c> held for write, so a visitor holding <c>mmap_lock</c> for read
/// can map a table without any reference.
/// </summary>
public class NoReclaim : IPageTableReclaim
{
    /// <inheritdoc/>
    public virtual string Name => "none";

    /// <inheritdoc/>
    public virtual void PteTableCtor(MmStruct mm, Cpu cpu, long ptePfn)
    {
    }

    /// <inheritdoc/>
    public virtual void PteTableDtor(MmStruct mm, long ptePfn)
    {
    }

    /// <inheritdoc/>
    public virtual void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pte, ulong oldEntry, ulong newEntry)
    {
    }

    /// <inheritdoc/>
    public virtual void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pte, ulong oldEntry)
    {
    }

    /// <inheritdoc/>
    public virtual TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        ulong pmd = Volatile.Read(ref mm.Phys.Table(pmdTablePfn)[pmdIndex]);
        if (Paging.Entry.IsNone(pmd) || Paging.Entry.IsHuge(pmd))
        {
            return TableRef.None;
        }

        return mm.Phys.Ref(Paging.Entry.Pfn(pmd));
    }

    /// <inheritdoc/>
    public virtual void PteUnmap(MmStruct mm, Cpu cpu, TableRef pte)
    {
    }

    /// <inheritdoc/>
    public virtual TableRef PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        var pte = PteOffsetMap(mm, cpu, pmdTablePfn, pmdIndex);
        if (!pte.IsNone)
        {
            mm.PtlLock(cpu, pte.Pfn);
        }

        return pte;
    }

    /// <inheritdoc/>
    public virtual void PteUnmapUnlock(MmStruct mm, Cpu cpu, TableRef pte)
    {
        mm.PtlUnlock(cpu, pte.Pfn);
        PteUnmap(mm, cpu, pte);
    }

    /// <inheritdoc/>
    public virtual bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pte) => false;

    /// <inheritdoc/>
    public virtual void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pte, bool unhooked, MmuGather tlb)
    {
    }

    /// <inheritdoc/>
    public virtual void AfterMadvFreePteTable(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, bool markedLazyFree)
    {
    }

    /// <inheritdoc/>
    public virtual void AfterLazyFreeUnmap(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex, TableRef pte, bool discarded)
    {
    }
}
