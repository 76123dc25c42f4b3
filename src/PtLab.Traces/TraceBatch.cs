namespace PtLab.Traces;

/// <summary>
/// One row group of a trace, decoded column by column into one value per row, every row already
/// checked: the fast way to consume a trace (<see cref="TraceReader.ReadBatches"/>). Faults, nearly
/// every row of a big trace, are read straight from the columns; any row can be had whole with
/// <see cref="Event"/>. A batch is reused once the enumeration moves on.
/// </summary>
public sealed class TraceBatch
{
    private readonly TraceReader.DecodedGroup _group;

    internal TraceBatch(TraceReader.DecodedGroup group, long firstRow)
    {
        _group = group;
        FirstRow = firstRow;
    }

    /// <summary>The index in the file of the batch's first row.</summary>
    public long FirstRow { get; }

    /// <summary>Rows in the batch.</summary>
    public int Count => _group.Rows;

    /// <summary>Each row's kind.</summary>
    public ReadOnlySpan<TraceEventKind> Kinds => _group.Kinds.AsSpan(0, Count);

    /// <summary>Each row's time.</summary>
    public ReadOnlySpan<long> TimeNs => _group.Longs(TraceSchema.Time).AsSpan(0, Count);

    /// <summary>Each row's pid.</summary>
    public ReadOnlySpan<int> Pids => _group.Ints(TraceSchema.Pid).AsSpan(0, Count);

    /// <summary>Each row's tid.</summary>
    public ReadOnlySpan<int> Tids => _group.Ints(TraceSchema.Tid).AsSpan(0, Count);

    /// <summary>Each row's address (0 where null).</summary>
    public ReadOnlySpan<long> Addresses => _group.Longs(TraceSchema.Address).AsSpan(0, Count);

    /// <summary>Each row's flags, a fault's error code among them (0 where null).</summary>
    public ReadOnlySpan<long> Flags => _group.Longs(TraceSchema.Flags).AsSpan(0, Count);

    /// <summary>Row <paramref name="r"/> whole.</summary>
    public TraceEvent Event(int r)
    {
        var g = _group;
        return new TraceEvent
        {
            TimeNs = g.Longs(TraceSchema.Time)[r],
            Pid = g.Ints(TraceSchema.Pid)[r],
            Tid = g.Ints(TraceSchema.Tid)[r],
            Kind = g.Kinds[r],
            Has = g.Has[r],
            Address = (ulong)g.Longs(TraceSchema.Address)[r],
            Length = (ulong)g.Longs(TraceSchema.Length)[r],
            Prot = g.Ints(TraceSchema.Prot)[r],
            Flags = (ulong)g.Longs(TraceSchema.Flags)[r],
            Fd = g.Ints(TraceSchema.Fd)[r],
            Offset = (ulong)g.Longs(TraceSchema.Offset)[r],
            NewAddress = (ulong)g.Longs(TraceSchema.NewAddress)[r],
            NewLength = (ulong)g.Longs(TraceSchema.NewLength)[r],
            Result = g.Longs(TraceSchema.Result)[r],
            DurationNs = g.Longs(TraceSchema.Duration)[r],
            Ip = (ulong)g.Longs(TraceSchema.Ip)[r],
            Dev = g.Text(TraceSchema.Dev, r),
            Inode = (ulong)g.Longs(TraceSchema.Inode)[r],
            Path = g.Text(TraceSchema.Path, r),
            Status = (g.Has[r] & TraceFields.Status) == 0 ? default : new StatusFigures(
                g.Longs(TraceSchema.FirstStatus)[r], g.Longs(TraceSchema.FirstStatus + 1)[r], g.Longs(TraceSchema.FirstStatus + 2)[r],
                g.Longs(TraceSchema.FirstStatus + 3)[r], g.Longs(TraceSchema.FirstStatus + 4)[r], g.Longs(TraceSchema.FirstStatus + 5)[r],
                g.Longs(TraceSchema.FirstStatus + 6)[r]),
        };
    }
}
