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

    private readonly ChunkBoundedStream _file;
    private readonly ParquetReader _parquet;
    private readonly long[] _groupRows;
    private readonly long[][] _chunkEnds;
    private bool _reading;

    private TraceReader(string path, ChunkBoundedStream file, ParquetReader parquet, TraceMetadata metadata, long[] groupRows, long[][] chunkEnds)
    {
        Path = path;
        _file = file;
        _parquet = parquet;
        Metadata = metadata;
        _groupRows = groupRows;
        _chunkEnds = chunkEnds;
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
        if (Directory.Exists(path))
        {
            // FileStream says only "access denied" of a directory.
            throw new TraceFormatException($"{path}: a directory, not a trace file");
        }

        return Open(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16), path);
    }

    /// <summary>Opens and checks a trace held in <paramref name="file"/> (a seekable stream the reader then owns); <paramref name="path"/> names it in errors.</summary>
    /// <exception cref="TraceFormatException">The stream is not a valid trace.</exception>
    public static TraceReader Open(Stream file, string path)
    {
        ArgumentNullException.ThrowIfNull(file);
        ParquetReader? parquet = null;
        // Parquet.Net reads page headers byte by byte from the stream and takes its end for a byte
        // with every bit set: a header cut short loops for ever. Decoding is held inside the chunk
        // being decoded, and a read past it is an error.
        file = new ChunkBoundedStream(file);
        try
        {
            long footerStart = CheckEnvelope(path, file);
            TraceMetadata? metadata;
            string? error;
            long[] groupRows;
            long[][] chunkEnds = [];
            Dictionary<string, string> kv;
            byte[] footer = new byte[file.Length - 8 - footerStart];
            file.Position = footerStart;
            file.ReadExactly(footer);
            file.Position = 0;
            if (FooterCheck.Check(footer) is { } malformed)
            {
                throw new TraceFormatException($"{path}: the Parquet footer cannot be read: {malformed}");
            }

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

                groupRows = metadata is null ? [] : CheckLayout(path, parquet, footerStart, out chunkEnds);
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
            return new TraceReader(path, (ChunkBoundedStream)file, parquet, metadata, groupRows, chunkEnds);
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
        foreach (var batch in Batches(cancellationToken))
        {
            for (int r = 0; r < batch.Count; r++)
            {
                yield return batch.Event(r);
            }
        }
    }

    /// <summary>
    /// Streams the rows in file order a row group at a time, each row checked as by
    /// <see cref="ReadEvents"/>: the fast way to consume a trace, with no per-row object. The batch
    /// is reused: it is valid until the enumeration moves on.
    /// </summary>
    /// <exception cref="TraceFormatException">A row breaks a rule of the format, or a row group cannot be decoded.</exception>
    public IEnumerable<TraceBatch> ReadBatches(CancellationToken cancellationToken = default)
    {
        if (_reading)
        {
            throw new InvalidOperationException("a TraceReader streams one enumeration at a time");
        }

        return Batches(cancellationToken);
    }

    private IEnumerable<TraceBatch> Batches(CancellationToken cancellationToken)
    {
        _reading = true;
        try
        {
            var validator = new TraceValidator(
                admitUnknownTasks: Metadata.Incomplete,
                allowUnfinished: Metadata.Truncated || Metadata.Source == "attach");
            long row = 0;
            var spare = new DecodedGroup();
            // Row groups are decoded and checked on another thread, one ahead of the consumer: group
            // g + 1 while group g is consumed. The tasks run one after another, so the validator sees
            // the rows in file order; a bad row's error surfaces when the consumer reaches its group.
            Task<DecodedGroup>? next = _groupRows.Length > 0 ? Task.Run(() => DecodeAndCheck(0, 0, new DecodedGroup(), validator), cancellationToken) : null;
            for (int g = 0; g < _groupRows.Length; g++)
            {
                DecodedGroup group = Await(next!);
                var buffers = spare;
                int nextIndex = g + 1;
                long nextRow = row + group.Rows;
                next = nextIndex < _groupRows.Length ? Task.Run(() => DecodeAndCheck(nextIndex, nextRow, buffers, validator), cancellationToken) : null;
                yield return new TraceBatch(group, row);
                row = nextRow;
                cancellationToken.ThrowIfCancellationRequested();
                spare = group;
            }

            if (validator.Finish() is { } end)
            {
                throw new TraceFormatException($"{Path}: row {row}: {end}");
            }
        }
        finally
        {
            _reading = false;
        }
    }

    private DecodedGroup DecodeAndCheck(int index, long firstRow, DecodedGroup into, TraceValidator validator)
    {
        var group = Decode(index, into);
        var batch = new TraceBatch(group, firstRow);
        var kinds = group.Kinds;
        var has = group.Has;
        var times = group.Longs(TraceSchema.Time);
        var pids = group.Ints(TraceSchema.Pid);
        var tids = group.Ints(TraceSchema.Tid);
        var flags = group.Longs(TraceSchema.Flags);
        for (int r = 0; r < group.Rows; r++)
        {
            var k = kinds[r];
            // Faults, nearly every row of a big trace, take the short check; any doubt takes the full one.
            if (k is TraceEventKind.Fault or TraceEventKind.KernelFault && has[r] == TraceKinds.Fields(k).Required &&
                validator.CheckFault(times[r], pids[r], tids[r], (ulong)flags[r]))
            {
                continue;
            }

            string? error = group.RowError(r);
            error ??= validator.Check(batch.Event(r));
            if (error is not null)
            {
                throw new TraceFormatException($"{Path}: row {firstRow + r}: {error}");
            }
        }

        return group;
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

                _file.Limit = _chunkEnds[index][c.Index];
                into.Read(group, c, rows);
            }
            catch (Exception e) when (IsDecodeFailure(e))
            {
                throw new TraceFormatException($"{Path}: row group {index} (rows from {_groupRows.Take(index).Sum()}), column {c.Name}: cannot decode: {OneLine(e)}");
            }
            finally
            {
                _file.Limit = long.MaxValue;
            }
        }

        into.Expand();
        return into;
    }

    /// <summary>
    /// Bounds read from the footer's row-group statistics without decoding a row: at most
    /// <c>Faults</c> fault rows (the rows that are not status samples), and at least the sum over
    /// processes of each one's largest sampled VmPTE. A process's peak lies in one row group: in a
    /// group of one pid it is at most that pid's largest VmPTE over such groups (exact for a trace of
    /// one process); in a group of several, at most the group's largest, for as many processes as
    /// its pid range or its samples allow. Null when a row group lacks statistics. The statistics are
    /// the writer's word, not checked against the rows: fit for an estimate, not for a figure.
    /// </summary>
    public (long Faults, long PeakVmPteKb)? FooterBounds()
    {
        const long Cap = 1L << 40; // kB: beyond any host, and far from overflow
        long samples = 0, shared = 0;
        var alone = new Dictionary<int, long>();
        var pid = TraceSchema.Columns[TraceSchema.Pid].DataField;
        var pte = TraceSchema.Columns[TraceSchema.FirstStatus + 6].DataField;
        for (int g = 0; g < _groupRows.Length; g++)
        {
            var group = _parquet.OpenRowGroupReader(g);
            if (group.GetStatistics(pte) is not { NullCount: long nulls } stats || nulls < 0 || nulls > _groupRows[g])
            {
                return null;
            }

            long n = _groupRows[g] - nulls;
            samples += n;
            if (n == 0)
            {
                continue;
            }

            if (stats.MaxValue is not long max || group.GetStatistics(pid) is not { MinValue: int low, MaxValue: int high } || high < low)
            {
                return null;
            }

            max = Math.Clamp(max, 0, Cap);
            if (low == high)
            {
                alone[low] = Math.Max(alone.GetValueOrDefault(low), max);
                continue;
            }

            long processes = Math.Min(n, (long)high - low + 1);
            shared = Math.Min(Cap, shared + (max >= Cap / processes ? Cap : max * processes));
        }

        return (Rows - samples, Math.Min(Cap, shared + alone.Values.Sum()));
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
    private static long[] CheckLayout(string path, ParquetReader parquet, long footerStart, out long[][] chunkEnds)
    {
        var meta = parquet.Metadata ?? throw new TraceFormatException($"{path}: no file metadata");
        var groups = meta.RowGroups ?? [];
        var rows = new long[groups.Count];
        chunkEnds = new long[groups.Count][];
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
            chunkEnds[g] = new long[columns.Count];
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
                chunkEnds[g][c] = expect;
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
    internal sealed class DecodedGroup
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

            // Any value but 0 or 1 is corrupt; the first is named. Both scans are vectorised.
            var levels = defs.AsSpan(0, rows);
            int bad = levels.IndexOfAnyExcept(0, 1);
            if (bad >= 0)
            {
                throw new TraceFormatException($"definition level {levels[bad]} at row {bad} of the group");
            }

            _present[i] = levels.Count(1);
            _dirty[i] = true; // the decoder wrote into the value buffer
        }

        /// <summary>The kind of each row (rows of an unknown kind have their error in <see cref="RowError"/>).</summary>
        public TraceEventKind[] Kinds { get; private set; } = [];

        /// <summary>The optional columns present in each row.</summary>
        public TraceFields[] Has { get; private set; } = [];

        private string?[] _errors = [];
        private bool _anyError;
        private readonly Dictionary<string, string> _interned = new(StringComparer.Ordinal);

        /// <summary>Why row <paramref name="r"/> is malformed before any rule of its kind is checked, or null.</summary>
        public string? RowError(int r) => _anyError ? _errors[r] : null;

        /// <summary>The string of column <paramref name="c"/> at row <paramref name="r"/> (expanded, interned), or null.</summary>
        public string? Text(int c, int r) => _text[c] is { } t ? t[r] : null;

        private readonly string?[]?[] _text = new string?[TraceSchema.Columns.Count][];

        /// <summary>
        /// Turns the packed columns into one value per row, in place, maps the kinds and gathers each
        /// row's present columns. A column present in every row stays as decoded; a sparse one (a
        /// syscall's result, the status figures: a few rows in thousands) is scattered to its rows
        /// found by a vectorised scan of the definition levels; a denser one is walked back from the
        /// end (a row's packed index is never above its own, so that overwrites only consumed
        /// values). A column null in every row is cleared only if an earlier group left values in it.
        /// </summary>
        public void Expand()
        {
            int rows = Rows;
            var kinds = Kinds = Grow(ref _kinds, rows);
            var has = Has = Grow(ref _has, rows);
            _errors = Grow(ref _errorSlots, rows);
            _anyError = false;
            Array.Clear(has, 0, rows);
            var kindText = Strings(TraceSchema.Kind);
            TraceEventKind last = default;
            ReadOnlyMemory<char> lastText = default;
            for (int r = 0; r < rows; r++)
            {
                var text = kindText[r];
                // A dictionary-encoded column hands out the same slice for every row of one value:
                // compared as a reference first, as text only when that fails.
                if (r > 0 && (text.Equals(lastText) || text.Span.SequenceEqual(lastText.Span)))
                {
                    kinds[r] = last;
                }
                else if (TraceKinds.TryParse(text.Span, out var k))
                {
                    kinds[r] = last = k;
                    lastText = text;
                }
                else
                {
                    kinds[r] = (TraceEventKind)255;
                    SetError(r, $"unknown kind '{TraceMetadata.Trim(text.ToString())}'");
                }
            }

            var statusCount = Grow(ref _statusCount, rows);
            Array.Clear(statusCount, 0, rows);
            bool anyStatus = false;
            foreach (var c in TraceSchema.Columns)
            {
                if (c.Required)
                {
                    continue;
                }

                int i = c.Index;
                int present = _present[i];
                bool status = c.Field == TraceFields.Status;
                anyStatus |= status && present > 0;
                if (c.Type == ColumnType.String)
                {
                    var full = Grow(ref _textSlots[i], rows);
                    _text[i] = full;
                    if (_textDirty[i])
                    {
                        Array.Clear(full);
                        _textDirty[i] = false;
                    }

                    if (present == 0)
                    {
                        continue;
                    }

                    var packed = _strings[i]!;
                    var levels = _defs[i].AsSpan(0, rows);
                    for (int k = 0, r = 0; k < present; k++, r++)
                    {
                        r += levels[r..].IndexOf(1);
                        full[r] = Intern(packed[k]);
                        has[r] |= c.Field;
                    }

                    _textDirty[i] = true;
                    continue;
                }

                if (present == 0)
                {
                    if (_dirty[i])
                    {
                        if (c.Type == ColumnType.Int64)
                        {
                            Array.Clear(Grow(ref _longs[i], rows));
                        }
                        else
                        {
                            Array.Clear(Grow(ref _ints[i], rows));
                        }

                        _dirty[i] = false;
                    }
                    else if (c.Type == ColumnType.Int64)
                    {
                        Grow(ref _longs[i], rows);
                    }
                    else
                    {
                        Grow(ref _ints[i], rows);
                    }

                    continue;
                }

                var d = _defs[i]!;
                if (present == rows)
                {
                    if (status)
                    {
                        Add(statusCount.AsSpan(0, rows), 1);
                    }
                    else
                    {
                        Or(has.AsSpan(0, rows), c.Field);
                    }
                }
                else if (present <= rows / SparseRatio)
                {
                    if (c.Type == ColumnType.Int64)
                    {
                        Scatter(_longs[i]!, ref _scratchLongs, present, d, rows, has, statusCount, status ? TraceFields.None : c.Field);
                    }
                    else
                    {
                        Scatter(_ints[i]!, ref _scratchInts, present, d, rows, has, statusCount, status ? TraceFields.None : c.Field);
                    }
                }
                else if (c.Type == ColumnType.Int64)
                {
                    WalkBack(_longs[i]!, present, d, rows, has, statusCount, status ? TraceFields.None : c.Field);
                }
                else
                {
                    WalkBack(_ints[i]!, present, d, rows, has, statusCount, status ? TraceFields.None : c.Field);
                }
            }

            if (!anyStatus)
            {
                return;
            }

            var counts = statusCount.AsSpan(0, rows);
            for (int r = counts.IndexOfAnyExcept(0); r >= 0;)
            {
                int n = counts[r];
                if (n == TraceSchema.StatusCount)
                {
                    has[r] |= TraceFields.Status;
                }
                else if (RowError(r) is null)
                {
                    SetError(r, $"{n} of the {TraceSchema.StatusCount} status columns are set (all or none)");
                }

                int next = counts[(r + 1)..].IndexOfAnyExcept(0);
                r = next < 0 ? -1 : r + 1 + next;
            }
        }

        /// <summary>At most one row in this many set: the column is scattered rather than walked back.</summary>
        private const int SparseRatio = 16;

        // A status column counts its rows (all seven or none must be set); any other sets its field.
        private static void Mark(TraceFields[] has, int[] statusCount, int r, TraceFields field)
        {
            if (field == TraceFields.None)
            {
                statusCount[r]++;
            }
            else
            {
                has[r] |= field;
            }
        }

        private static void Scatter<T>(T[] values, ref T[]? scratch, int present, int[] defs, int rows, TraceFields[] has, int[] statusCount, TraceFields field)
            where T : struct
        {
            var copy = Grow(ref scratch, present);
            values.AsSpan(0, present).CopyTo(copy);
            Array.Clear(values, 0, rows);
            var levels = defs.AsSpan(0, rows);
            for (int k = 0, r = 0; k < present; k++, r++)
            {
                r += levels[r..].IndexOf(1);
                values[r] = copy[k];
                Mark(has, statusCount, r, field);
            }
        }

        private static void WalkBack<T>(T[] values, int present, int[] defs, int rows, TraceFields[] has, int[] statusCount, TraceFields field)
            where T : struct
        {
            for (int r = rows - 1, k = present - 1; r >= 0; r--)
            {
                if (defs[r] != 0)
                {
                    values[r] = values[k--];
                    Mark(has, statusCount, r, field);
                }
                else
                {
                    values[r] = default;
                }
            }
        }

        private static void Or(Span<TraceFields> has, TraceFields field)
        {
            foreach (ref var h in has)
            {
                h |= field;
            }
        }

        private static void Add(Span<int> counts, int n)
        {
            foreach (ref int x in counts)
            {
                x += n;
            }
        }

        private void SetError(int r, string error)
        {
            if (!_anyError)
            {
                Array.Clear(_errors, 0, Rows);
                _anyError = true;
            }

            _errors[r] = error;
        }

        // Paths repeat (every fault-around of a library maps it again): keep one string per distinct text.
        private string Intern(ReadOnlyMemory<char> text)
        {
            string s = text.ToString();
            if (_interned.TryGetValue(s, out string? same))
            {
                return same;
            }

            if (_interned.Count < 4096)
            {
                _interned[s] = s;
            }

            return s;
        }

        private TraceEventKind[]? _kinds;
        private TraceFields[]? _has;
        private long[]? _scratchLongs;
        private int[]? _scratchInts;

        // Whether a column's value (or text) buffer may hold anything but zeros (nulls) past what the current group wrote.
        private readonly bool[] _dirty = new bool[TraceSchema.Columns.Count];
        private readonly bool[] _textDirty = new bool[TraceSchema.Columns.Count];
        private string?[]? _errorSlots;
        private int[]? _statusCount;
        private readonly string?[]?[] _textSlots = new string?[TraceSchema.Columns.Count][];

        private static T[] Grow<T>(ref T[]? array, int rows)
        {
            if (array is null || array.Length < rows)
            {
                array = new T[rows];
            }

            return array;
        }
    }
}
