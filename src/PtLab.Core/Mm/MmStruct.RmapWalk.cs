using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>One place a page may be mapped: an address space and the address in it.</summary>
/// <param name="Mm">The address space.</param>
/// <param name="Address">The user address.</param>
/// <param name="Droppable">Whether the VMA the walk found it in is droppable (reclaim drops such a page even when written).</param>
internal readonly record struct RmapMapping(MmStruct Mm, ulong Address, bool Droppable);

// The reverse-map walk (mm/rmap.c rmap_walk_anon / rmap_walk_file) and the VMA compatibility rules
// that keep it right across merges.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>rmap_walk</c>: every place the page in frame <paramref name="pfn"/> may be mapped. An
    /// anonymous page is looked for in each VMA linked to its anon_vma (its own VMA, the parts it
    /// was split into, the copies fork made); a page-cache page in each VMA of its file's
    /// <c>i_mmap</c>. Each VMA covering the page's index gives one candidate address; the caller
    /// checks the entry there, under the PTE lock, before acting on it.
    /// </summary>
    internal static void RmapWalk(PhysMemory phys, long pfn, List<RmapMapping> into)
    {
        into.Clear();
        ref var d = ref phys.Desc(pfn);
        ulong index = d.RmapAddress;
        Vma[] vmas = phys.RmapOwner(pfn) switch
        {
            AnonVma av => av.Snapshot(),
            SimFile f => f.MappingSnapshot(),
            _ => [],
        };

        foreach (var vma in vmas)
        {
            if (vma.TryAddressOf(index, out ulong addr))
            {
                into.Add(new RmapMapping(vma.Mm, addr, (vma.Flags & VmFlags.Droppable) != 0));
            }
        }
    }

    /// <summary>
    /// <c>unlink_anon_vmas</c> + <c>unlink_file_vma</c> for VMAs leaving the address space: no rmap
    /// walk reaches them afterwards, and a shmem file nobody maps any more is released.
    /// </summary>
    private static void UnlinkRmap(List<Vma> vmas)
    {
        foreach (var v in vmas)
        {
            v.UnlinkRmap();
        }
    }

    /// <summary>
    /// The page-offset test of <c>can_vma_merge_after</c>: <paramref name="b"/> continues
    /// <paramref name="a"/> in the same file (or both are anonymous), so one VMA can map both and
    /// every page's index still finds its address.
    /// </summary>
    private static bool PgOffContinues(Vma a, Vma b) =>
        ReferenceEquals(a.File, b.File) && b.PgOff == a.PgOff + (a.Length >> PhysMemory.PageShift);

    /// <summary>
    /// <c>reusable_anon_vma</c>: a neighbour's anon_vma may be shared by a VMA that continues it,
    /// unless the neighbour got more than one through fork (<c>list_is_singular</c>).
    /// </summary>
    private static bool AnonVmaReusable(Vma lower, Vma upper, Vma old)
    {
        if (!PgOffContinues(lower, upper))
        {
            return false;
        }

        lock (old.AnonVmaChain)
        {
            return old.AnonVmaChain.Count == 1;
        }
    }
}
