using System.Text.Json;
using PtLab.Traces;

namespace PtLab.Tests;

public sealed class ReplayCommandTests : IDisposable
{
    private const int Pid = 4242;
    private const ulong Region = 0x7f00_0000_0000;
    private const ulong Stack = 0x7fff_fffd_e000;

    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-cli-replay-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PtLab.Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static TraceMetadata Metadata(bool truncated = false, long lost = 0) => new()
    {
        Source = "record",
        Command = ["prog"],
        RootPid = Pid,
        ExitStatus = truncated ? null : 0,
        IntervalMs = 50,
        Truncated = truncated,
        Incomplete = lost > 0,
        LostEvents = lost,
        Host = new Dictionary<string, string> { [HostFacts.MatchingDesign] = "pt-reclaim", [HostFacts.Cpus] = "2", [HostFacts.KernelRelease] = "6.18.0-test" },
    };

    /// <summary>The first rows of a program's history from <paramref name="t"/> on: its task, the exec with a stack, the exec's status sample.</summary>
    private static List<TraceEvent> Started(ref long t) =>
    [
        TraceEvent.Create(TraceEventKind.Task, t, Pid, Pid) with { Path = "prog" },
        TraceEvent.Create(TraceEventKind.Exec, t += 10, Pid, Pid) with { Path = "/bin/prog", Result = Pid },
        TraceEvent.Create(TraceEventKind.Vma, t += 10, Pid, Pid) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" },
        TraceEvent.Sample(TraceEventKind.StatusExec, t += 10, Pid, Pid, new StatusFigures(132, 4, 4, 0, 0, 0, 12)),
    ];

    /// <summary>
    /// A program's history: exec with a stack, mmap 4 MiB, write every page, one status sample,
    /// MADV_DONTNEED all of it, the exit sample, exit. Each design's tables follow from the model.
    /// </summary>
    private static List<TraceEvent> Program()
    {
        long t = 1_000_000;
        var rows = Started(ref t);
        rows.Add((TraceEvent.Create(TraceEventKind.Mmap, t += 1000, Pid, Pid) with { Address = 0, Length = 4UL << 20, Prot = 3, Flags = 0x22, Fd = -1, Offset = 0 }).Returned((long)Region, 500));
        for (ulong page = 0; page < 1024; page++)
        {
            rows.Add(TraceEvent.Fault(t += 100, Pid, Pid, Region + (page << 12), 6, 0x400000));
        }

        rows.Add(TraceEvent.Sample(TraceEventKind.Status, t += 100, Pid, Pid, new StatusFigures(4228, 4100, 4100, 0, 0, 0, 28)));
        rows.Add((TraceEvent.Create(TraceEventKind.Madvise, t += 1000, Pid, Pid) with { Address = Region, Length = 4UL << 20, Prot = 4 }).Returned(0, 800));
        rows.Add(TraceEvent.Create(TraceEventKind.ExitGroup, t += 100, Pid, Pid) with { Result = 0 });
        rows.Add(TraceEvent.Sample(TraceEventKind.StatusExit, t += 100, Pid, Pid, new StatusFigures(4228, 4, 4, 0, 0, 0, 20)).WithResult(0));
        rows.Add(TraceEvent.Create(TraceEventKind.TaskExit, t + 100, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags });
        return rows;
    }

    private string Write(IEnumerable<TraceEvent> rows, TraceMetadata? metadata = null, bool check = true)
    {
        string path = Path.Combine(_dir, $"t{Guid.NewGuid():N}.parquet");
        if (check)
        {
            using var w = TraceWriter.Create(path);
            foreach (var e in rows)
            {
                w.Append(e);
            }

            w.Complete(metadata ?? Metadata());
        }
        else
        {
            using var file = File.Create(path);
            using var w = TraceWriter.CreateUnchecked(file);
            foreach (var e in rows)
            {
                w.Append(e);
            }

            w.Complete(metadata ?? Metadata());
        }

        return path;
    }

    private static JsonElement Process(JsonElement root, string design) =>
        root.GetProperty("designs").EnumerateArray().Single(d => d.GetProperty("design").GetString() == design).GetProperty("processes")[0];

    /// <summary>
    /// A worker's munmap of the main thread's 8 MiB region (or its mremap moving it away) is still
    /// in flight (it entered at 50 µs and returns at 200 µs) when the main thread's next mmap
    /// returns at 100 µs with an address inside the freed region, which it writes and advises
    /// before the worker's row comes, and writes again after it. The kernel placed it after the
    /// worker's call freed the range, so the replay applies that call first: the new mapping is
    /// where the kernel put it and stays, its faults and MADV_DONTNEED succeed, and its pages are
    /// counted. Replayed in row order, the worker's call took the new mapping away again (or moved
    /// it away with the old one it had merged with), and the last write failed.
    /// </summary>
    [Theory]
    [InlineData("munmap")]
    [InlineData("mremap")]
    public void AnMmapIntoARangeAnotherThreadsMunmapInFlightFreedIsReplayedAfterThatMunmap(string freeing)
    {
        const int worker = Pid + 1;
        long t = 1_000_000;
        var rows = Started(ref t);
        rows.Add(TraceEvent.Create(TraceEventKind.NewTask, t += 1000, Pid, Pid) with { Flags = TraceEvent.CloneThread | TraceEvent.CloneVm, Result = worker, Path = "w" });
        long t0 = t;
        rows.Add((TraceEvent.Create(TraceEventKind.Mmap, t0 + 30_000, Pid, Pid) with { Address = 0, Length = 8UL << 20, Prot = 3, Flags = 0x22, Fd = -1, Offset = 0 }).Returned((long)Region, 1_000));
        for (ulong page = 0; page < 16; page++)
        {
            rows.Add(TraceEvent.Fault(t0 + 31_000 + (long)page, Pid, Pid, Region + (page << 12), 6, 0x400000));
        }

        rows.Add((TraceEvent.Create(TraceEventKind.Mmap, t0 + 100_000, Pid, Pid) with { Address = 0, Length = 4UL << 20, Prot = 3, Flags = 0x22, Fd = -1, Offset = 0 }).Returned((long)Region + (4L << 20), 40_000));
        for (ulong page = 0; page < 8; page++)
        {
            rows.Add(TraceEvent.Fault(t0 + 110_000 + (long)page, Pid, Pid, Region + (4UL << 20) + (page << 12), 6, 0x400000));
        }

        rows.Add((TraceEvent.Create(TraceEventKind.Madvise, t0 + 120_000, Pid, Pid) with { Address = Region + (4UL << 20), Length = 4096, Prot = 4 }).Returned(0, 500));
        const ulong far = Region - (64UL << 20);
        rows.Add(freeing == "munmap"
            ? (TraceEvent.Create(TraceEventKind.Munmap, t0 + 200_000, Pid, worker) with { Address = Region, Length = 8UL << 20 }).Returned(0, 150_000)
            : (TraceEvent.Create(TraceEventKind.Mremap, t0 + 200_000, Pid, worker) with { Address = Region, Length = 8UL << 20, NewLength = 8UL << 20, Flags = 1, NewAddress = 0 }).Returned((long)far, 150_000));
        rows.Add(TraceEvent.Fault(t0 + 250_000, Pid, Pid, Region + (4UL << 20) + (8 << 12), 6, 0x400000));
        rows.Add(TraceEvent.Create(TraceEventKind.ExitGroup, t0 + 300_000, Pid, Pid) with { Result = 0 });
        rows.Add(TraceEvent.Sample(TraceEventKind.StatusExit, t0 + 300_100, Pid, Pid, new StatusFigures(4228, 32, 32, 0, 0, 0, 20)).WithResult(0));
        rows.Add(TraceEvent.Create(TraceEventKind.TaskExit, t0 + 300_200, Pid, worker) with { Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required });
        rows.Add(TraceEvent.Create(TraceEventKind.TaskExit, t0 + 300_300, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags });

        var (code, json, err) = Run("replay", Write(rows), "--designs", "pt-reclaim", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(json);
        var divergences = doc.RootElement.GetProperty("designs")[0].GetProperty("divergences").EnumerateObject().Select(d => d.Name).ToList();
        // Where the model itself would have placed the two mmaps is not the point (this exec has no
        // layout that gives mmap_base): every other call and access agrees with the kernel.
        Assert.DoesNotContain(divergences, d => !d.StartsWith("mmap placed elsewhere", StringComparison.Ordinal) && !d.StartsWith("mremap placed elsewhere", StringComparison.Ordinal));
        // The 8 pages written and kept in the new mapping (one of the first 8 advised away, one
        // written after the worker's call), the stack's top page, and the 16 pages the mremap
        // moved away.
        Assert.Equal((8 + 1 + (freeing == "mremap" ? 16 : 0)) * 4, Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssAnonKb").GetInt64());
    }

    /// <summary>
    /// An attached process had 16 pages of a region present and 32 swapped out: with the swap the
    /// recorder counted (its note), the replay rebuilds the swapped ones as swap entries, so the
    /// model shows the kernel's VmSwap and keeps the PTE table that holds them; without the note
    /// (an older trace) they are counted as not rebuilt, and that table is missing.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PagesAnAttachedProcessHadSwappedOutAreRebuiltAsSwapEntries(bool noted)
    {
        long t = 1_000_000;
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, t, Pid, Pid) with { Path = "prog" },
            TraceEvent.Create(TraceEventKind.Vma, t += 10, Pid, Pid) with { Address = Region, Length = 4UL << 20, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "" },
            TraceEvent.Create(TraceEventKind.Vma, t += 10, Pid, Pid) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" },
            TraceEvent.Create(TraceEventKind.Resident, t += 10, Pid, Pid) with { Address = Region, Length = 16 * 4096, Flags = TraceKinds.PageIsPresent },
            TraceEvent.Create(TraceEventKind.Resident, t += 10, Pid, Pid) with { Address = Region + (2UL << 20), Length = 32 * 4096, Flags = TraceKinds.PageIsSwapped },
            TraceEvent.Sample(TraceEventKind.StatusAttach, t += 10, Pid, Pid, new StatusFigures(4228, 64, 64, 0, 0, 128, 20)),
            TraceEvent.Create(TraceEventKind.ExitGroup, t += 100, Pid, Pid) with { Result = 0 },
            TraceEvent.Sample(TraceEventKind.StatusExit, t += 100, Pid, Pid, new StatusFigures(4228, 64, 64, 0, 0, 128, 20)).WithResult(0),
            TraceEvent.Create(TraceEventKind.TaskExit, t + 100, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags },
        };
        var notes = noted ? new Dictionary<string, string> { [TraceMetadata.AttachSwappedPagesNote] = "32" } : new Dictionary<string, string>();
        var (code, json, err) = Run("replay", Write(rows, Metadata() with { Source = "attach", Notes = notes }), "--designs", "pt-reclaim", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(json);
        var design = doc.RootElement.GetProperty("designs")[0];
        Assert.Empty(design.GetProperty("divergences").EnumerateObject());
        var exit = Process(doc.RootElement, "pt-reclaim").GetProperty("exit");
        Assert.Equal(64, exit.GetProperty("rssAnonKb").GetInt64());
        Assert.Equal(noted ? 128 : 0, exit.GetProperty("vmSwapKb").GetInt64());
        // The region's PUD and PMD tables and its PTE tables: the one under the present pages, and
        // the one under the swap entries where they were rebuilt.
        long tables = noted ? 2 : 1;
        Assert.Equal((2 + tables) * 4, exit.GetProperty("vmPteKb").GetInt64());
        var unsupported = design.GetProperty("unsupported").EnumerateObject().Where(u => u.Name.StartsWith("pages swapped out", StringComparison.Ordinal)).Sum(u => u.Value.GetInt64());
        Assert.Equal(noted ? 0 : 32, unsupported);
    }

    /// <summary>
    /// A VMA that was sealed before the layout was read (a <c>vma_sealed</c> row after the
    /// layout's <c>vma</c> rows): the munmap and mprotect the host refused with EPERM are refused
    /// in the replay too, and the pages stay. Without the row the model unmaps what the host kept,
    /// and both calls are counted as differences.
    /// </summary>
    [Fact]
    public void AVmaSealedBeforeTheLayoutWasReadRefusesItsMunmapAndMprotectInTheReplay()
    {
        const int eperm = 1;
        long t = 1_000_000;
        var rows = Started(ref t);
        rows.Insert(3, TraceEvent.Create(TraceEventKind.Vma, t - 5, Pid, Pid) with { Address = Region, Length = 1UL << 20, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "" });
        rows.Insert(4, TraceEvent.Create(TraceEventKind.VmaSealed, t - 5, Pid, Pid) with { Address = Region, Length = 1UL << 20 });
        for (ulong page = 0; page < 256; page++)
        {
            rows.Add(TraceEvent.Fault(t += 100, Pid, Pid, Region + (page << 12), 6, 0x400000));
        }

        rows.Add((TraceEvent.Create(TraceEventKind.Munmap, t += 1000, Pid, Pid) with { Address = Region, Length = 1UL << 20 }).Returned(-eperm, 300));
        rows.Add((TraceEvent.Create(TraceEventKind.Mprotect, t += 1000, Pid, Pid) with { Address = Region, Length = 4096, Prot = 1 }).Returned(-eperm, 300));
        rows.Add(TraceEvent.Create(TraceEventKind.ExitGroup, t += 100, Pid, Pid) with { Result = 0 });
        rows.Add(TraceEvent.Sample(TraceEventKind.StatusExit, t += 100, Pid, Pid, new StatusFigures(1156, 1028, 1028, 0, 0, 0, 16)).WithResult(0));
        rows.Add(TraceEvent.Create(TraceEventKind.TaskExit, t + 100, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags });
        (JsonElement Design, long RssAnonKb) Replayed(IEnumerable<TraceEvent> trace, out JsonDocument doc)
        {
            var (code, json, err) = Run("replay", Write(trace), "--designs", "pt-reclaim", "--format", "json");
            Assert.True(code == 0, err);
            doc = JsonDocument.Parse(json);
            var design = doc.RootElement.GetProperty("designs")[0];
            return (design, Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssAnonKb").GetInt64());
        }

        var (sealedDesign, sealedRss) = Replayed(rows, out var sealedDoc);
        using (sealedDoc)
        {
            Assert.Empty(sealedDesign.GetProperty("divergences").EnumerateObject());
            Assert.Equal(1024 + 4, sealedRss); // the region and the stack's top page
        }

        var (openDesign, openRss) = Replayed(rows.Where(e => e.Kind != TraceEventKind.VmaSealed), out var openDoc);
        using (openDoc)
        {
            Assert.Equal(2, openDesign.GetProperty("divergences").EnumerateObject().Sum(d => d.Value.GetInt64()));
            Assert.Equal(4, openRss);
        }
    }

    /// <summary>
    /// PostgreSQL's <c>huge_pages=try</c>: a shared anonymous MAP_HUGETLB mmap first, and where the
    /// kernel refuses it (no huge page reserved: ENOMEM), the same size without. The model checks
    /// the call against the recorded host's pools; where the kernel mapped hugetlb memory, base
    /// pages stand in for it, so that its faults find it.
    /// </summary>
    [Theory]
    [InlineData("21:0,30:0", false, "", "")]
    [InlineData(null, false, "", "pools are unknown")]
    [InlineData("21:8,30:0", false, "mmap: kernel errno 12, model succeeded", "")]
    [InlineData("21:8,30:0", true, "", "MAP_HUGETLB mmap (replayed with base pages)")]
    [InlineData("21:0,30:0", true, "mmap: kernel succeeded, model ENOMEM", "MAP_HUGETLB mmap (replayed with base pages)")]
    public void AHugetlbMmapIsCheckedAgainstTheRecordedHostsPools(string? pools, bool kernelMapped, string divergence, string unsupported)
    {
        const ulong length = (4UL << 20) + 8192; // rounded up to 6 MiB for hugetlb memory
        long t = 1_000_000;
        var rows = Started(ref t);
        var huge = TraceEvent.Create(TraceEventKind.Mmap, t += 1000, Pid, Pid) with { Address = 0, Length = length, Prot = 3, Flags = 0x40021, Fd = -1, Offset = 0 };
        rows.Add(kernelMapped ? huge.Returned((long)Region, 500) : huge.Returned(-12, 500));
        if (!kernelMapped)
        {
            rows.Add((TraceEvent.Create(TraceEventKind.Mmap, t += 1000, Pid, Pid) with { Address = 0, Length = length, Prot = 3, Flags = 0x21, Fd = -1, Offset = 0 }).Returned((long)Region, 500));
        }

        for (ulong page = 0; page < length >> 12; page++)
        {
            rows.Add(TraceEvent.Fault(t += 100, Pid, Pid, Region + (page << 12), 6, 0x400000));
        }

        rows.Add(TraceEvent.Sample(TraceEventKind.Status, t += 100, Pid, Pid, new StatusFigures(132 + 6144, 4108, 4, 0, 0, 0, 32)));
        // hugetlb memory is unmapped whole huge pages at a time (a part is EINVAL)
        rows.Add((TraceEvent.Create(TraceEventKind.Munmap, t += 1000, Pid, Pid) with { Address = Region, Length = kernelMapped ? 6UL << 20 : length }).Returned(0, 300));
        rows.Add(TraceEvent.Create(TraceEventKind.ExitGroup, t += 100, Pid, Pid) with { Result = 0 });
        rows.Add(TraceEvent.Sample(TraceEventKind.StatusExit, t += 100, Pid, Pid, new StatusFigures(132, 4, 4, 0, 0, 0, 12)).WithResult(0));
        rows.Add(TraceEvent.Create(TraceEventKind.TaskExit, t + 100, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags });
        var metadata = Metadata();
        if (pools is not null)
        {
            metadata = metadata with { Host = new Dictionary<string, string>(metadata.Host) { [HostFacts.HugetlbPools] = pools } };
        }

        var (code, json, err) = Run("replay", Write(rows, metadata), "--designs", "pt-reclaim", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(json);
        var design = doc.RootElement.GetProperty("designs")[0];
        // (The trace gives no mmap_base, so that the model's own placement differs: counted apart.)
        var divergences = design.GetProperty("divergences").EnumerateObject().Where(d => !d.Name.StartsWith("mmap placed elsewhere", StringComparison.Ordinal)).ToDictionary(d => d.Name, d => d.Value.GetInt64());
        var unsupportedKinds = design.GetProperty("unsupported").EnumerateObject().Select(u => u.Name).Where(n => n.Contains("HUGETLB", StringComparison.Ordinal)).ToList();
        Assert.Equal(divergence.Length == 0 ? [] : [divergence], divergences.Keys); // every fault found its page
        Assert.True(divergence.Length == 0 || divergences[divergence] == 1, json);
        if (unsupported.Length == 0)
        {
            Assert.Empty(unsupportedKinds);
        }
        else
        {
            Assert.Contains(unsupportedKinds, n => n.Contains(unsupported, StringComparison.Ordinal));
        }

        // Every page was written: in the shmem the program fell back to (its length), or in the
        // shmem that stood in for the hugetlb memory (the length rounded up to 2 MiB).
        var written = Process(doc.RootElement, "pt-reclaim").GetProperty("samples")[1].GetProperty("model");
        Assert.Equal((long)(length >> 10), written.GetProperty("rssShmemKb").GetInt64());
        Assert.Equal(132 + (kernelMapped ? 6144 : (long)(length >> 10)), written.GetProperty("vmSizeKb").GetInt64());
        Assert.Equal(0, Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("vmSizeKb").GetInt64() - 132);
    }

    [Fact]
    public void EachDesignKeepsTheTablesItsRulesKeepAndTheHostsDesignIsComparedAtEverySample()
    {
        string trace = Write(Program());
        var (code, output, err) = Run("replay", trace, "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal("pt-reclaim", root.GetProperty("matchingDesign").GetString());
        Assert.Equal(2, root.GetProperty("parameters").GetProperty("cpus").GetInt64());
        // The 4 MiB region needed two PTE tables; one DONTNEED of all of it frees both under
        // pt-reclaim, atomic and pte-ref, and none keeps them until exit.
        var none = Process(root, "none");
        var reclaim = Process(root, "pt-reclaim");
        long nonePte = none.GetProperty("samples")[2].GetProperty("model").GetProperty("pteTables").GetInt64();
        long reclaimPte = reclaim.GetProperty("samples")[2].GetProperty("model").GetProperty("pteTables").GetInt64();
        Assert.Equal(2, nonePte - reclaimPte);
        Assert.Equal(nonePte, Process(root, "none").GetProperty("samples")[1].GetProperty("model").GetProperty("pteTables").GetInt64());
        foreach (var design in new[] { "atomic", "pte-ref" })
        {
            Assert.Equal(reclaimPte, Process(root, design).GetProperty("samples")[2].GetProperty("model").GetProperty("pteTables").GetInt64());
        }

        Assert.Equal(1024, reclaim.GetProperty("faults").GetInt64());
        Assert.Equal(1, reclaim.GetProperty("madviseLatencyNs").GetProperty("count").GetInt64());
        Assert.True(none.GetProperty("peakVmPteKb").GetInt64() >= nonePte * 4);
        var fidelity = Assert.Single(root.GetProperty("fidelity").EnumerateArray());
        Assert.Equal(Pid, fidelity.GetProperty("pid").GetInt32());
        Assert.Equal(3, fidelity.GetProperty("samples").GetInt32());
        Assert.Equal(
            reclaim.GetProperty("samples")[2].GetProperty("model").GetProperty("vmPteKb").GetInt64() - 20,
            fidelity.GetProperty("exitDifferenceKb").GetInt64());
    }

    [Fact]
    public void CsvHasARowPerDesignAndSampleAndThePlotIsWritten()
    {
        string trace = Write(Program());
        string plot = Path.Combine(_dir, "vmpte.png");
        var (code, output, err) = Run("replay", trace, "--designs", "none,pt-reclaim", "--format", "csv", "--plot", plot);
        Assert.True(code == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("design,pid,name,timeNs,seconds,kind,vmSizeKb", lines[0]);
        Assert.Equal(1 + (2 * 3), lines.Length);
        Assert.True(new FileInfo(plot).Length > 1000);
    }

    [Fact]
    public void ATruncatedOrLossyTraceWarnsInEveryFormat()
    {
        string trace = Write(Program(), Metadata(lost: 12));
        var (code, table, _) = Run("replay", trace, "--designs", "none");
        Assert.Equal(0, code);
        Assert.Contains("warning: the trace is incomplete: perf lost 12 events", table);
        var (_, json, _) = Run("replay", trace, "--designs", "none", "--format", "json");
        using var doc = JsonDocument.Parse(json);
        Assert.Contains(doc.RootElement.GetProperty("warnings").EnumerateArray(), w => w.GetString()!.Contains("lost 12 events", StringComparison.Ordinal));
    }

    [Fact]
    public void AnAttachedTracesProcessMadviseIsCountedNotReplayedAndBothCommandsSaySo()
    {
        // What record -p writes: the call without its ranges (no filter can be put into a running process).
        var rows = Program();
        int at = rows.FindIndex(e => e.Kind == TraceEventKind.Madvise);
        rows[at] = (TraceEvent.Create(TraceEventKind.ProcessMadvise, rows[at].TimeNs, Pid, Pid) with { Fd = 3, Address = Stack + 0x100, Length = 1, Prot = 4 }).Returned(4L << 20, 800);
        string trace = Write(rows, Metadata() with { Source = "attach", ProcessMadviseRanges = false });
        var (code, table, err) = Run("replay", trace, "--designs", "pt-reclaim");
        Assert.True(code == 0, err);
        Assert.Contains("warning: 1 process_madvise calls without their ranges (an attached recording cannot capture them): counted, not replayed", table);
        var (infoCode, info, _) = Run("trace", "info", trace);
        Assert.Equal(0, infoCode);
        Assert.Contains("format version 8", info);
        Assert.Contains("warning   1 process_madvise calls without their ranges", info);

        // The same call with its range replays as the madvise it replaced: no warning.
        rows.Insert(at, TraceEvent.Create(TraceEventKind.MadviseRange, rows[at].TimeNs, Pid, Pid) with { Address = Region, Length = 4UL << 20, Result = Pid });
        string withRanges = Write(rows, Metadata() with { ProcessMadviseRanges = true });
        var (_, json, _) = Run("replay", withRanges, "--designs", "pt-reclaim", "--format", "json");
        Assert.DoesNotContain("process_madvise", json);
        var (_, plain, _) = Run("replay", Write(Program()), "--designs", "pt-reclaim", "--format", "json");
        Assert.Equal(Exit(plain), Exit(json));
    }

    /// <summary>
    /// A 64-page file recorded all cached, mapped and read once under MADV_RANDOM: replayed with its
    /// residency, fault-around maps the 16 cached pages of the window as the kernel did; with
    /// --cold-files the fault reads its page alone, and the report says the residency was ignored.
    /// A trace without residency warns in replay and trace info.
    /// </summary>
    [Fact]
    public void AFileRecordedCachedIsMappedByFaultAroundAndColdFilesIgnoresIt()
    {
        const ulong file = 0x7f10_0000_0000, size = 64 << 12;
        long t = 1_000_000;
        var cached = TraceEvent.Create(TraceEventKind.FileCache, t + 30, Pid, Pid) with { Length = size, Dev = "fe:00", Inode = 9, Result = 1 };
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, t, Pid, Pid) with { Path = "prog" },
            TraceEvent.Create(TraceEventKind.Exec, t += 10, Pid, Pid) with { Path = "/bin/prog", Result = Pid },
            TraceEvent.Create(TraceEventKind.Vma, t += 10, Pid, Pid) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" },
            TraceEvent.Sample(TraceEventKind.StatusExec, t += 10, Pid, Pid, new StatusFigures(132, 4, 4, 0, 0, 0, 12)),
            cached with { TimeNs = t += 10, Path = "/data/table", Has = cached.Has | TraceFields.Path },
            TraceEvent.Create(TraceEventKind.CacheRange, t, Pid, Pid) with { Offset = 0, Length = size, Dev = "fe:00", Inode = 9, Flags = 0, Has = TraceKinds.Fields(TraceEventKind.CacheRange).Required | TraceFields.Flags },
            TraceEvent.Create(TraceEventKind.Mmap2, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1, Flags = 2, Offset = 0, Dev = "fe:00", Inode = 9, Path = "/data/table" },
            (TraceEvent.Create(TraceEventKind.Mmap, t += 10, Pid, Pid) with { Address = 0, Length = size, Prot = 1, Flags = 0x02, Fd = 3, Offset = 0 }).Returned((long)file, 500),
            (TraceEvent.Create(TraceEventKind.Madvise, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1 }).Returned(0, 100),
            TraceEvent.Fault(t += 10, Pid, Pid, file + (20 << 12), 4, 0x400000),
            TraceEvent.Create(TraceEventKind.ExitGroup, t += 10, Pid, Pid) with { Result = 0 },
            TraceEvent.Sample(TraceEventKind.StatusExit, t += 10, Pid, Pid, new StatusFigures(400, 68, 4, 64, 0, 0, 20)).WithResult(0),
            TraceEvent.Create(TraceEventKind.TaskExit, t + 10, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags },
        };
        string trace = Write(rows, Metadata() with { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded });
        static long ExitRssFile(string json)
        {
            using var doc = JsonDocument.Parse(json);
            Assert.DoesNotContain(doc.RootElement.GetProperty("warnings").EnumerateArray(), w => w.GetString()!.Contains("page-cache", StringComparison.Ordinal));
            return Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssFileKb").GetInt64();
        }

        var (code, warm, err) = Run("replay", trace, "--designs", "pt-reclaim", "--format", "json");
        Assert.True(code == 0, err);
        Assert.Equal(64, ExitRssFile(warm));
        var (coldCode, cold, _) = Run("replay", trace, "--designs", "pt-reclaim", "--cold-files");
        Assert.Equal(0, coldCode);
        Assert.Contains("warning: --cold-files: the recorded page-cache residency is ignored, and its changes", cold);
        Assert.Contains("mapped files: 1 file: cold when first mapped (recorded page-cache state ignored)", cold);
        var (_, coldJson, _) = Run("replay", trace, "--designs", "pt-reclaim", "--cold-files", "--format", "json");
        using (var doc = JsonDocument.Parse(coldJson))
        {
            Assert.Equal(4, Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssFileKb").GetInt64());
        }

        var (_, table, _) = Run("replay", trace, "--designs", "pt-reclaim");
        Assert.Contains("mapped files: 1 file: page cache as recorded when first mapped (some pages cached)", table);

        // The same rows without residency: every file cold, and both commands say so.
        string none = Write(rows.Where(e => e.Kind is not (TraceEventKind.FileCache or TraceEventKind.CacheRange)), Metadata());
        var (_, noneTable, _) = Run("replay", none, "--designs", "pt-reclaim");
        Assert.Contains("warning: no page-cache residency recorded (not captured): every mapped file replays as cold", noneTable);
        var (_, info, _) = Run("trace", "info", none);
        Assert.Contains("warning   no page-cache residency recorded", info);
        var (_, infoJson, _) = Run("trace", "info", trace, "--format", "json");
        using var infoDoc = JsonDocument.Parse(infoJson);
        Assert.Equal("mapped", infoDoc.RootElement.GetProperty("pageCache").GetString());
    }

    /// <summary>
    /// A 64-page file mapped and faulted at page 20 before its residency row (as exec's own faults
    /// come before the layout's residency): the model's read-around reads a window of its own, but
    /// the host had only [16, 32) cached when the residency was taken, so the rest leaves the
    /// model's cache, and a later fault in page 5 under MADV_RANDOM reads its page alone (one page
    /// more than without that fault) instead of mapping the 12 pages of its window that the model
    /// read and the host never had.
    /// </summary>
    [Fact]
    public void PagesTheModelReadBeforeTheResidencyThatTheHostHadNotCachedLeaveTheCache()
    {
        const ulong file = 0x7f10_0000_0000, size = 64 << 12;
        long t = 1_000_000;
        var rows = Started(ref t);
        rows.AddRange(
        [
            TraceEvent.Create(TraceEventKind.Mmap2, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1, Flags = 2, Offset = 0, Dev = "fe:00", Inode = 9, Path = "/data/table" },
            (TraceEvent.Create(TraceEventKind.Mmap, t += 10, Pid, Pid) with { Address = 0, Length = size, Prot = 1, Flags = 0x02, Fd = 3, Offset = 0 }).Returned((long)file, 500),
            TraceEvent.Fault(t += 10, Pid, Pid, file + (20 << 12), 4, 0x400000),
            TraceEvent.Create(TraceEventKind.FileCache, t += 10, Pid, Pid) with { Length = size, Dev = "fe:00", Inode = 9, Result = 1, Path = "/data/table" },
            TraceEvent.Create(TraceEventKind.CacheRange, t, Pid, Pid) with { Offset = 16 << 12, Length = 16 << 12, Dev = "fe:00", Inode = 9 },
            (TraceEvent.Create(TraceEventKind.Madvise, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1 }).Returned(0, 100),
            TraceEvent.Fault(t += 10, Pid, Pid, file + (5 << 12), 4, 0x400000),
            TraceEvent.Create(TraceEventKind.ExitGroup, t += 10, Pid, Pid) with { Result = 0 },
            TraceEvent.Sample(TraceEventKind.StatusExit, t += 10, Pid, Pid, new StatusFigures(400, 72, 4, 68, 0, 0, 20)).WithResult(0),
            TraceEvent.Create(TraceEventKind.TaskExit, t + 10, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags },
        ]);
        long ExitRssFile(IEnumerable<TraceEvent> events)
        {
            string trace = Write(events, Metadata() with { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded });
            var (code, json, err) = Run("replay", trace, "--designs", "pt-reclaim", "--format", "json");
            Assert.True(code == 0, err);
            using var doc = JsonDocument.Parse(json);
            return Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssFileKb").GetInt64();
        }

        var late = rows.Last(e => e.Kind == TraceEventKind.Fault);
        Assert.Equal(4, ExitRssFile(rows) - ExitRssFile(rows.Where(e => e != late)));
    }

    /// <summary>
    /// A 64-page file that appeared cold, mapped under MADV_RANDOM. Before the first fault a 16-page
    /// folio of it entered the cache at page 0 and one at page 16 (a read() of the file), and the
    /// second left it again (another process's POSIX_FADV_DONTNEED): the fault in page 5 maps its
    /// whole window, the one in page 20 reads its page alone, 17 pages in all. Without the change
    /// rows, or with --cold-files, each fault maps one page. trace info counts the rows and warns
    /// where folio orders or the changes are missing.
    /// </summary>
    [Fact]
    public void PageCacheChangesBeforeAFaultAreWhatItsFaultAroundFinds()
    {
        const ulong file = 0x7f10_0000_0000, size = 64 << 12;
        long t = 1_000_000;
        TraceEvent Change(bool add, ulong page) =>
            TraceEvent.Create(add ? TraceEventKind.CacheAdd : TraceEventKind.CacheDelete, t += 10, 0, 0) with { Offset = page << 12, Flags = 4, Dev = "fe:00", Inode = 9, Result = add ? Pid : 777 };
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, t, Pid, Pid) with { Path = "prog" },
            TraceEvent.Create(TraceEventKind.Exec, t += 10, Pid, Pid) with { Path = "/bin/prog", Result = Pid },
            TraceEvent.Create(TraceEventKind.Vma, t += 10, Pid, Pid) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" },
            TraceEvent.Sample(TraceEventKind.StatusExec, t += 10, Pid, Pid, new StatusFigures(132, 4, 4, 0, 0, 0, 12)),
            TraceEvent.Create(TraceEventKind.FileCache, t += 10, Pid, Pid) with { Length = size, Dev = "fe:00", Inode = 9, Result = 0 },
            TraceEvent.Create(TraceEventKind.Mmap2, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1, Flags = 2, Offset = 0, Dev = "fe:00", Inode = 9, Path = "/data/table" },
            (TraceEvent.Create(TraceEventKind.Mmap, t += 10, Pid, Pid) with { Address = 0, Length = size, Prot = 1, Flags = 0x02, Fd = 3, Offset = 0 }).Returned((long)file, 500),
            (TraceEvent.Create(TraceEventKind.Madvise, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1 }).Returned(0, 100),
            Change(add: true, page: 0),
            Change(add: true, page: 16),
            Change(add: false, page: 16),
            TraceEvent.Fault(t += 10, Pid, Pid, file + (5 << 12), 4, 0x400000),
            TraceEvent.Fault(t += 10, Pid, Pid, file + (20 << 12), 4, 0x400000),
            TraceEvent.Create(TraceEventKind.ExitGroup, t += 10, Pid, Pid) with { Result = 0 },
            TraceEvent.Sample(TraceEventKind.StatusExit, t += 10, Pid, Pid, new StatusFigures(400, 72, 4, 68, 0, 0, 20)).WithResult(0),
            TraceEvent.Create(TraceEventKind.TaskExit, t + 10, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags },
        };
        var recorded = Metadata() with { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded, FolioOrders = true };
        long ExitRssFile(string trace, params string[] extra)
        {
            var (code, json, err) = Run(["replay", trace, "--designs", "pt-reclaim", "--format", "json", .. extra]);
            Assert.True(code == 0, err);
            using var doc = JsonDocument.Parse(json);
            return Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssFileKb").GetInt64();
        }

        string trace = Write(rows, recorded);
        Assert.Equal(17 * 4, ExitRssFile(trace));
        Assert.Equal(2 * 4, ExitRssFile(trace, "--cold-files"));
        string without = Write(rows.Where(e => !TraceKinds.IsPageCacheChange(e.Kind)), recorded with { PageCacheChanges = TraceMetadata.PageCacheChangesNone, FolioOrders = false });
        Assert.Equal(2 * 4, ExitRssFile(without));

        var (_, info, _) = Run("trace", "info", trace);
        Assert.Matches(@"cache_add\s+2\n", info.Replace("\r", "", StringComparison.Ordinal));
        Assert.Matches(@"cache_delete\s+1\n", info.Replace("\r", "", StringComparison.Ordinal));
        Assert.DoesNotContain("warning   page-cache changes", info);
        var (_, infoWithout, _) = Run("trace", "info", without);
        Assert.Contains("warning   page-cache changes after each file first appeared are not recorded", infoWithout);
        Assert.Contains("warning   folio orders of the page cache found at each file's first appearance were not recorded", infoWithout);
        var (_, replayWithout, _) = Run("replay", without, "--designs", "pt-reclaim");
        Assert.Contains("warning: folio orders of the page cache found at each file's first appearance were not recorded", replayWithout);
    }

    /// <summary>
    /// Names of one file that differ by device, as recorded on overlayfs and btrfs. Overlay: the
    /// mapping and the residency say 00:2f (the overlay), the page-cache change fe:00 (the ext4
    /// layer that owns the cache), with the same inode: the 16 pages it added are the mapped file's,
    /// and the fault maps its window. Btrfs (a version 4 recording): the residency says 00:31
    /// (stat's device of a subvolume, which no mount table lists), the mapping 00:23 (the super
    /// block's): the mapping finds the residency's file, 64 pages cached, and maps the window.
    /// On two plain file systems (two ext4 devices) the same names are two files, and the fault
    /// reads its page alone.
    /// </summary>
    [Theory]
    [InlineData("overlay", 16)]
    [InlineData("btrfs", 16)]
    [InlineData("plain", 1)]
    public void AFilesNamesUnderAnotherDeviceAreMatchedOnOverlayAndBtrfs(string layout, int pages)
    {
        const ulong file = 0x7f10_0000_0000, size = 64 << 12;
        long t = 1_000_000;
        bool btrfs = layout == "btrfs";
        string mapped = btrfs ? "00:23" : "00:2f", residency = btrfs ? "00:31" : mapped, changed = "fe:00";
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, t, Pid, Pid) with { Path = "prog" },
            TraceEvent.Create(TraceEventKind.Exec, t += 10, Pid, Pid) with { Path = "/bin/prog", Result = Pid },
            TraceEvent.Create(TraceEventKind.Vma, t += 10, Pid, Pid) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" },
            TraceEvent.Sample(TraceEventKind.StatusExec, t += 10, Pid, Pid, new StatusFigures(132, 4, 4, 0, 0, 0, 12)),
            TraceEvent.Create(TraceEventKind.FileCache, t += 10, Pid, Pid) with { Length = size, Dev = residency, Inode = 9, Result = btrfs ? 1 : 0 },
        };
        if (btrfs)
        {
            rows.Add(TraceEvent.Create(TraceEventKind.CacheRange, t, Pid, Pid) with { Offset = 0, Length = size, Dev = residency, Inode = 9 });
        }

        rows.AddRange(
        [
            TraceEvent.Create(TraceEventKind.Mmap2, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1, Flags = 2, Offset = 0, Dev = mapped, Inode = 9, Path = "/data/table" },
            (TraceEvent.Create(TraceEventKind.Mmap, t += 10, Pid, Pid) with { Address = 0, Length = size, Prot = 1, Flags = 0x02, Fd = 3, Offset = 0 }).Returned((long)file, 500),
            (TraceEvent.Create(TraceEventKind.Madvise, t += 10, Pid, Pid) with { Address = file, Length = size, Prot = 1 }).Returned(0, 100),
        ]);
        if (!btrfs)
        {
            rows.Add(TraceEvent.Create(TraceEventKind.CacheAdd, t += 10, 0, 0) with { Offset = 0, Flags = 4, Dev = changed, Inode = 9, Result = Pid });
        }

        rows.AddRange(
        [
            TraceEvent.Fault(t += 10, Pid, Pid, file + (5 << 12), 4, 0x400000),
            TraceEvent.Create(TraceEventKind.ExitGroup, t += 10, Pid, Pid) with { Result = 0 },
            TraceEvent.Sample(TraceEventKind.StatusExit, t += 10, Pid, Pid, new StatusFigures(400, 4 + (4 * pages), 4, 4 * pages, 0, 0, 20)).WithResult(0),
            TraceEvent.Create(TraceEventKind.TaskExit, t + 10, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags },
        ]);
        var fs = new Dictionary<DeviceNumber, FileSystemFact>
        {
            [new DeviceNumber(0xfe, 0)] = new("ext4", "rw", 128),
            [new DeviceNumber(0, btrfs ? 0x23u : 0x2fu)] = new(layout == "plain" ? "ext4" : layout, "rw", 128),
        };

        string trace = Write(rows, Metadata() with { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded, FileSystems = fs });
        var (code, json, err) = Run("replay", trace, "--designs", "pt-reclaim", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(4 * pages, Process(doc.RootElement, "pt-reclaim").GetProperty("exit").GetProperty("rssFileKb").GetInt64());
    }

    /// <summary>
    /// The memory estimate counts the page cache a trace records: a residency row of a 64 TiB file
    /// wholly cached asks for a page each (within --ram), which no host has, and the replay is
    /// refused naming the estimate, though the trace has no fault.
    /// </summary>
    [Fact]
    public void TheMemoryEstimateCountsTheRecordedPageCache()
    {
        const ulong size = 64UL << 40;
        long t = 1_000_000;
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, t, Pid, Pid) with { Path = "prog" },
            TraceEvent.Create(TraceEventKind.FileCache, t += 10, Pid, Pid) with { Length = size, Dev = "fe:00", Inode = 9, Result = 1 },
            TraceEvent.Create(TraceEventKind.CacheRange, t, Pid, Pid) with { Offset = 0, Length = size, Dev = "fe:00", Inode = 9 },
            TraceEvent.Create(TraceEventKind.TaskExit, t + 10, Pid, Pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags },
        };
        string trace = Write(rows, Metadata() with { PageCache = TraceMetadata.PageCacheMapped });
        var (code, output, err) = Run("replay", trace, "--designs", "none", "--ram", "128T");
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains("for up to 64 TiB of simulated RSS", err);
        Assert.Contains("or --force to run anyway", err);
    }

    private static string Exit(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return Process(doc.RootElement, "pt-reclaim").GetProperty("samples")[2].GetProperty("model").GetRawText();
    }

    public static TheoryData<string, int, string> Malformed => new()
    {
        // A row before its predecessor.
        { "before the previous row", 5, "time" },
        // A row of a process the trace never introduced.
        { "unknown task: pid 999", 5, "pid" },
        // munmap of nothing recorded as a success.
        { "munmap of nothing (length 0)", 5, "munmap" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void AMalformedTraceIsAnErrorNamingTheFileAndRowAndExitTwo(string message, int row, string kind)
    {
        var rows = Program();
        var bad = kind switch
        {
            "time" => TraceEvent.Fault(rows[4].TimeNs - 1, Pid, Pid, Region, 6, 1),
            "pid" => TraceEvent.Fault(rows[4].TimeNs + 1, 999, 999, Region, 6, 1),
            _ => (TraceEvent.Create(TraceEventKind.Munmap, rows[4].TimeNs + 1, Pid, Pid) with { Address = Region, Length = 0 }).Returned(0, 10),
        };
        rows.Insert(row, bad);
        string trace = Write(rows, check: kind == "munmap");
        var (code, output, err) = Run("replay", trace, "--designs", "none");
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains($"{trace}: row {row}: ", err);
        Assert.Contains(message, err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void AnUnknownDesignOrPlotFileIsAUsageError()
    {
        string trace = Write(Program());
        Assert.Equal(2, Run("replay", trace, "--designs", "none,nope").Code);
        var (code, _, err) = Run("replay", trace, "--plot", Path.Combine(_dir, "plot.gif"));
        Assert.Equal(2, code);
        Assert.Contains(".png or .svg", err);
        Assert.Equal(2, Run("replay", Path.Combine(_dir, "missing.parquet")).Code);
    }
}
