using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace PtLab.Phys;

/// <summary>Where the bytes of user pages live. Page-table pages never use it: they always hold real entries.</summary>
public interface IPageContentStore
{
    /// <summary>True when real bytes are kept.</summary>
    bool HoldsData { get; }

    /// <summary>Makes the frame read as zeros (<c>clear_page</c>).</summary>
    void Zero(long pfn);

    /// <summary>Copies one frame to another (<c>copy_page</c>).</summary>
    void Copy(long srcPfn, long dstPfn);

    /// <summary>Writes bytes into a frame.</summary>
    void Write(long pfn, int offset, ReadOnlySpan<byte> data);

    /// <summary>Reads bytes from a frame. Without real data, the bytes are derived from the token.</summary>
    void Read(long pfn, int offset, Span<byte> destination);

    /// <summary>A 64-bit fingerprint of the frame's content; 0 for a zero-filled frame.</summary>
    ulong Token(long pfn);

    /// <summary>Host memory held for page contents.</summary>
    long HostBytes { get; }
}

/// <summary>
/// Fingerprints shared by both stores. A write folds its offset and a hash of its bytes into the
/// page's previous token, so two pages that saw the same writes carry the same token.
/// </summary>
public static class ContentToken
{
    /// <summary>
    /// The token after writing <paramref name="data"/> at <paramref name="offset"/>: a 32-bit
    /// fingerprint (kept in the page descriptor), never 0 once written.
    /// </summary>
    public static ulong AfterWrite(ulong token, int offset, ReadOnlySpan<byte> data)
    {
        ulong h = Hash(data, (ulong)offset);
        ulong t = (token ^ h) * 0x9E3779B97F4A7C15UL + (ulong)offset + 1;
        uint folded = (uint)(t ^ (t >> 32));
        return folded == 0 ? 1 : folded;
    }

    /// <summary>A deterministic 64-bit hash of bytes (a multiply-xorshift over 8-byte words).</summary>
    public static ulong Hash(ReadOnlySpan<byte> data, ulong seed)
    {
        ulong h = seed ^ 0xCBF29CE484222325UL ^ ((ulong)data.Length * 0x100000001B3UL);
        int i = 0;
        for (; i + 8 <= data.Length; i += 8)
        {
            h = Mix(h ^ BinaryPrimitives.ReadUInt64LittleEndian(data[i..]));
        }

        ulong tail = 0;
        for (int k = 0; i < data.Length; i++, k += 8)
        {
            tail |= (ulong)data[i] << k;
        }

        return Mix(h ^ tail);
    }

    private static ulong Mix(ulong x)
    {
        x ^= x >> 33;
        x *= 0xFF51AFD7ED558CCDUL;
        x ^= x >> 33;
        x *= 0xC4CEB9FE1A85EC53UL;
        return x ^ (x >> 33);
    }
}

/// <summary>
/// Real bytes: 4 KiB per frame, in chunks of 64 frames created when a frame of the chunk first
/// holds data. Each frame also keeps a 64-bit mask of the 64-byte lines ever written since it was
/// last zeroed, so clearing a frame touches only those lines: the invariant is that a line whose
/// bit is clear holds zeros. A chunk is laid out line by line (line 0 of its 64 frames, then line
/// 1, ...), not frame by frame: a page that is touched once is written in one line, nearly always
/// the same one, and frames back to back would put those lines 4 KiB apart, each on a host page of
/// its own and all in the same few sets of the host's caches, where a run cycling through a few
/// hundred frames missed on every touch. Line by line they are 64 bytes apart.
/// </summary>
public sealed class ByteContentStore : IPageContentStore
{
    private const int LineShift = 6; // 64-byte lines: 4096 / 64 = 64 lines, one bit each
    private const int LineBytes = 1 << LineShift;
    private const int FrameMask = (1 << FrameArrays<byte>.ChunkShift) - 1;

    private readonly FrameArrays<byte> _frames = new(PhysMemory.PageSize);
    private readonly FrameArrays<ulong> _written = new(1);

    /// <inheritdoc/>
    public bool HoldsData => true;

    /// <inheritdoc/>
    public long HostBytes => _frames.HostBytes + _written.HostBytes;

    // Where line `line` of the frame lies in its chunk: lines of the same number of the chunk's
    // frames are side by side.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LineAt(long pfn, int line) =>
        (line << (LineShift + FrameArrays<byte>.ChunkShift)) | ((int)(pfn & FrameMask) << LineShift);

    /// <inheritdoc/>
    public void Zero(long pfn)
    {
        ref ulong mask = ref _written.Slot(pfn);
        ulong m = mask;
        if (m == 0)
        {
            return;
        }

        // A line was written, so the chunk exists.
        var chunk = _frames.ChunkIfPresent(pfn)!;
        do
        {
            // Usually one line (a page touched once): cleared inline, no call.
            int line = System.Numerics.BitOperations.TrailingZeroCount(m);
            Unsafe.InitBlockUnaligned(ref chunk[LineAt(pfn, line)], 0, LineBytes);
            m &= m - 1;
        }
        while (m != 0);

        mask = 0;
    }

    /// <inheritdoc/>
    public void Copy(long srcPfn, long dstPfn)
    {
        ulong srcMask = _written.Slot(srcPfn);
        Zero(dstPfn);
        if (srcMask == 0)
        {
            return;
        }

        // Only the written lines: the others hold zeros in both.
        var src = _frames.ChunkIfPresent(srcPfn)!;
        var dst = _frames.Chunk(dstPfn);
        for (ulong m = srcMask; m != 0; m &= m - 1)
        {
            int line = System.Numerics.BitOperations.TrailingZeroCount(m);
            src.AsSpan(LineAt(srcPfn, line), LineBytes).CopyTo(dst.AsSpan(LineAt(dstPfn, line), LineBytes));
        }

        _written.Slot(dstPfn) = srcMask;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(long pfn, int offset, ReadOnlySpan<byte> data)
    {
        if (data.Length == 1 && (uint)offset < PhysMemory.PageSize)
        {
            // A touch: one byte, one line, no copy call.
            _frames.Chunk(pfn)[LineAt(pfn, offset >> LineShift) + (offset & (LineBytes - 1))] = data[0];
            _written.Slot(pfn) |= 1UL << (offset >> LineShift);
            return;
        }

        WriteSpan(pfn, offset, data);
    }

    // A write of other than one byte, out of line so that a touch inlines small.
    private void WriteSpan(long pfn, int offset, ReadOnlySpan<byte> data)
    {
        CheckRange(offset, data.Length);
        if (data.IsEmpty)
        {
            return;
        }

        var chunk = _frames.Chunk(pfn);
        ulong bits = 0;
        while (!data.IsEmpty)
        {
            int line = offset >> LineShift, within = offset & (LineBytes - 1);
            int n = Math.Min(LineBytes - within, data.Length);
            data[..n].CopyTo(chunk.AsSpan(LineAt(pfn, line) + within, n));
            bits |= 1UL << line;
            offset += n;
            data = data[n..];
        }

        _written.Slot(pfn) |= bits;
    }

    /// <inheritdoc/>
    public void Read(long pfn, int offset, Span<byte> destination)
    {
        var chunk = _frames.ChunkIfPresent(pfn);
        if (chunk is null || _written.Slot(pfn) == 0)
        {
            destination.Clear();
            return;
        }

        CheckRange(offset, destination.Length);

        // Line by line; a line never written holds zeros.
        while (!destination.IsEmpty)
        {
            int line = offset >> LineShift, within = offset & (LineBytes - 1);
            int n = Math.Min(LineBytes - within, destination.Length);
            chunk.AsSpan(LineAt(pfn, line) + within, n).CopyTo(destination);
            offset += n;
            destination = destination[n..];
        }
    }

    /// <inheritdoc/>
    public ulong Token(long pfn)
    {
        var chunk = _frames.ChunkIfPresent(pfn);
        ulong mask = chunk is null ? 0 : _written.Slot(pfn);
        if (mask == 0)
        {
            return 0;
        }

        // The hash of the page as one run of bytes, gathered from its lines.
        Span<byte> page = stackalloc byte[PhysMemory.PageSize];
        page.Clear();
        for (ulong m = mask; m != 0; m &= m - 1)
        {
            int line = System.Numerics.BitOperations.TrailingZeroCount(m);
            chunk!.AsSpan(LineAt(pfn, line), LineBytes).CopyTo(page[(line << LineShift)..]);
        }

        return page.ContainsAnyExcept((byte)0) ? ContentToken.Hash(page, 0) : 0;
    }

    // A range of a frame, as slicing a frame's block would check it.
    private static void CheckRange(int offset, int length)
    {
        if ((uint)offset > PhysMemory.PageSize || (uint)length > (uint)(PhysMemory.PageSize - offset))
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes {offset}..{offset + length} are not within a page");
        }
    }
}

/// <summary>
/// No page data: a 32-bit token per frame stands for its content, so that hundreds of GiB of
/// resident memory fit on a small host and reads can still be checked against the writes that
/// made them. The token lives in the frame's descriptor (<see cref="PageDescriptor.Aux"/>).
/// </summary>
public sealed class TokenContentStore : IPageContentStore
{
    private readonly PhysMemory _phys;

    /// <summary>Creates the store over the descriptors of <paramref name="phys"/>.</summary>
    public TokenContentStore(PhysMemory phys) => _phys = phys;

    /// <inheritdoc/>
    public bool HoldsData => false;

    /// <inheritdoc/>
    public long HostBytes => 0; // counted with the descriptors

    /// <inheritdoc/>
    public void Zero(long pfn) => _phys.Desc(pfn).Aux = 0;

    /// <inheritdoc/>
    public void Copy(long srcPfn, long dstPfn) => _phys.Desc(dstPfn).Aux = _phys.Desc(srcPfn).Aux;

    /// <inheritdoc/>
    public void Write(long pfn, int offset, ReadOnlySpan<byte> data)
    {
        ref uint t = ref _phys.Desc(pfn).Aux;
        t = (uint)ContentToken.AfterWrite(t, offset, data);
    }

    /// <inheritdoc/>
    public void Read(long pfn, int offset, Span<byte> destination)
    {
        ulong t = _phys.Desc(pfn).Aux;
        if (t == 0)
        {
            destination.Clear();
            return;
        }

        // Synthetic bytes: a pure function of (token, offset), so repeated reads agree.
        Span<byte> word = stackalloc byte[8];
        for (int i = 0; i < destination.Length; i++)
        {
            int at = offset + i;
            if (i == 0 || (at & 7) == 0)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(word, (t ^ (ulong)(at >> 3)) * 0xD6E8FEB86659FD93UL);
            }

            destination[i] = word[at & 7];
        }
    }

    /// <inheritdoc/>
    public ulong Token(long pfn) => _phys.Desc(pfn).Aux;

    /// <summary>Gives a frame a saved token back (swap-in).</summary>
    public void Restore(long pfn, ulong token) => _phys.Desc(pfn).Aux = (uint)token;
}
