namespace PtLab.Phys;

// The kernel's own pages that special mappings map into user address spaces: the vDSO image and
// the vvar data pages. They belong to the kernel, not to any process: one set per machine,
// allocated at first use and never freed.
public sealed partial class PhysMemory
{
    private readonly Dictionary<string, long[]> _specialFrames = new(StringComparer.Ordinal);
    private long _specialFrameCount;

    /// <summary>Frames held by the kernel for special mappings (<see cref="SpecialFrames"/>).</summary>
    public long SpecialFrameCount => Volatile.Read(ref _specialFrameCount);

    /// <summary>
    /// The first <paramref name="pages"/> frames of the kernel image named <paramref name="name"/>
    /// (the <c>pages</c> array of a <c>vm_special_mapping</c>, or the data pages behind a
    /// <c>[vvar]</c>): the same frames for every process of this machine. They are reserved
    /// (<c>PG_reserved</c>: references and frees leave them alone) and on no LRU list, as kernel
    /// image pages are. Returns null when memory ran out.
    /// </summary>
    public long[]? SpecialFrames(string name, int pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pages);
        lock (_specialFrames)
        {
            var frames = _specialFrames.GetValueOrDefault(name) ?? [];
            if (frames.Length >= pages)
            {
                return frames;
            }

            var grown = new long[pages];
            frames.CopyTo(grown, 0);
            for (int i = frames.Length; i < pages; i++)
            {
                long pfn = AllocFrame();
                if (pfn < 0)
                {
                    _specialFrames[name] = grown[..i];
                    return null;
                }

                Desc(pfn).Flags = (int)PageFlags.Reserved;
                grown[i] = pfn;
                Interlocked.Increment(ref _specialFrameCount);
            }

            _specialFrames[name] = grown;
            return grown;
        }
    }
}
