namespace PtLab.Traces.Tests;

/// <summary>The page-cache residency of mapped files in a trace: file_cache rows and the cache_range rows after them (format 4).</summary>
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
        Assert.Equal(5, r.Metadata.Version);
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

    [Fact]
    public void AVersionFourTraceWithoutThePageCacheKeyIsRejected()
    {
        string path = Path.Combine(Dir, "nokey.parquet");
        using (var w = TraceWriter.Create(path))
        {
            w.Append(Root);
            w.DropKeys = ["ptlab.trace.page_cache"];
            w.Complete(SyntheticTrace.Metadata());
        }

        Assert.Contains("ptlab.trace.page_cache", ReadFails(path).Message);
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
