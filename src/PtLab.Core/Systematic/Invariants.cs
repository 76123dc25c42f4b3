using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Systematic;

/// <summary>
/// The invariants a quiescent machine must satisfy, whatever the interleaving that led there. Each
/// check returns the first broken invariant as a sentence, or null.
/// </summary>
public static class Invariants
{
    /// <summary>
    /// Runs every check that holds while the address space is alive, and the same checks on every
    /// other address space of the machine (a forked child); then exits them all and checks for leaks.
    /// </summary>
    public static string? CheckAtQuiescence(Machine machine, MmStruct mm, ulong start, ulong end, bool exit = true) =>
        TableSink(machine) ?? TableStorage(mm) ?? Accounting(mm) ?? Refcounts(mm) ?? PresentEntriesMapLiveFrames(mm) ?? TlbsMatchTables(machine, mm, start, end)
        ?? PagingStructureCachesMatchTables(machine, mm)
        ?? Others(machine, mm, other => Accounting(other) ?? Refcounts(other) ?? PresentEntriesMapLiveFrames(other) ?? TlbsMatchTables(machine, other, start, end)
            ?? PagingStructureCachesMatchTables(machine, other))
        ?? (exit ? NoLeakAfterExit(machine, mm) : null);

    private static string? Others(Machine machine, MmStruct mm, Func<MmStruct, string?> check)
    {
        foreach (var other in machine.AddressSpaces)
        {
            if (!ReferenceEquals(other, mm) && check(other) is { } v)
            {
                return $"another address space: {v}";
            }
        }

        return null;
    }

    /// <summary>No store reached an absent table entry around the set primitives: the zero sink absent entries read from still reads zero.</summary>
    public static string? TableSink(Machine machine) =>
        machine.Phys.TableSinkIsZero ? null : "an entry store bypassed the set primitives: the table store's zero sink was written";

    /// <summary>
    /// The PTE tables' entries are stored as the table store keeps them: no group of storage held
    /// by two tables, each group's count exact (a store through a stale table-entry cache line
    /// breaks it even where the figures still add up).
    /// </summary>
    public static string? TableStorage(MmStruct mm) => mm.Phys.CheckTableStorage(PteTables(mm));

    /// <summary>VmPTE equals the tables present in the page tables.</summary>
    public static string? Accounting(MmStruct mm)
    {
        var present = mm.CountTablesPresent();
        var status = mm.Status();
        if (present != status.Tables)
        {
            return $"VmPTE accounting: {status.Tables} counted, {present} present";
        }

        return status.VmPteKb != (present.Pte + present.Pmd + present.Pud) * 4
            ? $"VmPTE {status.VmPteKb} kB but {present} tables present"
            : null;
    }

    /// <summary>
    /// Counting designs: every table's count equals its non-none entries (no visitor is left), and a
    /// zero-page count equals its zero-page entries.
    /// </summary>
    public static string? Refcounts(MmStruct mm)
    {
        if (mm.Design is not IRefcountedTables rc)
        {
            return null;
        }

        foreach (long pteTable in PteTables(mm))
        {
            long entries = 0, zeroPage = 0;
            foreach (ulong e in mm.Phys.Table(pteTable))
            {
                if (e != 0)
                {
                    entries++;
                    if (Entry.IsPresent(e) && Entry.IsSpecial(e))
                    {
                        zeroPage++;
                    }
                }
            }

            if (rc.ExactCount(mm, pteTable) is { } count && count != entries)
            {
                return $"refcount of PTE table {pteTable:x} is {count}, but it holds {entries} entries";
            }

            if (mm.Design is IZeroPageCounted zc && zc.ZeroPageCount(mm, pteTable) is var zeros && zeros != zeroPage)
            {
                return $"zero-page count of PTE table {pteTable:x} is {zeros}, but it holds {zeroPage} zero-page entries";
            }
        }

        return null;
    }

    /// <summary>No present leaf entry points at a free frame, and no pmd at a freed table.</summary>
    public static string? PresentEntriesMapLiveFrames(MmStruct mm)
    {
        foreach (long pteTable in PteTables(mm))
        {
            if ((mm.Phys.Desc(pteTable).Flags & (int)PageFlags.Free) != 0)
            {
                return $"a pmd entry points at PTE table {pteTable:x}, which is free";
            }

            var table = mm.Phys.Table(pteTable);
            for (int i = 0; i < table.Length; i++)
            {
                ulong e = table[i];
                if (Entry.IsPresent(e) && !Entry.IsSpecial(e) && (mm.Phys.Desc(Entry.Pfn(e)).Flags & (int)PageFlags.Free) != 0)
                {
                    return $"entry {i} of PTE table {pteTable:x} maps frame {Entry.Pfn(e):x}, which is free";
                }
            }
        }

        return null;
    }

    /// <summary>Every TLB entry in [start, end) still matches the page tables: none survived a flush of its range.</summary>
    public static string? TlbsMatchTables(Machine machine, MmStruct mm, ulong start, ulong end)
    {
        foreach (var cpu in machine.Cpus)
        {
            if (!ReferenceEquals(cpu.Mm, mm))
            {
                continue;
            }

            for (ulong va = start; va < end; va += Geometry.PageSize)
            {
                if (!cpu.Tlb.Holds(va) || !cpu.Tlb.Lookup(va, write: false, out ulong cached))
                {
                    continue;
                }

                ulong pte = mm.PeekPte(va);
                if (!Entry.IsPresent(pte) || Entry.Pfn(pte) != Entry.Pfn(cached))
                {
                    return $"CPU {cpu.Id}'s TLB maps 0x{va:x} to frame {Entry.Pfn(cached):x}, the tables say {pte:x}: it survived a flush";
                }
            }
        }

        return null;
    }

    /// <summary>
    /// Every paging-structure cache entry of a CPU running <paramref name="mm"/> points where the
    /// tables do: the upper-level entry it caches is still present and still points at the same
    /// live table. A cached entry that outlived its table (or its entry) survived the flush the
    /// kernel owes before freeing or moving a table; a speculative walk may use it at any time.
    /// </summary>
    public static string? PagingStructureCachesMatchTables(Machine machine, MmStruct mm)
    {
        foreach (var cpu in machine.Cpus)
        {
            if (!ReferenceEquals(cpu.Mm, mm) || cpu.Tlb.Psc is not { } psc)
            {
                continue;
            }

            foreach (var (level, va, table) in psc.CachedUnlocked())
            {
                ulong e = UpperEntry(mm, va, level);
                if (!mm.Phys.IsLive(table) || !Entry.IsPresent(e) || Entry.IsHuge(e) || Entry.Pfn(e) != table.Pfn)
                {
                    return $"CPU {cpu.Id}'s paging-structure cache holds the level-{level} entry for 0x{va:x} pointing at {table}" +
                        $"{(mm.Phys.IsLive(table) ? "" : " (freed)")}, the tables say {e:x}: it survived the table's free without a flush";
                }
            }
        }

        return null;
    }

    /// <summary>
    /// Holds at every step: no CPU's paging-structure caches point at a table that was freed
    /// (a table may only be freed once every cache that could reach it was flushed).
    /// </summary>
    public static string? NoCachedEntryPointsAtAFreeTable(Machine machine)
    {
        foreach (var cpu in machine.Cpus)
        {
            if (cpu.Tlb.Psc is not { } psc)
            {
                continue;
            }

            foreach (var (level, va, table) in psc.CachedUnlocked())
            {
                if (!machine.Phys.IsLive(table))
                {
                    return $"CPU {cpu.Id}'s paging-structure cache still holds the level-{level} entry for 0x{va:x} pointing at {table}, which was freed";
                }
            }
        }

        return null;
    }

    // The entry at level 4 (PGD), 3 (PUD) or 2 (PMD) on the way to va, or 0 where an entry above it is none or a leaf.
    private static ulong UpperEntry(MmStruct mm, ulong va, int level)
    {
        long table = mm.PgdPfn;
        for (int l = 4; ; l--)
        {
            ulong e = mm.Phys.Table(table)[Geometry.Index(va, l)];
            if (l == level)
            {
                return e;
            }

            if (!Entry.IsPresent(e) || Entry.IsHuge(e))
            {
                return 0;
            }

            table = Entry.Pfn(e);
        }
    }

    /// <summary>
    /// Holds at every step: no CPU's TLB caches a translation to a free frame (a page may only be
    /// freed once every TLB that could reach it was flushed).
    /// </summary>
    public static string? NoTlbEntryMapsAFreeFrame(Machine machine)
    {
        foreach (var cpu in machine.Cpus)
        {
            foreach (var (va, pfn) in cpu.Tlb.CachedFramesUnlocked())
            {
                if ((machine.Phys.Desc(pfn).Flags & (int)PageFlags.Free) != 0)
                {
                    return $"CPU {cpu.Id}'s TLB still maps 0x{va:x} to frame {pfn:x}, which is free";
                }
            }
        }

        return null;
    }

    /// <summary>The checks that hold at every scheduling point, not only at quiescence.</summary>
    public static string? CheckAtEveryStep(Machine machine, MmStruct mm) =>
        NoTlbEntryMapsAFreeFrame(machine) ?? NoCachedEntryPointsAtAFreeTable(machine) ?? PresentEntriesMapLiveFrames(mm) ?? Others(machine, mm, PresentEntriesMapLiveFrames);

    /// <summary>Exit of every address space frees every frame but the machine's own (the zero page): nothing leaked.</summary>
    public static string? NoLeakAfterExit(Machine machine, MmStruct mm)
    {
        long before = machine.Phys.UsedFrames;
        foreach (var other in machine.AddressSpaces)
        {
            if (!ReferenceEquals(other, mm))
            {
                other.Exit(machine.Cpus[0]);
            }
        }

        mm.Exit(machine.Cpus[0]);
        machine.Rcu.Barrier();
        long used = machine.Phys.UsedFrames, reserved = machine.Phys.ReservedFrames;
        if (used > reserved)
        {
            return $"{used - reserved} {(used - reserved == 1 ? "frame" : "frames")} still in use after exit and rcu_barrier (were {before})";
        }

        var (groups, slots) = machine.Phys.TableStorage;
        return groups != 0 || slots != 0 ? $"table storage leaked after exit: {groups} entry groups and {slots} slots still in use" : null;
    }

    internal static List<long> PteTables(MmStruct mm)
    {
        var result = new List<long>();
        var phys = mm.Phys;
        foreach (ulong g in phys.Table(mm.PgdPfn).ToArray())
        {
            if (g == 0)
            {
                continue;
            }

            foreach (ulong u in phys.Table(Entry.Pfn(g)).ToArray())
            {
                if (u == 0 || Entry.IsHuge(u))
                {
                    continue;
                }

                foreach (ulong m in phys.Table(Entry.Pfn(u)).ToArray())
                {
                    if (m != 0 && !Entry.IsHuge(m))
                    {
                        result.Add(Entry.Pfn(m));
                    }
                }
            }
        }

        return result;
    }
}
