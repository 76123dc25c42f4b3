using System.IO.Hashing;
using Parquet;

namespace PtLab.Traces;

/// <summary>
/// Writes a trace: rows in time order, validated as they come (a bad row is a
/// <see cref="TraceFormatException"/> naming it), buffered into row groups of
/// <see cref="TraceSchema.RowGroupRows"/>, then the footer with the metadata and a checksum of
/// everything before it. A file path is written under a temporary name and renamed only by
/// <see cref="Complete"/>, so an abandoned writer never leaves a file that looks finished.
/// </summary>
public sealed class TraceWriter : IDisposable
{
    private readonly Stream _file;
    private readonly HashingStream _hashed;
    private readonly ParquetWriter _parquet;
    private readonly string? _path;
    private readonly string? _partialPath;
    private readonly ColumnBuffers _buffers = new(TraceSchema.RowGroupRows);
    private readonly TraceValidator _validator = new(admitUnknownTasks: true, allowUnfinished: true);
    private readonly TraceValidator _strict = new(admitUnknownTasks: false, allowUnfinished: true);
    private bool _strictFailed;
    private long _rows;
    private long _lostEvents;
    private bool _done;
    private readonly bool _checkRows;

    /// <summary>Key-value pairs written over the metadata's (tests and the fuzzer make bad footers with it).</summary>
    internal Dictionary<string, string>? OverrideKeyValues { get; set; }

    /// <summary>Keys left out of the footer (tests write what an older version wrote with it).</summary>
    internal string[]? DropKeys { get; set; }

    /// <summary>A writer that checks nothing: the fuzzer and the tests use it to make well-formed files of bad rows.</summary>
    internal static TraceWriter CreateUnchecked(Stream stream) => new(new NonClosingStream(stream), null, null, DefaultCompression, checkRows: false);

    private TraceWriter(Stream file, string? path, string? partialPath, CompressionMethod compression, bool checkRows = true)
    {
        _checkRows = checkRows;
        _file = file;
        _path = path;
        _partialPath = partialPath;
        _hashed = new HashingStream(file);
        var options = new ParquetOptions { CompressionMethod = compression, CompressionLevel = System.IO.Compression.CompressionLevel.Fastest };
        foreach (var c in TraceSchema.Columns)
        {
            options.ColumnEncodingHints[c.DataField.Path.ToString()] = c.Type == ColumnType.String ? EncodingHint.Dictionary : EncodingHint.DeltaBinaryPacked;
        }

        _parquet = Sync(ParquetWriter.CreateAsync(TraceSchema.Parquet, _hashed, options, append: false));
    }

    /// <summary>The codec used by default: delta-encoded integer columns are already compact, and Zstd (fastest level) halves the rest.</summary>
    public const CompressionMethod DefaultCompression = CompressionMethod.Zstd;

    /// <summary>Creates the trace file <paramref name="path"/> (finished by <see cref="Complete"/>).</summary>
    public static TraceWriter Create(string path, CompressionMethod compression = DefaultCompression)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string partial = path + ".partial";
        var file = new FileStream(partial, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        try
        {
            return new TraceWriter(file, path, partial, compression);
        }
        catch
        {
            file.Dispose();
            File.Delete(partial);
            throw;
        }
    }

    /// <summary>Writes a trace to <paramref name="stream"/> (left open).</summary>
    public static TraceWriter Create(Stream stream, CompressionMethod compression = DefaultCompression) =>
        new(new NonClosingStream(stream), null, null, compression);

    /// <summary>Rows appended so far.</summary>
    public long Rows => _rows;

    /// <summary>Events the appended <see cref="TraceEventKind.Lost"/> rows count.</summary>
    public long LostEvents => _lostEvents;

    /// <summary>
    /// Whether every row so far belongs to a task the trace introduced. False once a row of an
    /// unknown task was admitted: such a trace must be marked incomplete.
    /// </summary>
    public bool TasksComplete => !_strictFailed;

    /// <summary>Appends one row.</summary>
    /// <exception cref="TraceFormatException">The row breaks a rule of the format; the message names it.</exception>
    public void Append(in TraceEvent e)
    {
        ObjectDisposedException.ThrowIf(_done, this);
        string? error = _checkRows ? _validator.Check(e) : null;
        if (error is not null)
        {
            throw new TraceFormatException($"row {_rows}: {error}");
        }

        if (_checkRows && !_strictFailed && _strict.Check(e) is not null)
        {
            _strictFailed = true;
        }

        if (e.Kind == TraceEventKind.Lost)
        {
            _lostEvents += (long)e.Length;
        }

        _buffers.Add(e);
        _rows++;
        if (_buffers.Rows == TraceSchema.RowGroupRows)
        {
            Flush();
        }
    }

    /// <summary>
    /// Writes the footer and, for a file, gives it its name. <paramref name="metadata"/>'s lost
    /// count must cover the lost rows appended, and a trace with syscalls that never returned
    /// or rows of tasks never introduced must say why (truncated, attached, incomplete).
    /// </summary>
    public void Complete(TraceMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        ObjectDisposedException.ThrowIf(_done, this);
        if (_checkRows && metadata.LostEvents < _lostEvents)
        {
            throw new TraceFormatException($"the metadata counts {metadata.LostEvents} lost events, the rows {_lostEvents}");
        }

        if (_checkRows && _validator.Finish() is { } end)
        {
            throw new TraceFormatException($"row {_rows}: {end}");
        }

        if (_checkRows && _validator.Unfinished > 0 && !metadata.Truncated && metadata.Source != "attach")
        {
            throw new TraceFormatException($"{_validator.Unfinished} syscall rows have no result, but the trace is neither truncated nor attached");
        }

        if (_checkRows && (_strictFailed || metadata.LostEvents > 0) && !metadata.Incomplete)
        {
            throw new TraceFormatException("rows of unknown tasks or lost events need the trace marked incomplete");
        }

        Flush();
        var kv = metadata.ToKeyValues(_rows, _hashed.Checksum());
        foreach (var (k, v) in OverrideKeyValues ?? [])
        {
            kv[k] = v;
        }

        foreach (string k in DropKeys ?? [])
        {
            kv.Remove(k);
        }

        _parquet.CustomMetadata = kv;
        Sync(_parquet.DisposeAsync());
        _file.Flush();
        _file.Dispose();
        _done = true;
        if (_path is not null)
        {
            File.Move(_partialPath!, _path, overwrite: true);
        }
    }

    /// <summary>Abandons an unfinished trace (its partial file is deleted).</summary>
    public void Dispose()
    {
        if (_done)
        {
            return;
        }

        _done = true;
        try
        {
            Sync(_parquet.DisposeAsync());
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
        }

        _file.Dispose();
        if (_partialPath is not null)
        {
            File.Delete(_partialPath);
        }
    }

    private void Flush()
    {
        if (_buffers.Rows == 0)
        {
            return;
        }

        using (var group = _parquet.CreateRowGroup())
        {
            _buffers.WriteTo(group);
        }

        _buffers.Clear();
    }

    internal static T Sync<T>(Task<T> task) => task.GetAwaiter().GetResult();

    internal static void Sync(Task task) => task.GetAwaiter().GetResult();

    internal static void Sync(ValueTask task) => task.GetAwaiter().GetResult();

    /// <summary>Passes writes through and hashes them: the checksum covers every byte before the footer.</summary>
    private sealed class HashingStream(Stream inner) : Stream
    {
        private readonly XxHash3 _hash = new();
        private long _position;

        public string Checksum() => Convert.ToHexStringLower(_hash.GetCurrentHash());

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _position;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            _hash.Append(buffer);
            inner.Write(buffer);
            _position += buffer.Length;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            Write(buffer.AsSpan(offset, count));
            return Task.CompletedTask;
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override Task FlushAsync(CancellationToken cancellationToken)
        {
            inner.Flush();
            return Task.CompletedTask;
        }
    }

    private sealed class NonClosingStream(Stream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
        public override void Write(ReadOnlySpan<byte> buffer) => inner.Write(buffer);

        protected override void Dispose(bool disposing) => inner.Flush();
    }
}
