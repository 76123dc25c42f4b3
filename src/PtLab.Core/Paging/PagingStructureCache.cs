using PtLab.Phys;

namespace PtLab.Paging;

/// <summary>
/// One CPU's paging-structure caches (Intel SDM 4.10.3): the PML4E, PDPTE and PDE caches, which
/// remember the upper-level entries of earlier walks so that a later walk can start at the table a
/// cached entry points to without reading the levels above it. A PDE-cache hit gives the PTE table
/// directly; the pmd entry is not read again. This is why a page table may be freed (and its
/// frame reused) only after every CPU that may cache an entry pointing at it was flushed.
/// </summary>
/// <remarks>
/// <para>
/// Each cache is direct-mapped by the region its entry covers (2 MiB, 1 GiB, 512 GiB) and holds
/// the table it points to with the table's generation, so a walk that follows a cached entry into
/// a frame that was freed (and perhaps reused) since is caught rather than reading someone
/// else's entries. Entries are created only from present, non-leaf entries, even when no
/// translation below them is present (the SDM allows that), and dropped by a page fault on an
/// address they cover (SDM 4.10.4.1).
/// </para>
/// <para>
/// Invalidation follows the contract the kernel codes to on every architecture: a
/// <c>flush_tlb_range</c> or a full flush drops the entries for its range (arm64's TLBI by VA
/// without the last-level hint; x86's INVLPG drops every paging-structure cache entry of the
/// PCID, which is more), while the <c>mmu_gather</c>'s flush is last-level only unless it freed
/// tables (<c>tlb-&gt;freed_tables</c>, arm64's <c>last_level = !freed_tables</c>).
/// </para>
/// The owning TLB's lock covers every access.
/// </remarks>
public sealed class PagingStructureCache
{
    /// <summary>Entries of the PDE cache (2 MiB regions, pointing at PTE tables).</summary>
    public const int PdeEntries = 32;

    /// <summary>Entries of the PDPTE cache (1 GiB regions, pointing at PMD tables).</summary>
    public const int PdpteEntries = 4;

    /// <summary>Entries of the PML4E cache (512 GiB regions, pointing at PUD tables).</summary>
    public const int Pml4eEntries = 2;

    // Index 0: PDE cache (level-2 entries), 1: PDPTE cache (level 3), 2: PML4E cache (level 4).
    private readonly ulong[][] _tags = [new ulong[PdeEntries], new ulong[PdpteEntries], new ulong[Pml4eEntries]];
    private readonly TableRef[][] _tables = [new TableRef[PdeEntries], new TableRef[PdpteEntries], new TableRef[Pml4eEntries]];
    private long _hits;

    /// <summary>Walks that started below the PGD thanks to a cached entry.</summary>
    public long Hits => _hits;

    private static int Shift(int level) => 12 + (9 * (level - 1));

    /// <summary>
    /// The lowest cached table on the way to <paramref name="va"/>: its level (1 for a PTE table
    /// from the PDE cache, 2 for a PMD table, 3 for a PUD table) and the table; false when no
    /// cached entry covers the address.
    /// </summary>
    internal bool Lookup(ulong va, out int tableLevel, out TableRef table)
    {
        for (int c = 0; c < 3; c++)
        {
            ulong region = va >> Shift(c + 2);
            var tags = _tags[c];
            int i = (int)(region & (ulong)(tags.Length - 1));
            if (tags[i] == region + 1)
            {
                _hits++;
                tableLevel = c + 1;
                table = _tables[c][i];
                return true;
            }
        }

        tableLevel = 0;
        table = TableRef.None;
        return false;
    }

    /// <summary>Caches the level-<paramref name="entryLevel"/> entry covering <paramref name="va"/>, which points at <paramref name="table"/>.</summary>
    internal void Insert(int entryLevel, ulong va, TableRef table)
    {
        int c = entryLevel - 2;
        ulong region = va >> Shift(entryLevel);
        var tags = _tags[c];
        int i = (int)(region & (ulong)(tags.Length - 1));
        tags[i] = region + 1;
        _tables[c][i] = table;
    }

    /// <summary>Drops every cached entry whose region overlaps [<paramref name="start"/>, <paramref name="end"/>).</summary>
    internal void Invalidate(ulong start, ulong end)
    {
        if (end <= start)
        {
            return;
        }

        for (int c = 0; c < 3; c++)
        {
            int shift = Shift(c + 2);
            ulong first = start >> shift, last = (end - 1) >> shift;
            var tags = _tags[c];
            for (int i = 0; i < tags.Length; i++)
            {
                ulong tag = tags[i];
                if (tag != 0 && tag - 1 >= first && tag - 1 <= last)
                {
                    tags[i] = 0;
                }
            }
        }
    }

    /// <summary>Drops everything (a CR3 write, <c>flush_tlb_mm</c>).</summary>
    internal void Clear()
    {
        foreach (var tags in _tags)
        {
            Array.Clear(tags);
        }
    }

    /// <summary>
    /// The cached entries, read without the lock (for checks made while every CPU is stopped):
    /// the level of the cached entry (2 = PDE, 3 = PDPTE, 4 = PML4E), the first address of the
    /// region it covers, and the table it points to.
    /// </summary>
    public IEnumerable<(int EntryLevel, ulong Va, TableRef Table)> CachedUnlocked()
    {
        for (int c = 0; c < 3; c++)
        {
            var tags = _tags[c];
            for (int i = 0; i < tags.Length; i++)
            {
                ulong tag = Volatile.Read(ref tags[i]);
                if (tag != 0)
                {
                    yield return (c + 2, (tag - 1) << Shift(c + 2), _tables[c][i]);
                }
            }
        }
    }
}
