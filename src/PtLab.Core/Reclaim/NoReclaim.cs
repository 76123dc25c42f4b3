using PtLab.Mm;
using PtLab.Paging;
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
    public PmdTableFreeing? FreesPmdTables { get; init; }

    /// <inheritdoc/>
    public virtual void PteTableCtor(MmStruct mm, Cpu cpu, long pteTable)
    {
    }

    /// <inheritdoc/>
    public virtual void PteTableDtor(MmStruct mm, long pteTable)
    {
    }

    /// <inheritdoc/>
    public virtual bool TracksEntries => false;

    /// <inheritdoc/>
    public virtual void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry)
    {
    }

    /// <inheritdoc/>
    public virtual void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry)
    {
    }

    /// <inheritdoc/>
    public virtual bool TrackPteSetHandOver(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry)
    {
        TrackPteSet(mm, cpu, pteTable, oldEntry, newEntry);
        return false;
    }

    /// <summary>
    /// True unless the design overrides one of the mapping hooks; found from the design's own type,
    /// so that a design which overrides a hook can never have it skipped.
    /// </summary>
    public bool PlainPteMap => _plainPteMap ??= MapsPlainly(GetType());

    private bool? _plainPteMap;

    private static bool MapsPlainly(Type design) =>
        new[] { nameof(PteOffsetMap), nameof(PteUnmap), nameof(PteOffsetMapLock), nameof(PteUnmapUnlock) }
            .All(hook => design.GetMethod(hook)!.DeclaringType == typeof(NoReclaim));

    /// <inheritdoc/>
    public virtual PercpuPteMap? PercpuPteMap => null;

    /// <inheritdoc/>
    public virtual TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex) => mm.PlainPteOffsetMap(pmdTable, pmdIndex);

    /// <inheritdoc/>
    public virtual void PteUnmap(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
    }

    /// <inheritdoc/>
    public virtual TableRef PteOffsetMapEntry(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig) =>
        KeepIfNotNone(mm, cpu, PteOffsetMap(mm, cpu, pmdTable, pmdIndex), index, out orig);

    /// <summary>
    /// The end of <see cref="PteOffsetMapEntry"/> once <paramref name="mapped"/> was mapped (or
    /// not): entry <paramref name="index"/> into <paramref name="orig"/>, and the visit ended when
    /// that entry is none.
    /// </summary>
    private protected TableRef KeepIfNotNone(MmStruct mm, Cpu cpu, TableRef mapped, int index, out ulong orig)
    {
        orig = 0;
        if (mapped.IsNone)
        {
            return mapped;
        }

        orig = mm.Phys.ReadCachedEntry(cpu.TableCache, 1, mapped, index);
        if (Entry.IsNone(orig))
        {
            PteUnmap(mm, cpu, mapped);
            orig = 0;
            return TableRef.None;
        }

        return mapped;
    }

    /// <inheritdoc/>
    public virtual TableRef PteOffsetMapLock(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        var pteTable = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (!pteTable.IsNone)
        {
            mm.PtlLock(cpu, pteTable.Pfn);
        }

        return pteTable;
    }

    /// <inheritdoc/>
    public virtual void PteUnmapUnlock(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        mm.PtlUnlock(cpu, pteTable.Pfn);
        PteUnmap(mm, cpu, pteTable);
    }

    /// <inheritdoc/>
    public virtual bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable) => false;

    /// <inheritdoc/>
    public virtual void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb)
    {
    }

    /// <inheritdoc/>
    public virtual void AfterMadvFreePteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, bool markedLazyFree)
    {
    }

    /// <inheritdoc/>
    public virtual void AfterLazyFreeUnmap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable, bool discarded)
    {
    }

    /// <inheritdoc/>
    public virtual void AfterMadvise(MmStruct mm, Cpu cpu)
    {
    }
}
