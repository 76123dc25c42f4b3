using PtLab.Paging;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary><c>find_vma</c>: the first VMA ending above <paramref name="addr"/>, or null. Caller holds <c>mmap_lock</c>.</summary>
    public Vma? FindVma(ulong addr)
    {
        int i = FirstEndingAbove(addr);
        return i < _vmas.Count ? _vmas[i] : null;
    }

    /// <summary>Index of the first VMA with End &gt; addr.</summary>
    private int FirstEndingAbove(ulong addr)
    {
        int lo = 0, hi = _vmas.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_vmas[mid].End > addr)
            {
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }

        return lo;
    }

    /// <summary>Whether any VMA intersects [start, end).</summary>
    private bool AnyVmaIn(ulong start, ulong end)
    {
        var v = FindVma(start);
        return v is not null && v.Start < end;
    }

    /// <summary>Splits the VMA containing <paramref name="addr"/> strictly inside it (<c>split_vma</c>).</summary>
    private void SplitAt(ulong addr)
    {
        int i = FirstEndingAbove(addr);
        if (i >= _vmas.Count)
        {
            return;
        }

        var v = _vmas[i];
        if (v.Start >= addr)
        {
            return;
        }

        var upper = v.SplitUpper(addr);
        lock (_vmas)
        {
            v.End = addr;
            _vmas.Insert(i + 1, upper);
        }
    }

    /// <summary>
    /// <c>is_mergeable_anon_vma</c>: two VMAs may merge unless both already carry different anon_vmas.
    /// </summary>
    private static bool AnonCompatible(AnonVma? a, AnonVma? b) => a is null || b is null || ReferenceEquals(a, b);

    private static bool CanMerge(Vma a, Vma b) =>
        a.End == b.Start && a.Flags == b.Flags && AnonCompatible(a.AnonVma, b.AnonVma) && PgOffContinues(a, b);

    /// <summary>
    /// Merges the VMA at <paramref name="i"/> with its neighbours where Linux would (<c>vma_merge</c>):
    /// with both when all three are compatible, else with the previous one in preference, else the next.
    /// </summary>
    private void MergeAround(int i)
    {
        lock (_vmas)
        {
            var cur = _vmas[i];
            bool left = i > 0 && CanMerge(_vmas[i - 1], cur);
            bool right = i + 1 < _vmas.Count && CanMerge(cur, _vmas[i + 1]);
            if (left && right && !AnonCompatible(_vmas[i - 1].AnonVma, _vmas[i + 1].AnonVma))
            {
                right = false;
            }

            if (right)
            {
                var next = _vmas[i + 1];
                cur.End = next.End;
                cur.AnonVmaSlot ??= next.AnonVma;
                cur.AbsorbRmapLinks(next);
                _vmas.RemoveAt(i + 1);
            }

            if (left)
            {
                var prev = _vmas[i - 1];
                prev.End = cur.End;
                prev.AnonVmaSlot ??= cur.AnonVma;
                prev.AbsorbRmapLinks(cur);
                _vmas.RemoveAt(i);
            }
        }
    }

    /// <summary>
    /// <c>find_mergeable_anon_vma</c>: the anon_vma of the next VMA, else of the previous one, when
    /// that neighbour touches this VMA and is compatible (<c>anon_vma_compatible</c>: flags equal but
    /// for the access bits, so mprotect can merge the two later).
    /// </summary>
    private AnonVma? FindMergeableAnonVma(Vma vma)
    {
        const VmFlags access = VmFlags.Read | VmFlags.Write | VmFlags.Exec;
        static bool Compatible(Vma a, Vma b) => a.End == b.Start && ((a.Flags ^ b.Flags) & ~access) == 0;
        lock (_vmas)
        {
            int i = _vmas.IndexOf(vma);
            if (i >= 0 && i + 1 < _vmas.Count && Compatible(vma, _vmas[i + 1]) && _vmas[i + 1].AnonVma is { } next
                && AnonVmaReusable(vma, _vmas[i + 1], _vmas[i + 1]))
            {
                return next;
            }

            if (i > 0 && Compatible(_vmas[i - 1], vma) && AnonVmaReusable(_vmas[i - 1], vma, _vmas[i - 1]))
            {
                return _vmas[i - 1].AnonVma;
            }
        }

        return null;
    }

    /// <summary>
    /// <c>vm_unmapped_area</c>, top-down: the highest gap below <see cref="MmapBase"/> that fits
    /// <paramref name="length"/> plus <paramref name="pad"/>; placed at its top, aligned down to
    /// <paramref name="align"/>. Returns 0 when nothing fits.
    /// </summary>
    private ulong UnmappedAreaTopDown(ulong length, ulong pad, ulong align)
    {
        ulong need = length + pad;
        ulong lowLimit = Math.Max(Geometry.PageSize, MmapMinAddr);
        ulong gapEnd = MmapBase;
        int i = FirstEndingAbove(gapEnd - 1);
        // Walk gaps downward: between _vmas[i-1].End and min(_vmas[i].Start, gapEnd).
        for (int k = i; k >= 0; k--)
        {
            ulong top = k < _vmas.Count ? Math.Min(_vmas[k].Start, MmapBase) : MmapBase;
            ulong bottom = k > 0 ? _vmas[k - 1].End : lowLimit;
            if (bottom < lowLimit)
            {
                bottom = lowLimit;
            }

            if (top > bottom && top - bottom >= need)
            {
                ulong addr = (top - length) & ~(align - 1);
                if (addr >= bottom)
                {
                    return addr;
                }
            }
        }

        return 0;
    }
}
