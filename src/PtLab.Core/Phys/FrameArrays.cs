namespace PtLab.Phys;

/// <summary>
/// Storage indexed by frame number, created on first use so host memory follows the frames in use:
/// either one value per frame (<see cref="Slot"/>, in segments of 512) or a block of
/// <c>perFrame</c> values per frame (<see cref="Block"/>, in chunks of 64 frames, large enough to
/// live on the large-object heap so the GC never copies them).
/// </summary>
internal sealed class FrameArrays<T>
{
    private const int SegmentShift = 9;
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

/// <summary>
/// Entries of page-table pages. A table takes a slot when allocated and returns it when freed, so
/// host memory follows live tables wherever their frames lie. Slots live in 64-table chunks
/// (256 KiB, on the large-object heap).
/// </summary>
internal sealed class TableStore
{
    private const int ChunkShift = 6;
    private const int ChunkMask = (1 << ChunkShift) - 1;

    private readonly Lock _lock = new();
    private ulong[]?[] _chunks = new ulong[]?[16];
    private int[] _free = new int[64];
    private int _freeCount;
    private int _next;

    public long HostBytes { get; private set; }

    /// <summary>Takes a zeroed slot.</summary>
    public int Take()
    {
        int slot;
        lock (_lock)
        {
            if (_freeCount > 0)
            {
                slot = _free[--_freeCount];
            }
            else
            {
                slot = _next++;
                int c = slot >> ChunkShift;
                if (c >= _chunks.Length)
                {
                    var n = new ulong[]?[_chunks.Length * 2];
                    Array.Copy(_chunks, n, _chunks.Length);
                    Volatile.Write(ref _chunks, n);
                }

                if (_chunks[c] is null)
                {
                    Volatile.Write(ref _chunks[c], new ulong[PhysMemory.EntriesPerTable << ChunkShift]);
                    HostBytes += (long)PhysMemory.PageSize << ChunkShift;
                }
            }
        }

        Entries(slot).Clear();
        return slot;
    }

    /// <summary>Returns a slot; its entries are overwritten with <paramref name="poison"/> first.</summary>
    public void Release(int slot, ulong poison)
    {
        Entries(slot).Fill(poison);
        lock (_lock)
        {
            if (_freeCount == _free.Length)
            {
                Array.Resize(ref _free, _free.Length * 2);
            }

            _free[_freeCount++] = slot;
        }
    }

    public Span<ulong> Entries(int slot) =>
        new(Volatile.Read(ref _chunks)[slot >> ChunkShift], (slot & ChunkMask) * PhysMemory.EntriesPerTable, PhysMemory.EntriesPerTable);
}
