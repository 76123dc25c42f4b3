namespace PtLab.Phys;

/// <summary>
/// Per-frame arrays of <typeparamref name="T"/> indexed by frame number, in segments of 512 frames
/// created on first use, so host memory follows the frames actually used.
/// </summary>
internal sealed class FrameArrays<T>
{
    private const int SegmentShift = 9;
    private const int SegmentMask = (1 << SegmentShift) - 1;

    private readonly int _perFrame;
    private readonly Lock _grow = new();
    private T[]?[]?[] _perFrameSegments = new T[]?[]?[64];
    private T[]?[] _flatSegments = new T[]?[64];
    private long _hostBytes;

    public FrameArrays(int perFrame) => _perFrame = perFrame;

    public long HostBytes => Volatile.Read(ref _hostBytes);

    /// <summary>For one value per frame: a reference to the frame's slot.</summary>
    public ref T Slot(long pfn)
    {
        long seg = pfn >> SegmentShift;
        var segs = Volatile.Read(ref _flatSegments);
        T[]? s = seg < segs.Length ? segs[seg] : null;
        return ref (s ?? GrowFlat(seg))[pfn & SegmentMask];
    }

    /// <summary>For an array per frame: the frame's array, created zeroed if absent.</summary>
    public T[] Get(long pfn) => GetIfPresent(pfn) ?? Create(pfn);

    public T[]? GetIfPresent(long pfn)
    {
        long seg = pfn >> SegmentShift;
        var segs = Volatile.Read(ref _perFrameSegments);
        if (seg >= segs.Length)
        {
            return null;
        }

        return segs[seg]?[pfn & SegmentMask];
    }

    private T[] Create(long pfn)
    {
        lock (_grow)
        {
            long seg = pfn >> SegmentShift;
            if (seg >= _perFrameSegments.Length)
            {
                var n = new T[]?[]?[Math.Max(seg + 1, _perFrameSegments.Length * 2)];
                Array.Copy(_perFrameSegments, n, _perFrameSegments.Length);
                Volatile.Write(ref _perFrameSegments, n);
            }

            var segment = _perFrameSegments[seg];
            if (segment is null)
            {
                segment = new T[]?[1 << SegmentShift];
                Volatile.Write(ref _perFrameSegments[seg], segment);
            }

            var a = segment[pfn & SegmentMask];
            if (a is null)
            {
                a = new T[_perFrame];
                Volatile.Write(ref segment[pfn & SegmentMask], a);
                _hostBytes += (long)_perFrame * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
            }

            return a;
        }
    }

    private T[] GrowFlat(long seg)
    {
        lock (_grow)
        {
            if (seg >= _flatSegments.Length)
            {
                var n = new T[]?[Math.Max(seg + 1, _flatSegments.Length * 2)];
                Array.Copy(_flatSegments, n, _flatSegments.Length);
                Volatile.Write(ref _flatSegments, n);
            }

            var s = _flatSegments[seg];
            if (s is null)
            {
                s = new T[1 << SegmentShift];
                Volatile.Write(ref _flatSegments[seg], s);
                _hostBytes += (long)(1 << SegmentShift) * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
            }

            return s;
        }
    }
}
