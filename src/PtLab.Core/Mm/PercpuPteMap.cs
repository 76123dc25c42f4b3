using System.Runtime.CompilerServices;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

/// <summary>
/// <c>pte_tryget_map</c>'s percpu fast path, for a design whose PTE tables each carry a
/// <see cref="PercpuRef"/> (the table's design state) held by every non-none entry and every
/// visitor, the same reference for both (see <see cref="IPageTableReclaim.PercpuPteMap"/>). In the
/// kernel this path is plain code in <c>mm/</c>, called directly; the address space runs it itself
/// before it calls the design's mapping hooks, so a fault that finds the ref in percpu mode makes no
/// indirect call. Without hooks and in percpu mode a map is the read section's mark, the pmd load,
/// the table's ref from this CPU's cache, one add on this CPU's counter and the unmark. Anything
/// else (hooks on, a mutation, atomic mode) is left to the design, and the fast path then changed
/// nothing: it only read, inside a read section of its own.
/// </summary>
public sealed class PercpuPteMap
{
    /// <summary>Off when visitors map tables without a reference (a test-only mutation): the design's path runs.</summary>
    internal bool Off { get; set; }

    /// <summary>
    /// <c>pte_tryget_map</c>: true when done here, with <paramref name="pteTable"/> mapped and
    /// referenced, or <see cref="TableRef.None"/> when the pmd entry is none or huge; false, having
    /// changed nothing, when the design's path must run.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryMap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, out TableRef pteTable) =>
        TryMapOrRead(mm, cpu, pmdTable, pmdIndex, index: -1, out _, out pteTable);

    /// <summary>
    /// <c>handle_pte_fault</c>'s first look (<see cref="IPageTableReclaim.PteOffsetMapEntry"/>)
    /// with the ref in percpu mode: the entry is read first, inside the read section, and the
    /// reference is taken only when it is not none (the table then stays mapped, as in the seed).
    /// True when done here; false, having changed nothing, when the design's path must run.
    /// </summary>
    /// <remarks>
    /// A none entry thus costs no reference at all, and nobody can tell: in percpu mode the seed's
    /// try-get and put are two adds on this CPU's stripe, both inside this one read section (the
    /// table cannot be freed before it ends, so the reads need no reference), and the stripes are
    /// only summed by a switch's RCU callback after a grace period that waits for the section
    /// (<see cref="PercpuRef.IsPercpuBare"/>); the try-get cannot fail in percpu mode, so no
    /// <c>free_user_pte</c> is skipped. Put another way, every run of this path is one the seed can
    /// make: the one whose put follows its try-get within the same read section, so that a
    /// concurrent switch folds both or neither. <paramref name="orig"/>, read under RCU, is a
    /// snapshot, which the caller checks again under the PTE lock as it checks the seed's.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryMapEntry(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig, out TableRef pteTable) =>
        TryMapOrRead(mm, cpu, pmdTable, pmdIndex, index, out orig, out pteTable);

    // Both maps: with index -1 a plain try-get; otherwise the entry read first, and the table kept
    // mapped only when it is not none.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryMapOrRead(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, int index, out ulong orig, out TableRef pteTable)
    {
        orig = 0;
        var rcu = mm.Rcu;
        if (!rcu.IsBare || Off)
        {
            pteTable = TableRef.None;
            return false;
        }

        long saved = rcu.ReadLockSaved(cpu.Id);
        pteTable = MappedUnderRcu(mm, cpu, pmdTable, pmdIndex, out var r);
        bool done = pteTable.IsNone;
        if (!done && index < 0)
        {
            done = r.TryGetIfPercpuInRcu(cpu.Id);
        }
        else if (!done && r.IsPercpuBare)
        {
            orig = mm.Phys.ReadCachedEntry(cpu.TableCache, 1, pteTable, index);
            done = Entry.IsNone(orig) || r.TryGetIfPercpuInRcu(cpu.Id);
        }

        rcu.ReadUnlockSaved(cpu.Id, saved);
        if (!done || (index >= 0 && Entry.IsNone(orig)))
        {
            orig = 0;
            pteTable = TableRef.None;
        }

        return done;
    }

    /// <summary>
    /// Inside a bare RCU read section: the PTE table the pmd entry names and its ref, or
    /// <see cref="TableRef.None"/> when the entry is none or huge.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TableRef MappedUnderRcu(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, out PercpuRef r)
    {
        var phys = mm.Phys;
        // The pmd entry through this CPU's table-entry cache, as the plain pte_offset_map
        // reads it: a lockless seqlock read (TableStore.LayoutEpoch) that returns a value the
        // pmd table's entry held, and checks on a miss, as Table() does, that the frame is a
        // table; on a hit the epoch proves the pmd table was not freed since the line was filled.
        ulong pmd = phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex);
        if (Entry.IsNone(pmd) || Entry.IsHuge(pmd))
        {
            r = null!;
            return TableRef.None;
        }

        // Under RCU the table the pmd entry names cannot be freed, so its descriptor and ref
        // are still valid. This CPU's cache holds the reference and ref of the table it last
        // mapped, stamped with the layout epoch read before they were: every freed table
        // advances that epoch (PhysMemory.FreeTable, TableStore.Release) before its frame can
        // be a table again, so while the epoch still reads the stamp, the frame is the same
        // table of the same generation with the same ref, and neither its descriptor nor its
        // state need be looked up (the TableEntryCache protocol, see TableStore.LayoutEpoch).
        long pfn = Entry.Pfn(pmd);
        long epoch = phys.LayoutEpoch;
        if (cpu.MappedTable.Pfn == pfn && cpu.MappedEpoch == epoch)
        {
            r = cpu.MappedRef!;
            return cpu.MappedTable;
        }

        r = MappedRefMiss(mm, cpu, pfn, epoch, out var pteTable);
        return pteTable;
    }

    /// <summary>The table's <c>pte_ref</c> from its design state.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PercpuRef RefOf(object? state, long pteTable) => state as PercpuRef ?? NoRef(pteTable);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static PercpuRef NoRef(long pteTable) => throw new PercpuRefException($"PTE table {pteTable:x} has no pte_ref");

    // The first map of a table on this CPU since the epoch moved: its reference and ref from its
    // descriptor, read after the epoch (epoch first, as a table-entry cache fill), kept in the
    // CPU's cache stamped with that epoch.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static PercpuRef MappedRefMiss(MmStruct mm, Cpu cpu, long pfn, long epoch, out TableRef pteTable)
    {
        pteTable = mm.Phys.Ref(pfn, out object? state);
        var r = RefOf(state, pfn);
        cpu.MappedTable = pteTable;
        cpu.MappedRef = r;
        cpu.MappedEpoch = epoch;
        return r;
    }
}
