using PtLab.Mm;

namespace PtLab.Kernel;

/// <summary>One range the kernel target mapped, with its current protection.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">First address past the end.</param>
/// <param name="Prot">Protection as last set by mmap or mprotect.</param>
public readonly record struct OwnedRange(ulong Start, ulong End, Prot Prot);

/// <summary>
/// The target's shadow of its own mappings: disjoint page-aligned ranges in address order, split
/// and merged as mmap, munmap and mprotect change them. Not thread-safe; the target locks around it.
/// </summary>
internal sealed class MappingSet
{
    private readonly List<OwnedRange> _ranges = [];

    public IReadOnlyList<OwnedRange> Ranges => _ranges;

    /// <summary>Records [start, end) as mapped with <paramref name="prot"/>, replacing what was there.</summary>
    public void Add(ulong start, ulong end, Prot prot)
    {
        Remove(start, end);
        int i = FirstEndingAbove(start);
        _ranges.Insert(i, new OwnedRange(start, end, prot));
        MergeAround(i);
    }

    /// <summary>Forgets [start, end), splitting ranges at its edges.</summary>
    public void Remove(ulong start, ulong end)
    {
        for (int i = FirstEndingAbove(start); i < _ranges.Count && _ranges[i].Start < end;)
        {
            var r = _ranges[i];
            _ranges.RemoveAt(i);
            if (r.End > end)
            {
                _ranges.Insert(i, r with { Start = end });
            }

            if (r.Start < start)
            {
                _ranges.Insert(i, r with { End = start });
                i++;
            }
        }
    }

    /// <summary>Sets the protection of the owned parts of [start, end).</summary>
    public void SetProt(ulong start, ulong end, Prot prot) => ChangeProt(start, end, _ => prot);

    /// <summary>Keeps only the access bits both the recorded protection and <paramref name="prot"/> grant.</summary>
    public void RestrictProt(ulong start, ulong end, Prot prot) => ChangeProt(start, end, old => old & prot);

    private void ChangeProt(ulong start, ulong end, Func<Prot, Prot> change)
    {
        var owned = new List<OwnedRange>();
        foreach (var r in _ranges)
        {
            if (r.Start < end && start < r.End)
            {
                owned.Add(new OwnedRange(Math.Max(r.Start, start), Math.Min(r.End, end), change(r.Prot)));
            }
        }

        foreach (var r in owned)
        {
            Add(r.Start, r.End, r.Prot);
        }
    }

    /// <summary>The owned range holding <paramref name="addr"/>, if any.</summary>
    public OwnedRange? Find(ulong addr)
    {
        int i = FirstEndingAbove(addr);
        return i < _ranges.Count && _ranges[i].Start <= addr ? _ranges[i] : null;
    }

    /// <summary>The parts of [start, end) that no owned range covers.</summary>
    public List<(ulong Start, ulong End)> Gaps(ulong start, ulong end)
    {
        var gaps = new List<(ulong, ulong)>();
        ulong at = start;
        for (int i = FirstEndingAbove(start); i < _ranges.Count && _ranges[i].Start < end; i++)
        {
            if (_ranges[i].Start > at)
            {
                gaps.Add((at, _ranges[i].Start));
            }

            at = Math.Max(at, _ranges[i].End);
        }

        if (at < end)
        {
            gaps.Add((at, end));
        }

        return gaps;
    }

    /// <summary>Whether any owned range overlaps [start, end).</summary>
    public bool AnyIn(ulong start, ulong end)
    {
        int i = FirstEndingAbove(start);
        return i < _ranges.Count && _ranges[i].Start < end;
    }

    public void Clear() => _ranges.Clear();

    private int FirstEndingAbove(ulong addr)
    {
        int lo = 0, hi = _ranges.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_ranges[mid].End <= addr)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    private void MergeAround(int i)
    {
        if (i + 1 < _ranges.Count && _ranges[i].End == _ranges[i + 1].Start && _ranges[i].Prot == _ranges[i + 1].Prot)
        {
            _ranges[i] = _ranges[i] with { End = _ranges[i + 1].End };
            _ranges.RemoveAt(i + 1);
        }

        if (i > 0 && _ranges[i - 1].End == _ranges[i].Start && _ranges[i - 1].Prot == _ranges[i].Prot)
        {
            _ranges[i - 1] = _ranges[i - 1] with { End = _ranges[i].End };
            _ranges.RemoveAt(i);
        }
    }
}
