namespace PtLab.Traces;

/// <summary>
/// A read-only view of a seekable stream that refuses to read at or past <see cref="Limit"/>: the
/// end of the column chunk being decoded. A read that starts there throws
/// <see cref="EndOfStreamException"/>; one that would cross it is cut at it. A decoder that
/// mistakes the end of its input for data (Parquet.Net's Thrift varints do) then fails instead of
/// reading the next chunk or looping at the end of the file.
/// </summary>
internal sealed class ChunkBoundedStream(Stream inner) : Stream
{
    /// <summary>The offset no read may reach (the file's end when no chunk is being decoded).</summary>
    public long Limit { get; set; } = long.MaxValue;

    public override bool CanRead => true;

    public override bool CanSeek => true;

    public override bool CanWrite => false;

    public override long Length => inner.Length;

    public override long Position
    {
        get => inner.Position;
        set => inner.Position = value;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty)
        {
            return 0;
        }

        long left = Math.Min(Limit, inner.Length) - inner.Position;
        if (left <= 0)
        {
            throw new EndOfStreamException(Limit == long.MaxValue
                ? $"read at offset {inner.Position}, past the end of the file"
                : $"read at offset {inner.Position}, past the end of the column chunk at {Limit}");
        }

        return inner.Read(buffer[..(int)Math.Min(buffer.Length, left)]);
    }

    public override int ReadByte()
    {
        Span<byte> one = stackalloc byte[1];
        return Read(one) == 1 ? one[0] : throw new EndOfStreamException($"the stream ended at offset {inner.Position}, before its length");
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Task.FromResult(Read(buffer, offset, count));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Read(buffer.Span));

    public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
