namespace PtLab.Traces.Tests;

/// <summary>The page-cache residency of mapped files in a trace: file_cache rows and the cache_range rows after them (format 4), and the changes after (cache_add, cache_delete: format 5).</summary>
public sealed class PageCacheTraceTests : TempDir
{
    private static readonly TraceEvent Root = TraceEvent.Create(TraceEventKind.Task, 100, 7, 7) with { Path = "prog" };

    /// <summary>A file of <paramref name="size"/> bytes announcing <paramref name="runs"/> runs.</summary>
    private static TraceEvent File(long t, ulong size, long runs, string dev = "fe:00", ulong inode = 42) =>
        TraceEvent.Create(TraceEventKind.FileCache, t, 7, 7) with { Length = size, Dev = dev, Inode = inode, Result = runs };

    private static TraceEvent Run(long t, ulong offset, ulong length, int? order = null, string dev = "fe:00", ulong inode = 42)
    {
        var e = TraceEvent.Create(TraceEventKind.CacheRange, t, 7, 7) with { Offset = offset, Length = length, Dev = dev, Inode = inode };
        return order is { } o ? e with { Flags = (ulong)o, Has = e.Has | TraceFields.Flags } : e;
    }

    [Fact]
    public void AFilesResidencyRoundTripsRightAfterItsAnnouncement()
    {
        var named = File(101, 5 * 4096 + 100, 2);
        var rows = new List<TraceEvent>
        {
            Root,
            named with { Path = "/usr/lib/libc.so.6", Has = named.Has | TraceFields.Path },
            Run(101, 0, 4096),
            Run(101, 4 * 4096, 2 * 4096, order: 1), // the last page is partial: the run covers it whole
            File(102, 0, 0, inode: 43),             // an empty file, nothing cached
            TraceEvent.Fault(103, 7, 7, 0x1000, 4, 0x400000),
        };
        using var r = TraceReader.Open(Write(rows, SyntheticTrace.Metadata() with { PageCache = TraceMetadata.PageCacheMapped }));
        Assert.Equal(8, r.Metadata.Version);
        Assert.Equal(TraceMetadata.PageCacheMapped, r.Metadata.PageCache);
        var read = r.ReadEvents().ToList();
        Assert.Equal(rows, read);
        Assert.Equal("/usr/lib/libc.so.6", read[1].Path);
        Assert.False(read[2].Is(TraceFields.Flags));
        Assert.Equal(1UL, read[3].Flags);
    }

    [Fact]
    public void AVersionThreeTraceIsReadWithNoResidency()
    {
        var rows = SyntheticTrace.Events(100).ToList();
        string path = Path.Combine(Dir, "v3.parquet");
        using (var w = TraceWriter.Create(path))
        {
            foreach (var e in rows)
            {
                w.Append(e);
            }

            w.OverrideKeyValues = new() { ["ptlab.trace.version"] = "3" };
            w.DropKeys = ["ptlab.trace.page_cache"];
            w.Complete(SyntheticTrace.Metadata() with { PageCache = TraceMetadata.PageCacheMapped });
        }

        using var r = TraceReader.Open(path);
        Assert.Equal(3, r.Metadata.Version);
        Assert.Equal(TraceMetadata.PageCacheNone, r.Metadata.PageCache);
        Assert.Equal(rows, r.ReadEvents().ToList());
    }

    [Theory]
    [InlineData("warm", "not mapped, layout or none")]
    [InlineData("", "not mapped, layout or none")]
    public void ABadPageCacheKeyIsRejectedNamingIt(string value, string expected)
    {
        var e = ReadFails(WriteUnchecked([Root], keys: new() { ["ptlab.trace.page_cache"] = value }));
        Assert.Contains("ptlab.trace.page_cache", e.Message);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>A trace of this version without one of the keys that say what its page-cache rows cover (required from version 4 and 5).</summary>
    [Theory]
    [InlineData("ptlab.trace.page_cache")]
    [InlineData("ptlab.trace.page_cache_changes")]
    public void ATraceWithoutAPageCacheKeyIsRejectedNamingIt(string key)
    {
        string path = Path.Combine(Dir, "nokey.parquet");
        using (var w = TraceWriter.Create(path))
        {
            w.Append(Root);
            w.DropKeys = [key];
            w.Complete(SyntheticTrace.Metadata());
        }

        Assert.Contains($"'{key}'", ReadFails(path).Message);
    }

    public static TheoryData<string, TraceEvent[]> BadRows => new()
    {
        { "cache_range row with no file_cache row announcing it", [Root, Run(101, 0, 4096)] },
        { "where 1 more cache_range rows of the file_cache row of tid 7 must come", [Root, File(101, 8192, 2), Run(101, 0, 4096), TraceEvent.Fault(101, 7, 7, 0x1000, 6, 1)] },
        { "where 1 more cache_range rows", [Root, File(101, 8192, 1), Run(102, 0, 4096)] },
        { "names file fe:00 43, not the file_cache row's fe:00 42", [Root, File(101, 8192, 1), Run(101, 0, 4096, inode: 43)] },
        { "runs must be whole pages", [Root, File(101, 8192, 1), Run(101, 100, 4096)] },
        { "runs must be whole pages", [Root, File(101, 8192, 1), Run(101, 0, 5000)] },
        { "runs must be whole pages", [Root, File(101, 8192, 1), Run(101, 0, 0)] },
        { "runs must be whole pages", [Root, File(101, 8192, 1), Run(101, 4096, 8192)] },
        { "runs must be whole pages", [Root, File(101, 16384, 2), Run(101, 4096, 8192), Run(101, 8192, 4096)] },
        { "has folio order 1", [Root, File(101, 16384, 1), Run(101, 4096, 8192, order: 1)] },
        { "has folio order 21", [Root, File(101, 16384, 1), Run(101, 0, 4096, order: 21)] },
        { "announces 3 cache_range rows for a file of 8192 bytes", [Root, File(101, 8192, 3)] },
        { "announces -1 cache_range rows", [Root, File(101, 8192, -1)] },
        { "gives the file a size of", [Root, File(101, ulong.MaxValue, 0)] },
        { "must be hex major:minor", [Root, File(101, 8192, 0, dev: "sda")] },
        { "unknown task: pid 8", [Root, File(101, 8192, 0) with { Pid = 8, Tid = 8 }] },
        { "file_cache row has no result", [Root, File(101, 8192, 0) with { Has = TraceFields.Length | TraceFields.Dev | TraceFields.Inode }] },
        { "cache_add row has a pid or tid (both must be 0", [Root, Change(101, true, 0) with { Pid = 7, Tid = 7 }] },
        { "cache_delete row has a pid or tid", [Root, Change(101, false, 0) with { Tid = 7 }] },
        { "cache_add row has folio order 21", [Root, Change(101, true, 0, order: 21)] },
        { "cache_add row has a folio of order 2 at offset 0x1000 (must be aligned to its 16384 bytes", [Root, Change(101, true, 0x1000, order: 2)] },
        { "cache_delete row has a folio of order 0 at offset 0x123", [Root, Change(101, false, 0x123)] },
        { "below 2^63", [Root, Change(101, true, 0xffff_ffff_ffff_f000)] },
        { "cache_add row has dev 'sda1' (must be hex major:minor)", [Root, Change(101, true, 0, dev: "sda1")] },
        { "cache_add row names process -1", [Root, Change(101, true, 0, context: -1)] },
        { "cache_add row has no result", [Root, Change(101, true, 0) with { Has = TraceFields.Offset | TraceFields.Flags | TraceFields.Dev | TraceFields.Inode }] },
        { "cache_delete row has no flags", [Root, Change(101, false, 0) with { Has = TraceFields.Offset | TraceFields.Result | TraceFields.Dev | TraceFields.Inode }] },
        { "which a cache_add row does not carry", [Root, Change(101, true, 0) with { Length = 4096, Has = TraceKinds.Fields(TraceEventKind.CacheAdd).Required | TraceFields.Length }] },
        { "before the previous row", [Root, Change(99, true, 0)] },
        { "where 1 more cache_range rows of the file_cache row of tid 7 must come", [Root, File(101, 8192, 1), Change(101, true, 0)] },
        { "which a cache_range row does not carry", [Root, File(101, 8192, 1), Run(101, 0, 4096) with { Has = TraceFields.Offset | TraceFields.Length | TraceFields.Dev | TraceFields.Inode | TraceFields.Prot }] },
    };

    [Theory]
    [MemberData(nameof(BadRows))]
    public void ABadResidencyIsRejectedNamingTheFileAndTheRow(string expected, TraceEvent[] rows)
    {
        string path = WriteUnchecked(rows);
        var e = ReadFails(path);
        Assert.StartsWith($"{path}: row {rows.Length - 1}: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>A folio added to (or deleted from) the cache of file <paramref name="inode"/>: a row of no task.</summary>
    private static TraceEvent Change(long t, bool add, ulong offset, int order = 0, string dev = "fe:00", ulong inode = 42, long context = 7) =>
        TraceEvent.Create(add ? TraceEventKind.CacheAdd : TraceEventKind.CacheDelete, t, 0, 0) with { Offset = offset, Flags = (ulong)order, Dev = dev, Inode = inode, Result = context };

    [Fact]
    public void PageCacheChangesRoundTripAsRowsOfNoTaskAndAreCounted()
    {
        var rows = new List<TraceEvent>
        {
            Root,
            File(101, 1 << 20, 1),
            Run(101, 0, 4096),
            Change(102, add: true, offset: 16 << 12, order: 4),          // a readahead folio of 16 pages
            Change(103, add: true, offset: 0x200000, order: 9, context: 0), // a PMD-sized folio, by a kernel thread
            TraceEvent.Fault(104, 7, 7, 0x1000, 4, 0x400000),
            Change(105, add: false, offset: 16 << 12, order: 4, context: 9999), // another process dropped it
            Change(105, add: false, offset: 0, dev: "00:2f", inode: 42),    // an overlay's layer names the file otherwise
        };
        string path = Write(rows, SyntheticTrace.Metadata() with { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded, FolioOrders = false });
        using var r = TraceReader.Open(path);
        Assert.Equal(8, r.Metadata.Version);
        Assert.Equal(TraceMetadata.PageCacheChangesRecorded, r.Metadata.PageCacheChanges);
        Assert.False(r.Metadata.FolioOrders);
        Assert.Equal(rows, r.ReadEvents().ToList());

        using var again = TraceReader.Open(path);
        var summary = TraceSummary.Compute(again);
        Assert.Equal(2, summary.Counts[(int)TraceEventKind.CacheAdd]);
        Assert.Equal(2, summary.Counts[(int)TraceEventKind.CacheDelete]);
        Assert.Equal(1 + 16 + 512, summary.CachedPages);
        Assert.Equal([7], summary.Processes.Select(p => p.Pid));
    }

    [Fact]
    public void AVersionFourTraceIsReadWithNoPageCacheChanges()
    {
        string path = Path.Combine(Dir, "v4.parquet");
        var rows = new List<TraceEvent> { Root, File(101, 8192, 1), Run(101, 0, 4096) };
        using (var w = TraceWriter.Create(path))
        {
            foreach (var e in rows)
            {
                w.Append(e);
            }

            w.OverrideKeyValues = new() { ["ptlab.trace.version"] = "4" };
            w.DropKeys = ["ptlab.trace.page_cache_changes"];
            w.Complete(SyntheticTrace.Metadata() with { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded });
        }

        using var r = TraceReader.Open(path);
        Assert.Equal(4, r.Metadata.Version);
        Assert.Equal(TraceMetadata.PageCacheChangesNone, r.Metadata.PageCacheChanges);
        Assert.Null(r.Metadata.FolioOrders);
        Assert.Equal(rows, r.ReadEvents().ToList());
    }

    [Theory]
    [InlineData("ptlab.trace.page_cache_changes", "some", "not recorded or none")]
    [InlineData("ptlab.trace.folio_orders", "yes", "not true or false")]
    public void ABadPageCacheChangesKeyIsRejectedNamingIt(string key, string value, string expected)
    {
        var e = ReadFails(WriteUnchecked([Root], keys: new() { [key] = value }));
        Assert.Contains(key, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void AResidencyCutShortAtTheEndIsRejected()
    {
        string path = WriteUnchecked([Root, File(101, 16384, 2), Run(101, 0, 4096)]);
        Assert.Contains("cache_range rows short of what the file_cache row of tid 7 announced", ReadFails(path).Message);
        using var w = TraceWriter.Create(Path.Combine(Dir, "short.parquet"));
        w.Append(Root);
        w.Append(File(101, 16384, 1));
        Assert.Contains("truncated residency", Assert.Throws<TraceFormatException>(() => w.Complete(SyntheticTrace.Metadata())).Message);
    }
}
