using Parquet;

namespace PtLab.Traces;

/// <summary>
/// One row group's columns in memory: for each nullable column its non-null values packed and
/// one definition level (1 present, 0 null) per row, as Parquet stores them.
/// </summary>
internal sealed class ColumnBuffers
{
    private readonly long[][] _longs;
    private readonly int[][] _ints;
    private readonly string?[][] _strings;
    private readonly int[][] _defs;
    private readonly int[] _counts;

    private readonly int _maxRows;
    private int _capacity;

    /// <summary>Buffers for up to <paramref name="maxRows"/> rows, grown as rows come (a short trace stays small).</summary>
    public ColumnBuffers(int maxRows)
    {
        _maxRows = maxRows;
        int capacity = _capacity = Math.Min(maxRows, 1024);
        int n = TraceSchema.Columns.Count;
        _longs = new long[n][];
        _ints = new int[n][];
        _strings = new string?[n][];
        _defs = new int[n][];
        _counts = new int[n];
        foreach (var c in TraceSchema.Columns)
        {
            switch (c.Type)
            {
                case ColumnType.Int64: _longs[c.Index] = new long[capacity]; break;
                case ColumnType.Int32: _ints[c.Index] = new int[capacity]; break;
                default: _strings[c.Index] = new string?[capacity]; break;
            }

            _defs[c.Index] = new int[capacity];
        }
    }

    public int Rows { get; private set; }

    public void Clear()
    {
        Rows = 0;
        Array.Clear(_counts);
        foreach (var s in _strings)
        {
            if (s is not null)
            {
                Array.Clear(s);
            }
        }
    }

    private void Grow()
    {
        int capacity = Math.Min(_maxRows, _capacity * 2);
        foreach (var c in TraceSchema.Columns)
        {
            int i = c.Index;
            switch (c.Type)
            {
                case ColumnType.Int64: Array.Resize(ref _longs[i], capacity); break;
                case ColumnType.Int32: Array.Resize(ref _ints[i], capacity); break;
                default: Array.Resize(ref _strings[i], capacity); break;
            }

            Array.Resize(ref _defs[i], capacity);
        }

        _capacity = capacity;
    }

    public void Add(in TraceEvent e)
    {
        if (Rows == _capacity)
        {
            Grow();
        }

        int row = Rows++;
        Long(TraceSchema.Time, row, true, e.TimeNs);
        Int(TraceSchema.Pid, row, true, e.Pid);
        Int(TraceSchema.Tid, row, true, e.Tid);
        _strings[TraceSchema.Kind][row] = (int)e.Kind < TraceKinds.Count ? TraceKinds.Name(e.Kind) : "kind" + ((int)e.Kind).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var has = e.Has;
        Long(TraceSchema.Address, row, (has & TraceFields.Address) != 0, (long)e.Address);
        Long(TraceSchema.Length, row, (has & TraceFields.Length) != 0, (long)e.Length);
        Int(TraceSchema.Prot, row, (has & TraceFields.Prot) != 0, e.Prot);
        Long(TraceSchema.Flags, row, (has & TraceFields.Flags) != 0, (long)e.Flags);
        Int(TraceSchema.Fd, row, (has & TraceFields.Fd) != 0, e.Fd);
        Long(TraceSchema.Offset, row, (has & TraceFields.Offset) != 0, (long)e.Offset);
        Long(TraceSchema.NewAddress, row, (has & TraceFields.NewAddress) != 0, (long)e.NewAddress);
        Long(TraceSchema.NewLength, row, (has & TraceFields.NewLength) != 0, (long)e.NewLength);
        Long(TraceSchema.Result, row, (has & TraceFields.Result) != 0, e.Result);
        Long(TraceSchema.Duration, row, (has & TraceFields.Duration) != 0, e.DurationNs);
        Long(TraceSchema.Ip, row, (has & TraceFields.Ip) != 0, (long)e.Ip);
        _strings[TraceSchema.Dev][row] = (has & TraceFields.Dev) != 0 ? e.Dev ?? "" : null;
        Long(TraceSchema.Inode, row, (has & TraceFields.Inode) != 0, (long)e.Inode);
        _strings[TraceSchema.Path][row] = (has & TraceFields.Path) != 0 ? e.Path ?? "" : null;
        bool status = (has & TraceFields.Status) != 0;
        var s = e.Status;
        Long(TraceSchema.FirstStatus, row, status, s.VmSizeKb);
        Long(TraceSchema.FirstStatus + 1, row, status, s.VmRssKb);
        Long(TraceSchema.FirstStatus + 2, row, status, s.RssAnonKb);
        Long(TraceSchema.FirstStatus + 3, row, status, s.RssFileKb);
        Long(TraceSchema.FirstStatus + 4, row, status, s.RssShmemKb);
        Long(TraceSchema.FirstStatus + 5, row, status, s.VmSwapKb);
        Long(TraceSchema.FirstStatus + 6, row, status, s.VmPteKb);
    }

    private void Long(int column, int row, bool present, long value)
    {
        _defs[column][row] = present ? 1 : 0;
        if (present)
        {
            _longs[column][_counts[column]++] = value;
        }
    }

    private void Int(int column, int row, bool present, int value)
    {
        _defs[column][row] = present ? 1 : 0;
        if (present)
        {
            _ints[column][_counts[column]++] = value;
        }
    }

    public void WriteTo(ParquetRowGroupWriter group)
    {
        int rows = Rows;
        foreach (var c in TraceSchema.Columns)
        {
            int i = c.Index;
            var field = c.DataField;
            switch (c.Type)
            {
                case ColumnType.String:
                    TraceWriter.Sync(group.WriteAsync(field, new ArraySegment<string>(_strings[i]!, 0, rows)!, null));
                    break;
                case ColumnType.Int64 when c.Required:
                    TraceWriter.Sync(group.WriteAsync<long>(field, _longs[i].AsMemory(0, rows), null, null, default));
                    break;
                case ColumnType.Int32 when c.Required:
                    TraceWriter.Sync(group.WriteAsync<int>(field, _ints[i].AsMemory(0, rows), null, null, default));
                    break;
                case ColumnType.Int64:
                    TraceWriter.Sync(group.WriteAllPartsAsync<long>(field, _longs[i].AsMemory(0, _counts[i]), _defs[i].AsMemory(0, rows), null, default));
                    break;
                default:
                    TraceWriter.Sync(group.WriteAllPartsAsync<int>(field, _ints[i].AsMemory(0, _counts[i]), _defs[i].AsMemory(0, rows), null, default));
                    break;
            }
        }
    }
}
