using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/vma.c and mm/mmap.c: finding, splitting and merging VMAs, and placing new ones.
public sealed partial class MmStruct
{
    /// <summary><c>stack_guard_gap</c>: 256 pages kept free below a stack (<c>VM_GROWSDOWN</c>) VMA.</summary>
    public const ulong StackGuardGap = 256UL << 12;

    /// <summary><c>find_vma</c>: the first VMA ending above <paramref name="addr"/>, or null. Caller holds <c>mmap_lock</c>.</summary>
    public Vma? FindVma(ulong addr) => _vmas.Find(addr);

    /// <summary>
    /// <c>find_vma</c> for a fault on <paramref name="cpu"/>, through that CPU's one-entry cache
    /// of the VMA its last fault found (the kernel's old per-task <c>vmacache</c>): a fault in the
    /// same VMA as the last one on this CPU skips the tree. Caller holds <c>mmap_lock</c>.
    /// </summary>
    /// <remarks>
    /// The cache entry names its address space and the tree's change count when it was filled;
    /// every change of the tree's shape or of a VMA's range bumps the count under the tree's lock,
    /// and is made with <c>mmap_lock</c> held for write, so while the caller holds it for read an
    /// entry whose count still matches names a VMA that is in the tree with the range it had. An
    /// entry is used only when that VMA contains <paramref name="addr"/>, where it is the VMA the
    /// tree would return (VMAs do not overlap). The entry lives in the CPU, which one thread
    /// drives at a time, so it needs no atomics.
    /// </remarks>
    internal Vma? FindVma(Cpu cpu, ulong addr)
    {
        long seq = _vmas.Seq;
        var hit = cpu.VmaCacheVma;
        if (hit is not null && cpu.VmaCacheSeq == seq && ReferenceEquals(cpu.VmaCacheMm, this) && hit.Start <= addr && addr < hit.End)
        {
            return hit;
        }

        var vma = _vmas.Find(addr);
        if (vma is not null && vma.Start <= addr)
        {
            cpu.VmaCacheMm = this;
            cpu.VmaCacheVma = vma;
            cpu.VmaCacheSeq = seq;
        }

        return vma;
    }

    /// <summary><c>vma_lookup</c>: the VMA containing <paramref name="addr"/>, or null.</summary>
    internal Vma? VmaLookup(ulong addr) => _vmas.Find(addr) is { } v && v.Start <= addr ? v : null;

    /// <summary>VMAs in the address space (<c>mm-&gt;map_count</c>).</summary>
    public int MapCount => _vmas.Count;

    /// <summary>Checks the VMA store's links, balance and gap augmentation; throws on the first broken invariant (for tests).</summary>
    internal void ValidateVmas() => _vmas.Validate();

    /// <summary>Whether any VMA intersects [start, end).</summary>
    private bool AnyVmaIn(ulong start, ulong end)
    {
        var v = FindVma(start);
        return v is not null && v.Start < end;
    }

    /// <summary><c>vm_start_gap</c>: a stack VMA claims <see cref="StackGuardGap"/> below itself.</summary>
    internal static ulong VmStartGap(Vma v)
    {
        if ((v.Flags & VmFlags.GrowsDown) == 0)
        {
            return v.Start;
        }

        ulong gap = v.Start - StackGuardGap;
        return gap > v.Start ? 0 : gap;
    }

    /// <summary>
    /// <c>split_vma</c> at <paramref name="addr"/> when it falls strictly inside a VMA; the upper
    /// part becomes a new VMA. A huge pmd that would straddle the new boundary is split first
    /// (<c>vma_adjust_trans_huge</c>). EINVAL, with nothing changed, when the VMA refuses to be
    /// split (<see cref="MaySplit"/>).
    /// </summary>
    private Errno SplitAt(Cpu cpu, ulong addr)
    {
        var v = FindVma(addr);
        if (v is null || v.Start >= addr)
        {
            return Errno.None;
        }

        if (MaySplit(v, addr) is var refused and not Errno.None)
        {
            return refused;
        }

        SplitHugePmdIfStraddling(cpu, v, addr);
        var upper = v.SplitUpper(addr);
        _vmas.SetEnd(v, addr);
        _vmas.Insert(upper);
        return Errno.None;
    }

    /// <summary>
    /// <c>vm_ops-&gt;may_split</c> for a split of <paramref name="v"/> at <paramref name="addr"/>:
    /// a special mapping (the vDSO, the vvar pages) is never split (<c>special_mapping_split</c>
    /// refuses with EINVAL), so a call that would cut one fails instead; other VMAs may split.
    /// </summary>
    private static Errno MaySplit(Vma v, ulong addr) =>
        v.Special is not null && v.Start < addr && addr < v.End ? Errno.EINVAL : Errno.None;

    /// <summary>
    /// The splits at the edges of [start, end) that a change of that range needs, the start first
    /// (<c>vms_gather_munmap_vmas</c>, <c>vma_modify</c>): a refusal at the end leaves the split
    /// at the start in place, as in Linux.
    /// </summary>
    private Errno SplitEdges(Cpu cpu, ulong start, ulong end)
    {
        var error = SplitAt(cpu, start);
        return error != Errno.None ? error : SplitAt(cpu, end);
    }

    /// <summary>
    /// <c>is_mergeable_anon_vma</c>: two VMAs may merge unless both already carry different anon_vmas.
    /// </summary>
    private static bool AnonCompatible(AnonVma? a, AnonVma? b) => a is null || b is null || ReferenceEquals(a, b);

    /// <summary><c>VM_SPECIAL</c>: flags of a VMA that never merges (special mappings among them).</summary>
    internal const VmFlags VmSpecial = VmFlags.Io | VmFlags.DontExpand | VmFlags.PfnMap | VmFlags.MixedMap;

    /// <summary>
    /// <c>VM_STICKY</c>, which is also <c>VM_IGNORE_MERGE</c>: flags that never keep two VMAs
    /// apart and that a merge keeps when either side had them.
    /// </summary>
    internal const VmFlags VmSticky = VmFlags.MaybeGuard;

    private static bool CanMerge(Vma a, Vma b) =>
        (a.Flags & VmSpecial) == 0 && a.Special is null && b.Special is null && a.End == b.Start && ((a.Flags ^ b.Flags) & ~VmSticky) == 0 && ReferenceEquals(a.Ra, b.Ra) && AnonCompatible(a.AnonVma, b.AnonVma) && PgOffContinues(a, b);

    /// <summary>
    /// Merges <paramref name="cur"/> with its neighbours where Linux would (<c>vma_merge</c>):
    /// with both when all three are compatible, else with the previous one in preference, else the
    /// next. Returns the VMA that now covers <paramref name="cur"/>'s range.
    /// </summary>
    private Vma MergeAround(Vma cur)
    {
        var prev = cur.PrevVma;
        var next = cur.NextVma;
        bool left = prev is not null && CanMerge(prev, cur);
        bool right = next is not null && CanMerge(cur, next);
        if (left && right && !AnonCompatible(prev!.AnonVma, next!.AnonVma))
        {
            right = false;
        }

        if (right)
        {
            AbsorbNext(cur, next!);
        }

        if (left)
        {
            ulong end = cur.End;
            prev!.Flags |= cur.Flags & VmSticky;
            prev.AnonVmaSlot ??= cur.AnonVma;
            prev.AbsorbRmapLinks(cur);
            _vmas.Remove(cur);
            _vmas.SetEnd(prev, end);
            return prev;
        }

        return cur;
    }

    /// <summary>
    /// <c>vma_merge_extend</c>: <paramref name="cur"/> has just grown at its end, and only the VMA
    /// after it may merge into it (the one before is left alone, even where it could merge).
    /// </summary>
    private Vma MergeNext(Vma cur)
    {
        var next = cur.NextVma;
        if (next is not null && CanMerge(cur, next))
        {
            AbsorbNext(cur, next);
        }

        return cur;
    }

    /// <summary><paramref name="cur"/> takes over <paramref name="next"/>'s range, anon_vma (if it has none) and rmap links.</summary>
    private void AbsorbNext(Vma cur, Vma next)
    {
        ulong end = next.End;
        cur.Flags |= next.Flags & VmSticky;
        cur.AnonVmaSlot ??= next.AnonVma;
        cur.AbsorbRmapLinks(next);
        _vmas.Remove(next);
        _vmas.SetEnd(cur, end);
    }

    /// <summary>
    /// <c>vma_modify_flags</c>: gives [start, end) of <paramref name="vma"/> the flags
    /// <paramref name="flags"/>, splitting at the edges and merging with the neighbours. Returns
    /// the VMA that covers the range afterwards, or null (EINVAL) when a VMA refused the split.
    /// </summary>
    private Vma? VmaModifyFlags(Cpu cpu, Vma vma, ulong start, ulong end, VmFlags flags)
    {
        if (SplitEdges(cpu, start, end) != Errno.None)
        {
            return null;
        }

        var target = FindVma(start)!;
        target.Flags = flags;
        return MergeAround(target);
    }

    /// <summary>
    /// <c>find_mergeable_anon_vma</c>: the anon_vma of the next VMA, else of the previous one, when
    /// that neighbour touches this VMA and is compatible (<c>anon_vma_compatible</c>: flags equal but
    /// for the access bits and the sticky ones, so mprotect can merge the two later, and the page offset continuous).
    /// </summary>
    private static AnonVma? FindMergeableAnonVma(Vma vma)
    {
        const VmFlags ignored = VmFlags.Read | VmFlags.Write | VmFlags.Exec | VmSticky;
        static bool Compatible(Vma a, Vma b) =>
            a.End == b.Start && ((a.Flags ^ b.Flags) & ~ignored) == 0 && a.PgOff + (a.Length >> PhysMemory.PageShift) == b.PgOff;
        if (vma.NextVma is { } next && Compatible(vma, next) && next.AnonVma is { } anon && AnonVmaReusable(vma, next, next))
        {
            return anon;
        }

        if (vma.PrevVma is { } prev && Compatible(prev, vma) && AnonVmaReusable(prev, vma, prev))
        {
            return prev.AnonVma;
        }

        return null;
    }

    /// <summary>
    /// <c>unmapped_area_topdown</c>: the highest free range below <see cref="MmapBase"/> that fits
    /// <paramref name="length"/> at an address aligned to <paramref name="alignMask"/> + 1, with
    /// <paramref name="startGap"/> bytes free below it (a stack's guard gap), and that keeps clear
    /// of the guard gap below a stack VMA above it. Returns 0 when nothing fits.
    /// </summary>
    private ulong UnmappedAreaTopDown(ulong length, ulong alignMask, ulong startGap)
    {
        ulong search = length + alignMask + startGap;
        if (search < length)
        {
            return 0;
        }

        ulong low = Math.Max(Geometry.PageSize, MmapMinAddr);
        ulong high = MmapBase;
        while (_vmas.HighestGap(low, high, search, out ulong gapStart, out ulong gapEnd))
        {
            ulong gap = gapEnd - length;
            gap -= gap & alignMask;
            var next = FindVma(gapStart);
            if (next is not null && (next.Flags & VmFlags.GrowsDown) != 0 && VmStartGap(next) < gapEnd)
            {
                high = VmStartGap(next); // the stack's guard gap is not free: look lower
                continue;
            }

            return gap;
        }

        return 0;
    }
}
