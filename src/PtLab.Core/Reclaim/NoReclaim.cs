using PtLab.Mm;
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
    public virtual void PteTableCtor(MmStruct mm, long ptePfn)
    {
    }

    /// <inheritdoc/>
    public virtual void PteTableDtor(MmStruct mm, long ptePfn)
    {
    }

    /// <inheritdoc/>
    public virtual void TrackPteSet(MmStruct mm, long ptePfn, ulong oldEntry, ulong newEntry)
    {
    }

    /// <inheritdoc/>
    public virtual void TrackPteClear(MmStruct mm, long ptePfn, ulong oldEntry)
    {
    }

    /// <inheritdoc/>
    public virtual long PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        ulong pmd = Volatile.Read(ref mm.Phys.Table(pmdTablePfn)[pmdIndex]);
        if (Paging.Entry.IsNone(pmd) || Paging.Entry.IsHuge(pmd))
        {
            return -1;
        }

        return Paging.Entry.Pfn(pmd);
    }

    /// <inheritdoc/>
    public virtual void PteUnmap(MmStruct mm, Cpu cpu, long ptePfn)
    {
    }

    /// <inheritdoc/>
    public virtual long PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTablePfn, int pmdIndex)
    {
        long pte = PteOffsetMap(mm, cpu, pmdTablePfn, pmdIndex);
        if (pte >= 0)
        {
            RawSpinLock.Lock(ref mm.Phys.Desc(pte).PtLock);
        }

        return pte;
    }

    /// <inheritdoc/>
    public virtual void PteUnmapUnlock(MmStruct mm, Cpu cpu, long ptePfn)
    {
        RawSpinLock.Unlock(ref mm.Phys.Desc(ptePfn).PtLock);
        PteUnmap(mm, cpu, ptePfn);
    }

    /// <inheritdoc/>
    public virtual bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, long ptePfn) => false;

    /// <inheritdoc/>
    public virtual void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, long ptePfn, bool unhooked, MmuGather tlb)
    {
    }
}
