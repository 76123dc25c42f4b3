using System.Buffers.Binary;
using System.Globalization;
using System.IO.Hashing;
using Parquet;
using Parquet.Schema;

namespace PtLab.Traces;

/// <summary>
/// Reads a trace file, trusting nothing in it. <see cref="Open(string)"/> checks the file's structure
/// before any row is decoded: the Parquet magic, the schema, the metadata, that the column chunks
/// tile the file exactly as a writer lays them out, and the checksum of every byte before the
/// footer. <see cref="ReadEvents"/> then streams the rows in time order, one row group in memory
/// at a time (the next one is decoded on another thread meanwhile), checking each row as the
/// writer did. Any violation is a <see cref="TraceFormatException"/> naming the file and the row.
/// </summary>
/// <remarks>One enumeration at a time: the reader owns one file handle.</remarks>
public sealed class TraceReader : IDisposable
{
    private static readonly byte[] s_magic = "PAR1"u8.ToArray();
    private static readonly CompressionMethod[] s_codecs = [CompressionMethod.None, CompressionMethod.Snappy, CompressionMethod.Gzip, CompressionMethod.Zstd, CompressionMethod.Lz4Raw];

    private readonly Stream _file;
    private readonly ParquetReader _parquet;
    private readonly long[] _groupRows;
    private bool _reading;

    private TraceReader(string path, Stream file, ParquetReader parquet, TraceMetadata metadata, long[] groupRows)
    {
        Path = path;
        _file = file;
        _parquet = parquet;
        Metadata = metadata;
        _groupRows = groupRows;
        Rows = groupRows.Sum();
    }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>The trace's metadata: how it was made, truncated/incomplete flags, host facts.</summary>
    public TraceMetadata Metadata { get; }

    /// <summary>The number of rows.</summary>
    public long Rows { get; }

    /// <summary>Opens and checks <paramref name="path"/>.</summary>
    /// <exception cref="TraceFormatException">The file is not a valid trace; the message says where and why.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static TraceReader Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return Open(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16), path);
    }

    /// <summary>Opens and checks a trace held in <paramref name="file"/> (a seekable stream the reader then owns); <paramref name="path"/> names it in errors.</summary>
    /// <exception cref="TraceFormatException">The stream is not a valid trace.</exception>
    public static TraceReader Open(Stream file, string path)
    {
        ArgumentNullException.ThrowIfNull(file);
        ParquetReader? parquet = null;
        try
        {
            long footerStart = CheckEnvelope(path, file);
            TraceMetadata? metadata;
            string? error;
            long[] groupRows;
            Dictionary<string, string> kv;
            try
            {
                // Parquet.Net decodes the footer (and, lazily, the schema) here: whatever it throws on a
                // corrupt footer is the file's fault, reported as such.
                parquet = TraceWriter.Sync(ParquetReader.CreateAsync(file, new ParquetOptions(), leaveStreamOpen: true));
                kv = parquet.CustomMetadata ?? [];
                metadata = TraceMetadata.FromKeyValues(kv, out error);
                if (metadata is not null)
                {
                    CheckSchema(path, parquet.Schema);
                }

                groupRows = metadata is null ? [] : CheckLayout(path, parquet, footerStart);
            }
            catch (Exception e) when (e is not TraceFormatException && IsDecodeFailure(e))
            {
                throw new TraceFormatException($"{path}: the Parquet footer cannot be read: {OneLine(e)}");
            }

            if (metadata is null)
            {
                throw new TraceFormatException($"{path}: {error}");
            }

            if (!kv.TryGetValue(TraceKeys.Rows, out string? declared) || !kv.TryGetValue(TraceKeys.Checksum, out string? checksum))
            {
                throw new TraceFormatException($"{path}: metadata '{(kv.ContainsKey(TraceKeys.Rows) ? TraceKeys.Checksum : TraceKeys.Rows)}' is missing");
            }

            if (declared != groupRows.Sum().ToString(CultureInfo.InvariantCulture))
            {
                throw new TraceFormatException($"{path}: the metadata declares {TraceMetadata.Trim(declared)} rows, the row groups hold {groupRows.Sum()}");
            }

            CheckChecksum(path, file, footerStart, checksum);
            return new TraceReader(path, file, parquet, metadata, groupRows);
        }
        catch
        {
            if (parquet is not null)
            {
                TraceWriter.Sync(parquet.DisposeAsync());
            }

            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Streams every row in file (time) order, each one checked. Rows of a task the trace never
    /// introduced are an error unless the trace is marked incomplete; syscalls without a result
    /// unless it is truncated or attached.
    /// </summary>
    /// <exception cref="TraceFormatException">A row breaks a rule of the format, or a row group cannot be decoded.</exception>
    public IEnumerable<TraceEvent> ReadEvents(CancellationToken cancellationToken = default)
    {
        if (_reading)
        {
            throw new InvalidOperationException("a TraceReader streams one enumeration at a time");
        }

        return Stream(cancellationToken);
    }

    private IEnumerable<TraceEvent> Stream(CancellationToken cancellationToken)
    {
        _reading = true;
        try
        {
            var validator = new TraceValidator(
                admitUnknownTasks: Metadata.Incomplete,
                allowUnfinished: Metadata.Truncated || Metadata.Source == "attach");
            long row = 0;
            var spare = new DecodedGroup();
            Task<DecodedGroup>? next = _groupRows.Length > 0 ? Task.Run(() => Decode(0, new DecodedGroup()), cancellationToken) : null;
            for (int g = 0; g < _groupRows.Length; g++)
            {
                DecodedGroup group = Await(next!);
                // Decode the next row group while this one is consumed; its buffers are the spare set.
                var buffers = spare;
                int nextIndex = g + 1;
                next = nextIndex < _groupRows.Length ? Task.Run(() => Decode(nextIndex, buffers), cancellationToken) : null;
                var cursor = new RowCursor(group);
                for (int r = 0; r < group.Rows; r++, row++)
                {
                    TraceEvent e;
                    string? error = cursor.Next(out e);
                    error ??= validator.Check(e);
                    if (error is not null)
                    {
                        throw new TraceFormatException($"{Path}: row {row}: {error}");
                    }

                    yield return e;
                }

                cancellationToken.ThrowIfCancellationRequested();
                spare = group;
            }
        }
        finally
        {
            _reading = false;
        }
    }

    private static DecodedGroup Await(Task<DecodedGroup> task)
    {
        try
        {
            return task.GetAwaiter().GetResult();
        }
        catch (AggregateException e) when (e.InnerException is TraceFormatException t)
        {
            throw t;
        }
    }

    private DecodedGroup Decode(int index, DecodedGroup into)
    {
        int rows = (int)_groupRows[index];
        into.Reset(rows);
        var group = _parquet.OpenRowGroupReader(index);
        foreach (var c in TraceSchema.Columns)
        {
            try
            {
                // A column null in every row of the group (fd, paths, mremap's: most groups) is not decoded.
                if (!c.Required && group.GetStatistics(c.DataField) is { NullCount: long nulls } && nulls == rows)
                {
                    into.SetAllNull(c.Index);
                    continue;
                }

                into.Read(group, c, rows);
            }
            catch (Exception e) when (IsDecodeFailure(e))
            {
                throw new TraceFormatException($"{Path}: row group {index} (rows from {_groupRows.Take(index).Sum()}), column {c.Name}: cannot decode: {OneLine(e)}");
            }
        }

        return into;
    }

    /// <summary>Closes the file.</summary>
    public void Dispose()
    {
        TraceWriter.Sync(_parquet.DisposeAsync());
        _file.Dispose();
    }

    private static long CheckEnvelope(string path, Stream file)
    {
        long length = file.Length;
        if (length < 12)
        {
            throw new TraceFormatException($"{path}: {length} bytes: too short to be a trace (a Parquet file)");
        }

        Span<byte> head = stackalloc byte[4];
        Span<byte> tail = stackalloc byte[8];
        file.Position = 0;
        file.ReadExactly(head);
        file.Position = length - 8;
        file.ReadExactly(tail);
        file.Position = 0;
        if (!head.SequenceEqual(s_magic) || !tail[4..].SequenceEqual(s_magic))
        {
            throw new TraceFormatException($"{path}: not a Parquet file (no PAR1 magic at {(head.SequenceEqual(s_magic) ? "the end: truncated or cut short" : "the start")})");
        }

        int footer = BinaryPrimitives.ReadInt32LittleEndian(tail);
        if (footer <= 0 || footer > length - 12)
        {
            throw new TraceFormatException($"{path}: the footer length {footer} does not fit a file of {length} bytes (truncated?)");
        }

        return length - 8 - footer;
    }

    private static void CheckSchema(string path, ParquetSchema schema)
    {
        var fields = schema.Fields;
        var data = schema.DataFields;
        if (fields.Count != data.Length)
        {
            throw new TraceFormatException($"{path}: the schema has nested fields; a trace is one flat table");
        }

        for (int i = 0; i < Math.Max(data.Length, TraceSchema.Columns.Count); i++)
        {
            if (i >= data.Length)
            {
                throw new TraceFormatException($"{path}: column {i} ({TraceSchema.Columns[i].Name}) is missing");
            }

            if (i >= TraceSchema.Columns.Count)
            {
                throw new TraceFormatException($"{path}: unexpected column {i} '{TraceMetadata.Trim(data[i].Name)}'");
            }

            var want = TraceSchema.Columns[i].DataField;
            var have = data[i];
            if (have.Name != want.Name || have.ClrType != want.ClrType || have.IsNullable != want.IsNullable || have.IsArray || have.MaxRepetitionLevel != 0)
            {
                throw new TraceFormatException(
                    $"{path}: column {i} is '{TraceMetadata.Trim(have.Name)}' ({have.ClrType.Name}{(have.IsNullable ? ", nullable" : "")}), expected '{want.Name}' ({want.ClrType.Name}{(want.IsNullable ? ", nullable" : "")})");
            }
        }
    }

    /// <summary>
    /// The column chunks must tile [4, footer) in schema order, one chunk per column per row group,
    /// with sizes and counts a writer could produce: then every decode reads pages the checksum
    /// vouches for, at the offsets where they were written.
    /// </summary>
    private static long[] CheckLayout(string path, ParquetReader parquet, long footerStart)
    {
        var meta = parquet.Metadata ?? throw new TraceFormatException($"{path}: no file metadata");
        var groups = meta.RowGroups ?? [];
        var rows = new long[groups.Count];
        long expect = 4;
        for (int g = 0; g < groups.Count; g++)
        {
            var group = groups[g];
            if (group.NumRows <= 0 || group.NumRows > TraceSchema.MaxRowGroupRows)
            {
                throw new TraceFormatException($"{path}: row group {g} declares {group.NumRows} rows (must be 1..{TraceSchema.MaxRowGroupRows})");
            }

            rows[g] = group.NumRows;
            var columns = group.Columns ?? [];
            if (columns.Count != TraceSchema.Columns.Count)
            {
                throw new TraceFormatException($"{path}: row group {g} has {columns.Count} column chunks, expected {TraceSchema.Columns.Count}");
            }

            for (int c = 0; c < columns.Count; c++)
            {
                var chunk = columns[c].MetaData ?? throw new TraceFormatException($"{path}: row group {g}, column {TraceSchema.Columns[c].Name}: no chunk metadata");
                string where = $"{path}: row group {g}, column {TraceSchema.Columns[c].Name}";
                if (columns[c].FilePath is not null)
                {
                    throw new TraceFormatException($"{where}: refers to another file");
                }

                if (!s_codecs.Contains((CompressionMethod)chunk.Codec))
                {
                    throw new TraceFormatException($"{where}: codec {chunk.Codec} is not one a trace uses");
                }

                if (chunk.NumValues != group.NumRows)
                {
                    throw new TraceFormatException($"{where}: {chunk.NumValues} values for {group.NumRows} rows");
                }

                long start = chunk.DictionaryPageOffset is > 0 and long d ? Math.Min(d, chunk.DataPageOffset) : chunk.DataPageOffset;
                if (start != expect || chunk.TotalCompressedSize <= 0 || chunk.TotalCompressedSize > footerStart - start)
                {
                    throw new TraceFormatException($"{where}: chunk at offset {start} of {chunk.TotalCompressedSize} bytes; the layout expects it at {expect}, before the footer at {footerStart}");
                }

                // Every value decodes to at most its string's 4 KiB plus headers: bound what decoding may allocate.
                if (chunk.TotalUncompressedSize < 0 || chunk.TotalUncompressedSize > (group.NumRows * 4200L) + (1 << 20))
                {
                    throw new TraceFormatException($"{where}: {chunk.TotalUncompressedSize} bytes uncompressed for {group.NumRows} rows");
                }

                expect = start + chunk.TotalCompressedSize;
            }
        }

        if (expect != footerStart)
        {
            throw new TraceFormatException($"{path}: the row groups end at offset {expect}, the footer starts at {footerStart}");
        }

        return rows;
    }

    private static void CheckChecksum(string path, Stream file, long footerStart, string expected)
    {
        var hash = new XxHash3();
        byte[] buffer = new byte[1 << 20];
        file.Position = 0;
        long left = footerStart;
        while (left > 0)
        {
            int n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n <= 0)
            {
                throw new TraceFormatException($"{path}: the file ended while its checksum was verified");
            }

            hash.Append(buffer.AsSpan(0, n));
            left -= n;
        }

        file.Position = 0;
        string actual = Convert.ToHexStringLower(hash.GetCurrentHash());
        if (actual != expected)
        {
            throw new TraceFormatException($"{path}: checksum mismatch (the data is {actual}, the footer says {TraceMetadata.Trim(expected)}): the file is corrupt");
        }
    }

    internal static bool IsDecodeFailure(Exception e) =>
        e is not (OperationCanceledException or StackOverflowException or ThreadAbortException);

    internal static string OneLine(Exception e) => e.GetType().Name + ": " + string.Join(" ", e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    /// <summary>A row group's columns, decoded: non-null values packed, a definition level per row.</summary>
    private sealed class DecodedGroup
    {
        private readonly long[]?[] _longs = new long[TraceSchema.Columns.Count][];
        private readonly int[]?[] _ints = new int[TraceSchema.Columns.Count][];
        private readonly ReadOnlyMemory<char>[]?[] _strings = new ReadOnlyMemory<char>[TraceSchema.Columns.Count][];
        private readonly int[]?[] _defs = new int[TraceSchema.Columns.Count][];
        private readonly int[] _present = new int[TraceSchema.Columns.Count];

        public int Rows { get; private set; }

        public long[] Longs(int c) => _longs[c]!;

        public int[] Ints(int c) => _ints[c]!;

        public ReadOnlyMemory<char>[] Strings(int c) => _strings[c]!;

        public int[] Defs(int c) => _defs[c]!;

        public int Present(int c) => _present[c];

        public void Reset(int rows)
        {
            Rows = rows;
            Array.Clear(_present);
        }

        public void SetAllNull(int column) => _present[column] = 0;

        public void Read(ParquetRowGroupReader group, TraceColumn c, int rows)
        {
            int i = c.Index;
            var defs = Grow(ref _defs[i], rows);
            switch (c.Type)
            {
                case ColumnType.Int64:
                    var longs = Grow(ref _longs[i], rows);
                    if (c.Required)
                    {
                        TraceWriter.Sync(group.ReadRawAsync<long>(c.DataField, longs.AsMemory(0, rows), null, null, default));
                    }
                    else
                    {
                        TraceWriter.Sync(group.ReadRawAsync<long>(c.DataField, longs.AsMemory(0, rows), defs.AsMemory(0, rows), null, default));
                    }

                    break;
                case ColumnType.Int32:
                    var ints = Grow(ref _ints[i], rows);
                    if (c.Required)
                    {
                        TraceWriter.Sync(group.ReadRawAsync<int>(c.DataField, ints.AsMemory(0, rows), null, null, default));
                    }
                    else
                    {
                        TraceWriter.Sync(group.ReadRawAsync<int>(c.DataField, ints.AsMemory(0, rows), defs.AsMemory(0, rows), null, default));
                    }

                    break;
                default:
                    var strings = Grow(ref _strings[i], rows);
                    Array.Clear(strings, 0, rows);
                    if (c.Required)
                    {
                        TraceWriter.Sync(group.ReadRawAsync<ReadOnlyMemory<char>>(c.DataField, strings.AsMemory(0, rows), null, null, default));
                    }
                    else
                    {
                        TraceWriter.Sync(group.ReadRawAsync<ReadOnlyMemory<char>>(c.DataField, strings.AsMemory(0, rows), defs.AsMemory(0, rows), null, default));
                    }

                    break;
            }

            if (c.Required)
            {
                _present[i] = rows;
                return;
            }

            int present = 0;
            for (int r = 0; r < rows; r++)
            {
                int d = defs[r];
                if (d is not (0 or 1))
                {
                    throw new TraceFormatException($"definition level {d} at row {r} of the group");
                }

                present += d;
            }

            _present[i] = present;
        }

        private static T[] Grow<T>(ref T[]? array, int rows)
        {
            if (array is null || array.Length < rows)
            {
                array = new T[rows];
            }

            return array;
        }
    }

    /// <summary>Walks a decoded row group row by row, one cursor per column into its packed values.</summary>
    private sealed class RowCursor(DecodedGroup group)
    {
        private readonly int[] _next = new int[TraceSchema.Columns.Count];
        private readonly Dictionary<string, string> _strings = new(StringComparer.Ordinal);
        private readonly bool _anyStatus = Enumerable.Range(TraceSchema.FirstStatus, TraceSchema.StatusCount).Any(c => group.Present(c) > 0);
        private TraceEventKind _lastKind;
        private ReadOnlyMemory<char> _lastKindText;
        private int _row;

        public string? Next(out TraceEvent e)
        {
            int row = _row++;
            e = default;
            var kindText = group.Strings(TraceSchema.Kind)[row];
            TraceEventKind kind;
            if (row > 0 && kindText.Span.SequenceEqual(_lastKindText.Span))
            {
                kind = _lastKind;
            }
            else if (TraceKinds.TryParse(kindText.Span, out kind))
            {
                _lastKind = kind;
                _lastKindText = kindText;
            }
            else
            {
                return $"unknown kind '{TraceMetadata.Trim(kindText.ToString())}'";
            }

            TraceFields has = 0;
            long address = Long(TraceSchema.Address, row, TraceFields.Address, ref has);
            long length = Long(TraceSchema.Length, row, TraceFields.Length, ref has);
            int prot = Int(TraceSchema.Prot, row, TraceFields.Prot, ref has);
            long flags = Long(TraceSchema.Flags, row, TraceFields.Flags, ref has);
            int fd = Int(TraceSchema.Fd, row, TraceFields.Fd, ref has);
            long offset = Long(TraceSchema.Offset, row, TraceFields.Offset, ref has);
            long newAddress = Long(TraceSchema.NewAddress, row, TraceFields.NewAddress, ref has);
            long newLength = Long(TraceSchema.NewLength, row, TraceFields.NewLength, ref has);
            long result = Long(TraceSchema.Result, row, TraceFields.Result, ref has);
            long duration = Long(TraceSchema.Duration, row, TraceFields.Duration, ref has);
            long ip = Long(TraceSchema.Ip, row, TraceFields.Ip, ref has);
            string? dev = String(TraceSchema.Dev, row, TraceFields.Dev, ref has);
            long inode = Long(TraceSchema.Inode, row, TraceFields.Inode, ref has);
            string? path = String(TraceSchema.Path, row, TraceFields.Path, ref has);
            Span<long> figures = stackalloc long[TraceSchema.StatusCount];
            int statusColumns = 0;
            for (int k = 0; k < TraceSchema.StatusCount && _anyStatus; k++)
            {
                TraceFields one = 0;
                figures[k] = Long(TraceSchema.FirstStatus + k, row, TraceFields.Status, ref one);
                statusColumns += one == 0 ? 0 : 1;
            }

            if (statusColumns is not (0 or TraceSchema.StatusCount))
            {
                return $"{statusColumns} of the {TraceSchema.StatusCount} status columns are set (all or none)";
            }

            if (statusColumns > 0)
            {
                has |= TraceFields.Status;
            }

            e = new TraceEvent
            {
                TimeNs = group.Longs(TraceSchema.Time)[row],
                Pid = group.Ints(TraceSchema.Pid)[row],
                Tid = group.Ints(TraceSchema.Tid)[row],
                Kind = kind,
                Has = has,
                Address = (ulong)address,
                Length = (ulong)length,
                Prot = prot,
                Flags = (ulong)flags,
                Fd = fd,
                Offset = (ulong)offset,
                NewAddress = (ulong)newAddress,
                NewLength = (ulong)newLength,
                Result = result,
                DurationNs = duration,
                Ip = (ulong)ip,
                Dev = dev,
                Inode = (ulong)inode,
                Path = path,
                Status = new StatusFigures(figures[0], figures[1], figures[2], figures[3], figures[4], figures[5], figures[6]),
            };
            return null;
        }

        // A column's packed values hold exactly one value per row whose definition level is 1 (counted
        // when decoded), so its cursor never runs past them.
        private long Long(int column, int row, TraceFields field, ref TraceFields has)
        {
            if (group.Present(column) == 0 || group.Defs(column)[row] == 0)
            {
                return 0;
            }

            has |= field;
            return group.Longs(column)[_next[column]++];
        }

        private int Int(int column, int row, TraceFields field, ref TraceFields has)
        {
            if (group.Present(column) == 0 || group.Defs(column)[row] == 0)
            {
                return 0;
            }

            has |= field;
            return group.Ints(column)[_next[column]++];
        }

        private string? String(int column, int row, TraceFields field, ref TraceFields has)
        {
            if (group.Present(column) == 0 || group.Defs(column)[row] == 0)
            {
                return null;
            }

            has |= field;
            var text = group.Strings(column)[_next[column]++];
            // Paths repeat (every fault-around of a library maps it again): keep one string per distinct text.
            string s = text.ToString();
            if (_strings.TryGetValue(s, out string? same))
            {
                return same;
            }

            if (_strings.Count < 4096)
            {
                _strings[s] = s;
            }

            return s;
        }
    }
}
