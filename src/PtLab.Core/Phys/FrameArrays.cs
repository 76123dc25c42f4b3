using System.Runtime.CompilerServices;

namespace PtLab.Phys;

/// <summary>
/// Storage indexed by frame number, created on first use so host memory follows the frames in use:
/// either one value per frame (<see cref="Slot"/>, in segments of 2,048) or a block of
/// <c>perFrame</c> values per frame (<see cref="Block"/>, in chunks of 64 frames, large enough to
/// live on the large-object heap so the GC never copies them).
/// </summary>
internal sealed class FrameArrays<T>
{
    // 2,048 frames a segment: 48 KiB of page descriptors, under the large-object threshold, so an
    // array header (24 bytes) and a slot of the segment table (8, doubled while it grows) add about
    // 0.02 bytes a frame, against 0.09 with segments of 512.
    private const int SegmentShift = 11;
    private const int SegmentMask = (1 << SegmentShift) - 1;
    private const int ChunkShift = 6;
    private const int ChunkMask = (1 << ChunkShift) - 1;

    private readonly int _perFrame;
    private readonly Lock _grow = new();
    private T[]?[] _chunks = new T[]?[64];
    private T[]?[] _segments = new T[]?[64];
    private long _hostBytes;

    public FrameArrays(int perFrame) => _perFrame = perFrame;

    public long HostBytes => Volatile.Read(ref _hostBytes);

    /// <summary>One value per frame: a reference to the frame's slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T Slot(long pfn)
    {
        long seg = pfn >> SegmentShift;
        var segs = Volatile.Read(ref _segments);
        T[]? s = seg < segs.Length ? segs[seg] : null;
        return ref (s ?? Grow(ref _segments, seg, 1 << SegmentShift))[pfn & SegmentMask];
    }

    /// <summary>A block per frame: the frame's block, created zeroed if absent.</summary>
    public Span<T> Block(long pfn)
    {
        long c = pfn >> ChunkShift;
        var chunks = Volatile.Read(ref _chunks);
        T[]? a = c < chunks.Length ? chunks[c] : null;
        a ??= Grow(ref _chunks, c, _perFrame << ChunkShift);
        return new Span<T>(a, (int)(pfn & ChunkMask) * _perFrame, _perFrame);
    }

    /// <summary>The frame's block, or an empty span when its chunk was never created (reads as zeros).</summary>
    public Span<T> BlockIfPresent(long pfn)
    {
        long c = pfn >> ChunkShift;
        var chunks = Volatile.Read(ref _chunks);
        T[]? a = c < chunks.Length ? chunks[c] : null;
        return a is null ? default : new Span<T>(a, (int)(pfn & ChunkMask) * _perFrame, _perFrame);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private T[] Grow(ref T[]?[] table, long index, int length)
    {
        lock (_grow)
        {
            if (index >= table.Length)
            {
                var n = new T[]?[Math.Max(index + 1, table.Length * 2)];
                Array.Copy(table, n, table.Length);
                Volatile.Write(ref table, n);
            }

            var s = table[index];
            if (s is null)
            {
                s = new T[length];
                Volatile.Write(ref table[index], s);
                _hostBytes += (long)length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
            }

            return s;
        }
    }
}
