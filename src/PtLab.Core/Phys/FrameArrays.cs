using System.Runtime.CompilerServices;

namespace PtLab.Phys;

/// <summary>
/// Storage indexed by frame number, created on first use so host memory follows the frames in use:
/// either one value per frame (<see cref="Slot"/>, in segments of 2,048 frames by default) or a
/// block of <c>perFrame</c> values per frame (<see cref="Block"/>, in chunks of 64 frames, large
/// enough to live on the large-object heap so the GC never copies them).
/// </summary>
internal sealed class FrameArrays<T>
{
    // 2,048 frames a segment: 32 KiB of page descriptors, under the large-object threshold, so an
    // array header (24 bytes) and a slot of the segment table (8, doubled while it grows) add about
    // 0.02 bytes a frame, against 0.09 with segments of 512. Storage only some frames need (the
    // page extensions) takes smaller segments, so a frame that needs it costs few beside it.
    private const int DefaultSegmentShift = 11;
    private const int ChunkMask = (1 << ChunkShift) - 1;

    /// <summary>A chunk holds the blocks of 2^ChunkShift frames, those whose numbers differ only in their low bits.</summary>
    public const int ChunkShift = 6;

    private readonly int _perFrame;
    private readonly Lock _grow = new();
    private T[]?[] _chunks = new T[]?[64];
    private T[]?[] _segments = new T[]?[64];
    private long _hostBytes;

    private readonly int _segmentShift;
    private readonly long _segmentMask;

    public FrameArrays(int perFrame, int segmentShift = DefaultSegmentShift)
    {
        _perFrame = perFrame;
        _segmentShift = segmentShift;
        _segmentMask = (1L << segmentShift) - 1;
    }

    public long HostBytes => Volatile.Read(ref _hostBytes);

    /// <summary>One value per frame: a reference to the frame's slot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T Slot(long pfn)
    {
        long seg = pfn >> _segmentShift;
        var segs = Volatile.Read(ref _segments);
        T[]? s = seg < segs.Length ? segs[seg] : null;
        return ref (s ?? Grow(ref _segments, seg, 1 << _segmentShift))[pfn & _segmentMask];
    }

    /// <summary>One value per frame: a reference to the frame's slot, or a null reference when its segment was never created (reads as default).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T SlotIfPresent(long pfn)
    {
        long seg = pfn >> _segmentShift;
        var segs = Volatile.Read(ref _segments);
        T[]? s = seg < segs.Length ? segs[seg] : null;
        return ref s is null ? ref Unsafe.NullRef<T>() : ref s[pfn & _segmentMask];
    }

    /// <summary>A block per frame: the frame's block, created zeroed if absent.</summary>
    public Span<T> Block(long pfn) => new(Chunk(pfn), (int)(pfn & ChunkMask) * _perFrame, _perFrame);

    /// <summary>The frame's block, or an empty span when its chunk was never created (reads as zeros).</summary>
    public Span<T> BlockIfPresent(long pfn) =>
        ChunkIfPresent(pfn) is { } a ? new Span<T>(a, (int)(pfn & ChunkMask) * _perFrame, _perFrame) : default;

    /// <summary>
    /// The chunk that holds the frame's block, created zeroed if absent, for a caller that lays
    /// out a chunk's blocks itself (its 2^<see cref="ChunkShift"/> blocks in the same space).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T[] Chunk(long pfn) => ChunkIfPresent(pfn) ?? Grow(ref _chunks, pfn >> ChunkShift, _perFrame << ChunkShift);

    /// <summary>The chunk that holds the frame's block, or null when it was never created (reads as zeros).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T[]? ChunkIfPresent(long pfn)
    {
        long c = pfn >> ChunkShift;
        var chunks = Volatile.Read(ref _chunks);
        return c < chunks.Length ? chunks[c] : null;
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
