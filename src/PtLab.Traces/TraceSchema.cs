using Parquet.Schema;

namespace PtLab.Traces;

/// <summary>The physical type of a column.</summary>
internal enum ColumnType
{
    Int32,
    Int64,
    String,
}

/// <summary>One column of the events table: its name, type, and the field of <see cref="TraceEvent"/> it holds.</summary>
internal sealed record TraceColumn(int Index, string Name, ColumnType Type, TraceFields Field)
{
    /// <summary>Time, pid, tid and kind are never null; every other column is null where its kind does not use it.</summary>
    public bool Required => Field == TraceFields.None;

    public DataField DataField { get; } = Type switch
    {
        ColumnType.Int32 => new DataField(Name, typeof(int), Field != TraceFields.None),
        ColumnType.Int64 => new DataField(Name, typeof(long), Field != TraceFields.None),
        _ => new DataField(Name, typeof(string), Field != TraceFields.None),
    };
}

/// <summary>
/// The trace file's schema, version 8: one flat Parquet table, one row per event, sorted by time.
/// docs/trace-format.md is its description; a change to a name, type or meaning is a new version.
/// Version 2 added the <c>madvise_range</c> kind and the process_madvise_ranges key; version 3
/// the <c>ptlab.fs.*</c> keys (the file systems of the mapped files); version 4 the
/// <c>file_cache</c> and <c>cache_range</c> kinds (the page-cache residency of each mapped file
/// when it first appeared) and the page_cache key; version 5 the <c>signal</c> kind (the SIGSEGV
/// and SIGBUS the kernel answered faults with), the <c>cache_add</c> and <c>cache_delete</c> kinds
/// (the page-cache changes after a file first appeared) and the page_cache_changes and
/// folio_orders keys; version 6 the <c>resident</c> and <c>page_tables</c> kinds (an attached
/// recording's pages and PTE tables at the moment of its layout); version 7 the <c>mseal</c> kind; version 8 the <c>vma_sealed</c> kind (a range of the initial layout sealed before it was read). Older files are read as they are (they have none of these).
/// </summary>
internal static class TraceSchema
{
    public const int Version = 8;

    /// <summary>The oldest version this reader reads.</summary>
    public const int MinVersion = 1;

    public const int Time = 0;
    public const int Pid = 1;
    public const int Tid = 2;
    public const int Kind = 3;
    public const int Address = 4;
    public const int Length = 5;
    public const int Prot = 6;
    public const int Flags = 7;
    public const int Fd = 8;
    public const int Offset = 9;
    public const int NewAddress = 10;
    public const int NewLength = 11;
    public const int Result = 12;
    public const int Duration = 13;
    public const int Ip = 14;
    public const int Dev = 15;
    public const int Inode = 16;
    public const int Path = 17;
    public const int FirstStatus = 18;
    public const int StatusCount = 7;

    public static IReadOnlyList<TraceColumn> Columns { get; } =
    [
        new(Time, "time_ns", ColumnType.Int64, TraceFields.None),
        new(Pid, "pid", ColumnType.Int32, TraceFields.None),
        new(Tid, "tid", ColumnType.Int32, TraceFields.None),
        new(Kind, "kind", ColumnType.String, TraceFields.None),
        new(Address, "address", ColumnType.Int64, TraceFields.Address),
        new(Length, "length", ColumnType.Int64, TraceFields.Length),
        new(Prot, "prot", ColumnType.Int32, TraceFields.Prot),
        new(Flags, "flags", ColumnType.Int64, TraceFields.Flags),
        new(Fd, "fd", ColumnType.Int32, TraceFields.Fd),
        new(Offset, "offset", ColumnType.Int64, TraceFields.Offset),
        new(NewAddress, "new_address", ColumnType.Int64, TraceFields.NewAddress),
        new(NewLength, "new_length", ColumnType.Int64, TraceFields.NewLength),
        new(Result, "result", ColumnType.Int64, TraceFields.Result),
        new(Duration, "duration_ns", ColumnType.Int64, TraceFields.Duration),
        new(Ip, "ip", ColumnType.Int64, TraceFields.Ip),
        new(Dev, "dev", ColumnType.String, TraceFields.Dev),
        new(Inode, "inode", ColumnType.Int64, TraceFields.Inode),
        new(Path, "path", ColumnType.String, TraceFields.Path),
        new(FirstStatus, "vm_size_kb", ColumnType.Int64, TraceFields.Status),
        new(FirstStatus + 1, "vm_rss_kb", ColumnType.Int64, TraceFields.Status),
        new(FirstStatus + 2, "rss_anon_kb", ColumnType.Int64, TraceFields.Status),
        new(FirstStatus + 3, "rss_file_kb", ColumnType.Int64, TraceFields.Status),
        new(FirstStatus + 4, "rss_shmem_kb", ColumnType.Int64, TraceFields.Status),
        new(FirstStatus + 5, "vm_swap_kb", ColumnType.Int64, TraceFields.Status),
        new(FirstStatus + 6, "vm_pte_kb", ColumnType.Int64, TraceFields.Status),
    ];

    public static ParquetSchema Parquet { get; } = new(Columns.Select(c => (Field)c.DataField));

    /// <summary>Rows per row group: the unit the reader decodes at once (bounded memory for any trace length).</summary>
    public const int RowGroupRows = 1 << 16;

    /// <summary>The most rows a row group may declare (a reader refuses larger ones before allocating).</summary>
    public const int MaxRowGroupRows = 1 << 20;
}

/// <summary>The key-value metadata keys of the Parquet footer.</summary>
internal static class TraceKeys
{
    public const string Version = "ptlab.trace.version";
    public const string Checksum = "ptlab.trace.xxh3";
    public const string Rows = "ptlab.trace.rows";
    public const string Truncated = "ptlab.trace.truncated";
    public const string Incomplete = "ptlab.trace.incomplete";
    public const string LostEvents = "ptlab.trace.lost_events";
    public const string Source = "ptlab.trace.source";
    public const string Command = "ptlab.trace.command";
    public const string RootPid = "ptlab.trace.root_pid";
    public const string ExitStatus = "ptlab.trace.exit_status";
    public const string IntervalMs = "ptlab.trace.interval_ms";
    public const string ProcessMadviseRanges = "ptlab.trace.process_madvise_ranges";
    public const string PageCache = "ptlab.trace.page_cache";
    public const string PageCacheChanges = "ptlab.trace.page_cache_changes";
    public const string FolioOrders = "ptlab.trace.folio_orders";
    public const string HostPrefix = "ptlab.host.";
    public const string NotePrefix = "ptlab.note.";
    public const string FsPrefix = "ptlab.fs.";
}
