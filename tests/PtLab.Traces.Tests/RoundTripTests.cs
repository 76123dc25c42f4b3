namespace PtLab.Traces.Tests;

public sealed class RoundTripTests : TempDir
{
    [Fact]
    public void ATraceReadsBackRowForRowWithItsMetadata()
    {
        var written = SyntheticTrace.Events(150_000, seed: 3, threads: 3).ToList();
        string path = Write(written);
        using var r = TraceReader.Open(path);
        Assert.Equal(written.Count, r.Rows);
        Assert.Equal(["synthetic", "cover"], r.Metadata.Command);
        Assert.Equal("6.18.0-synthetic", r.Metadata.Host[HostFacts.KernelRelease]);
        Assert.Equal(50, r.Metadata.IntervalMs);
        Assert.False(r.Metadata.Truncated);
        AssertReadsBack(r, written);
    }

    [Fact]
    public void FlagsLostEventsAndUnfinishedSyscallsOfATruncatedTraceRoundTrip()
    {
        long t = 1000;
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, t, 7, 7) with { Path = "x" },
            TraceEvent.Create(TraceEventKind.Lost, t + 1, 0, 0) with { Length = 12 },
            TraceEvent.Fault(t + 2, 7, 8, 0x1000, 6, 0x400000), // a thread whose creation was lost
            TraceEvent.Create(TraceEventKind.Madvise, t + 3, 7, 7) with { Address = 0x1000, Length = 0x1000, Prot = 4 }, // never returned
        };
        var meta = SyntheticTrace.Metadata(truncated: true) with { Incomplete = true, LostEvents = 12 };
        using var r = TraceReader.Open(Write(rows, meta));
        Assert.True(r.Metadata.Truncated);
        Assert.True(r.Metadata.Incomplete);
        Assert.Equal(12, r.Metadata.LostEvents);
        var read = r.ReadEvents().ToList();
        Assert.Equal(rows, read);
        Assert.False(read[3].HasResult);
    }

    [Fact]
    public void ProcessMadviseRangesRoundTripRightBeforeTheirCall()
    {
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, 1000, 7, 7) with { Path = "x" },
            TraceEvent.Create(TraceEventKind.MadviseRange, 1002, 7, 7) with { Address = 0x7f0000000000, Length = 0x200000, Result = 9 },
            TraceEvent.Create(TraceEventKind.MadviseRange, 1002, 7, 7) with { Address = 0x7f0000400000, Length = 5000, Result = 9 },
            (TraceEvent.Create(TraceEventKind.ProcessMadvise, 1002, 7, 7) with { Fd = 3, Address = 0x7ffd0000, Length = 2, Prot = 21 }).Returned(0x200000 + 5000, 2),
            TraceEvent.Fault(1003, 7, 7, 0x7f0000000000, 6, 0x400000),
        };
        using var r = TraceReader.Open(Write(rows, SyntheticTrace.Metadata() with { ProcessMadviseRanges = true }));
        Assert.True(r.Metadata.ProcessMadviseRanges);
        Assert.Equal(8, r.Metadata.Version);
        Assert.Equal(rows, r.ReadEvents().ToList());
    }

    [Fact]
    public void AVersionOneTraceIsReadWithoutRanges()
    {
        var rows = SyntheticTrace.Events(1000).ToList();

        // What a version 1 writer wrote: its version, and no process_madvise_ranges key.
        string path = WriteAsVersion(rows, 1, SyntheticTrace.Metadata() with { ProcessMadviseRanges = true }, "ptlab.trace.process_madvise_ranges");
        using var r = TraceReader.Open(path);
        Assert.Equal(1, r.Metadata.Version);
        Assert.False(r.Metadata.ProcessMadviseRanges);
        Assert.Equal(rows, r.ReadEvents().ToList());
    }

    [Fact]
    public void TheFileSystemsOfMappedFilesRoundTrip()
    {
        var fs = new Dictionary<DeviceNumber, FileSystemFact>
        {
            [new DeviceNumber(0xfe, 0)] = new("ext4", "rw,discard", 128),
            [new DeviceNumber(0, 0x1b)] = new("tmpfs", "rw,size=1024k,huge=within_size", null),
        };
        using var r = TraceReader.Open(Write(SyntheticTrace.Events(100).ToList(), SyntheticTrace.Metadata() with { FileSystems = fs }));
        Assert.Equal(8, r.Metadata.Version);
        Assert.Equal(fs, r.Metadata.FileSystems);
        Assert.True(DeviceNumber.TryParse("fe:00", out var dev) && r.Metadata.FileSystems.ContainsKey(dev)); // the dev column's form
    }

    [Fact]
    public void AVersionTwoTraceIsReadWithoutFileSystems()
    {
        var rows = SyntheticTrace.Events(100).ToList();
        using var r = TraceReader.Open(WriteAsVersion(rows, 2, SyntheticTrace.Metadata()));
        Assert.Equal(2, r.Metadata.Version);
        Assert.Empty(r.Metadata.FileSystems);
        Assert.Equal(rows, r.ReadEvents().ToList());
    }

    /// <summary>A trace as an older writer wrote it: its version in the metadata, the keys it did not have left out.</summary>
    private string WriteAsVersion(List<TraceEvent> rows, int version, TraceMetadata metadata, params string[] dropKeys)
    {
        string path = Path.Combine(Dir, $"v{version}.parquet");
        using var w = TraceWriter.Create(path);
        foreach (var e in rows)
        {
            w.Append(e);
        }

        w.OverrideKeyValues = new() { ["ptlab.trace.version"] = version.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        w.DropKeys = dropKeys;
        w.Complete(metadata);
        return path;
    }

    [Fact]
    public void TheWriterRefusesATraceWhoseFlagsDoNotCoverItsRows()
    {
        using var w = TraceWriter.Create(Path.Combine(Dir, "x.parquet"));
        w.Append(TraceEvent.Create(TraceEventKind.Task, 1, 7, 7) with { Path = "x" });
        w.Append(TraceEvent.Create(TraceEventKind.Lost, 2, 0, 0) with { Length = 3 });
        var e = Assert.Throws<TraceFormatException>(() => w.Complete(SyntheticTrace.Metadata()));
        Assert.Contains("lost", e.Message);
        Assert.False(File.Exists(Path.Combine(Dir, "x.parquet")));
    }

    [Fact]
    public void AFaultHeavyTraceTakesAtMostSixteenBytesPerEvent()
    {
        string path = Write(SyntheticTrace.Events(200_000));
        double perEvent = (double)new FileInfo(path).Length / 200_000;
        Assert.True(perEvent <= 16, $"{perEvent:F2} bytes per event");
    }
}
