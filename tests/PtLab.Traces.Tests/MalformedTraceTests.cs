namespace PtLab.Traces.Tests;

public sealed class MalformedTraceTests : TempDir
{
    private static readonly TraceEvent Root = TraceEvent.Create(TraceEventKind.Task, 100, 7, 7) with { Path = "prog" };

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(100)]
    [InlineData(-9)]
    [InlineData(-1)]
    public void ATruncatedFileIsRejectedNamingIt(int keep)
    {
        string path = Write(SyntheticTrace.Events(2000));
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(keep >= 0 ? keep : bytes.Length + keep)]);
        var e = ReadFails(path);
        Assert.StartsWith(path + ":", e.Message);
    }

    [Fact]
    public void ADirectoryIsRejectedAsNotATraceFile()
    {
        var e = ReadFails(Dir);
        Assert.Equal($"{Dir}: a directory, not a trace file", e.Message);
    }

    [Fact]
    public void ACorruptByteInTheDataFailsTheChecksum()
    {
        string path = Write(SyntheticTrace.Events(2000));
        byte[] bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 3] ^= 0x10;
        File.WriteAllBytes(path, bytes);
        Assert.Contains("checksum mismatch", ReadFails(path).Message);
    }

    [Fact]
    public void AnotherVersionIsRejectedWithTheVersionsNamed()
    {
        string path = WriteUnchecked([Root], keys: new() { ["ptlab.trace.version"] = "9" });
        var e = ReadFails(path);
        Assert.Contains("version '9'", e.Message);
        Assert.Contains("reads versions 1 to 8", e.Message);
    }

    [Theory]
    [InlineData("ptlab.fs.zz.type", "ext4", "not ptlab.fs.MAJ:MIN.FIELD")]
    [InlineData("ptlab.fs.fe:00.type", "ext 4", "not a file system type")]
    [InlineData("ptlab.fs.fe:00.colour", "blue", "not a file system type")]
    [InlineData("ptlab.fs.fe:00.read_ahead_kb", "-1", "not a file system type")]
    [InlineData("ptlab.fs.fe:00.options", "rw", "has no type")]
    public void ABadFileSystemFactIsRejectedNamingTheKey(string key, string value, string expected)
    {
        var e = ReadFails(WriteUnchecked([Root], keys: new() { [key] = value }));
        Assert.Contains(expected, e.Message);
        Assert.Contains("ptlab.fs.", e.Message);
    }

    [Fact]
    public void AParquetFileWithoutPtLabMetadataIsNotATrace()
    {
        string path = WriteUnchecked([Root], keys: new() { ["ptlab.trace.version"] = "" });
        Assert.Contains("version", ReadFails(path).Message);
    }

    public static TheoryData<string, TraceEvent[]> BadRows => new()
    {
        { "before the previous row", [Root, TraceEvent.Fault(99, 7, 7, 0x1000, 6, 1)] },
        { "unknown task: pid 8", [Root, TraceEvent.Fault(101, 8, 8, 0x1000, 6, 1)] },
        { "tid 7 belongs to pid 7, not pid 9", [Root, TraceEvent.Fault(101, 9, 7, 0x1000, 6, 1)] },
        { "has exited", [Root, TraceEvent.Create(TraceEventKind.TaskExit, 101, 7, 7), TraceEvent.Fault(102, 7, 7, 0x1000, 6, 1)] },
        { "fault row has no ip", [Root, TraceEvent.Fault(101, 7, 7, 0x1000, 6, 1) with { Has = TraceFields.Address | TraceFields.Flags }] },
        { "which a munmap row does not carry", [Root, (TraceEvent.Create(TraceEventKind.Munmap, 101, 7, 7) with { Address = 1, Length = 1, Has = TraceFields.Address | TraceFields.Length | TraceFields.Prot }).Returned(0, 1)] },
        { "has no result, but the trace is neither truncated nor attached", [Root, TraceEvent.Create(TraceEventKind.Munmap, 101, 7, 7) with { Address = 1, Length = 1 }] },
        { "shmat row has no fd", [Root, (TraceEvent.Create(TraceEventKind.Shmat, 101, 7, 7) with { Flags = 0x1000, Has = TraceFields.Address | TraceFields.Flags }).Returned(0x7f0000000000, 1)] },
        { "which a shmdt row does not carry", [Root, (TraceEvent.Create(TraceEventKind.Shmdt, 101, 7, 7) with { Address = 0x7f0000000000, Length = 4096, Has = TraceFields.Address | TraceFields.Length }).Returned(0, 1)] },
        { "shmdt row has no result, but the trace is neither truncated nor attached", [Root, TraceEvent.Create(TraceEventKind.Shmdt, 101, 7, 7) with { Address = 0x7f0000000000 }] },
        { "shmat row has a duration_ns but no result", [Root, TraceEvent.Create(TraceEventKind.Shmat, 101, 7, 7) with { Fd = 3, DurationNs = 5, Has = TraceKinds.Fields(TraceEventKind.Shmat).Required | TraceFields.Duration }] },
        { "negative figure", [Root, TraceEvent.Sample(TraceEventKind.Status, 101, 7, 7, new StatusFigures(1, 1, 1, 1, 1, 1, -4))] },
        { "must be 1, MAP_SHARED, or 2, MAP_PRIVATE", [Root, TraceEvent.Create(TraceEventKind.Vma, 101, 7, 7) with { Address = 0x1000, Length = 0x1000, Prot = 3, Flags = 3, Dev = "00:00", Path = "" }] },
        { "must be hex major:minor", [Root, TraceEvent.Create(TraceEventKind.Mmap2, 101, 7, 7) with { Address = 0x1000, Length = 0x1000, Prot = 3, Flags = 2, Dev = "disk", Path = "" }] },
        { "unknown kind 'kind40'", [Root, new TraceEvent { Kind = (TraceEventKind)40, TimeNs = 101, Pid = 7, Tid = 7 }] },
        { "already a live task", [Root, Root with { TimeNs = 101 }] },
        { "lost row has a pid", [Root, TraceEvent.Create(TraceEventKind.Lost, 101, 7, 7) with { Length = 1 }] },
        { "vlen 2 but 1 madvise_range rows before it", [Root, Range(101), Call(101, vlen: 2)] },
        { "where the process_madvise row of the 1 madvise_range rows of tid 7 before it must come", [Root, Range(101), TraceEvent.Fault(101, 7, 7, 0x1000, 6, 1)] },
        { "where the process_madvise row of the 2 madvise_range rows of tid 7 before it must come", [Root, Range(101), Range(101), Call(102, vlen: 2)] },
        { "unknown task: pid 8", [Root, Range(101) with { Pid = 8, Tid = 8 }] },
        { "names target pid -1", [Root, Range(101) with { Result = -1 }] },
        { "madvise_range row has no result", [Root, Range(101) with { Has = TraceFields.Address | TraceFields.Length }] },
    };

    private static TraceEvent Range(long t) => TraceEvent.Create(TraceEventKind.MadviseRange, t, 7, 7) with { Address = 0x200000, Length = 0x1000, Result = 7 };

    private static TraceEvent Call(long t, ulong vlen) =>
        (TraceEvent.Create(TraceEventKind.ProcessMadvise, t, 7, 7) with { Fd = 3, Address = 0x7ffd0000, Length = vlen, Prot = 4 }).Returned(0x1000, 1);

    [Fact]
    public void ARangeListAtTheEndOfTheFileIsRejectedNamingIt()
    {
        string path = WriteUnchecked([Root, Range(101), Range(101)]);
        var e = ReadFails(path);
        Assert.StartsWith($"{path}: row 3: ", e.Message);
        Assert.Contains("no process_madvise row after them", e.Message);
    }

    [Fact]
    public void TheWriterRefusesToFinishAfterARangeListWithoutItsCall()
    {
        using var w = TraceWriter.Create(Path.Combine(Dir, "r.parquet"));
        w.Append(Root);
        w.Append(Range(101));
        var e = Assert.Throws<TraceFormatException>(() => w.Complete(SyntheticTrace.Metadata()));
        Assert.Contains("truncated range list", e.Message);
    }


    [Theory]
    [MemberData(nameof(BadRows))]
    public void ABadRowIsRejectedNamingTheFileAndTheRow(string expected, TraceEvent[] rows)
    {
        string path = WriteUnchecked(rows);
        var e = ReadFails(path);
        Assert.StartsWith($"{path}: row {rows.Length - 1}: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void TheWriterRejectsABadRowWithItsIndex()
    {
        using var w = TraceWriter.Create(Path.Combine(Dir, "w.parquet"));
        w.Append(Root);
        var e = Assert.Throws<TraceFormatException>(() => w.Append(TraceEvent.Fault(50, 7, 7, 0x1000, 6, 1)));
        Assert.StartsWith("row 1: ", e.Message);
    }

    [Fact]
    public void MetadataThatContradictsItselfIsRejected()
    {
        string path = WriteUnchecked([Root], SyntheticTrace.Metadata() with { LostEvents = 5, Incomplete = false });
        Assert.Contains("not marked incomplete", ReadFails(path).Message);
    }
}
