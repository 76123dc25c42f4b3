using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel.Record;
using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// Files that are in the page cache when a program maps them: the recorder captures each mapped
/// file's residency (and folio sizes) when it first appears, and the replay starts the model's
/// page cache with those pages, so that fault-around maps what the host's maps.
/// </summary>
public sealed class PageCacheReplayTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-pagecache-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TheTracersResidencyLinesBecomeAFileRowAndItsRuns()
    {
        string samples = Path.Combine(_dir, "samples");
        File.WriteAllLines(samples,
        [
            "H ptlab-tracer 1 10",
            "R 1000 11 exec",
            "N 1001 11 11",
            "C 1002 11 11 fe:00 42 20000 2 0:1 4:1:0 /data/a file with spaces",
            "C 1003 11 11 00:1b 7 0 0 /dev/shm/empty",
            "C 1004 11 11 fe:01 9 4194304 1 200:200:9 /big",
        ]);
        var rows = TracerOutput.Read(samples).Rows;
        Assert.Equal(
            [TraceEventKind.FileCache, TraceEventKind.CacheRange, TraceEventKind.CacheRange, TraceEventKind.FileCache, TraceEventKind.FileCache, TraceEventKind.CacheRange],
            rows.Select(r => r.Kind));
        Assert.Equal(("fe:00", 42UL, 20000UL, 2L, "/data/a file with spaces"), (rows[0].Dev, rows[0].Inode, rows[0].Length, rows[0].Result, rows[0].Path));
        Assert.Equal((0UL, 4096UL, false), (rows[1].Offset, rows[1].Length, rows[1].Is(TraceFields.Flags)));
        Assert.Equal((4UL * 4096, 4096UL, 0UL), (rows[2].Offset, rows[2].Length, rows[2].Flags));
        Assert.Equal(("00:1b", 0L), (rows[3].Dev, rows[3].Result));
        Assert.Equal((2UL << 20, 2UL << 20, 9UL), (rows[5].Offset, rows[5].Length, rows[5].Flags));

        // Every row the tracer made passes the trace's own checks.
        using var w = TraceWriter.Create(Path.Combine(_dir, "t.parquet"));
        w.Append(TraceEvent.Create(TraceEventKind.Task, 999, 11, 11) with { Path = "x" });
        foreach (var r in rows)
        {
            w.Append(r);
        }

        w.Complete(new TraceMetadata { PageCache = TraceMetadata.PageCacheMapped });
    }

    /// <summary>
    /// The tracer's page-cache change lines (written in batches, after lines stamped later) become
    /// cache_add and cache_delete rows of no task, in time order, with the context's pid as the
    /// result; its G and O lines say whether changes and folio orders were recorded.
    /// </summary>
    [Fact]
    public void TheTracersPageCacheChangeLinesBecomeRowsInTimeOrder()
    {
        string samples = Path.Combine(_dir, "samples");
        File.WriteAllLines(samples,
        [
            "H ptlab-tracer 1 10",
            "O 998 off /proc/kpageflags cannot be opened (it needs CAP_SYS_ADMIN)",
            "G 999 on 2 CPUs",
            "R 1000 11 exec",
            "N 1001 11 11",
            "C 1002 11 11 fe:00 42 20000 0 /data/a",
            "S 1010 11 11 tick 1 1 1 1 1 1 1",
            "P 1004 11 11 a fe:00 42 4 2",
            "P 1006 812 812 d fe:00 42 4 2",
            "L 1011 3",
            "P 1003 0 0 a fe:00 42 0 0",
        ]);
        var t = TracerOutput.Read(samples);
        Assert.True(t.PageCacheChanges);
        Assert.False(t.FolioOrders);
        Assert.Equal("/proc/kpageflags cannot be opened (it needs CAP_SYS_ADMIN)", t.FolioOrdersOff);
        Assert.Equal((3L, 3L), (t.PageCacheChangeRows, t.PageCacheChangesLost));
        Assert.Equal([1002L, 1003, 1004, 1006, 1010], t.Rows.Select(r => r.TimeNs));
        Assert.Equal([TraceEventKind.FileCache, TraceEventKind.CacheAdd, TraceEventKind.CacheAdd, TraceEventKind.CacheDelete, TraceEventKind.Status], t.Rows.Select(r => r.Kind));
        var delete = t.Rows[3];
        Assert.Equal((0, 0, 4UL * 4096, 2UL, "fe:00", 42UL, 812L), (delete.Pid, delete.Tid, delete.Offset, delete.Flags, delete.Dev, delete.Inode, delete.Result));

        using var w = TraceWriter.Create(Path.Combine(_dir, "t.parquet"));
        w.Append(TraceEvent.Create(TraceEventKind.Task, 999, 11, 11) with { Path = "x" });
        foreach (var r in t.Rows)
        {
            w.Append(r);
        }

        w.Complete(new TraceMetadata { PageCache = TraceMetadata.PageCacheMapped, PageCacheChanges = TraceMetadata.PageCacheChangesRecorded, FolioOrders = false });
    }

    [Theory]
    [InlineData("P 1004 11 11 x fe:00 42 4 2")]
    [InlineData("P 1004 11 11 a fe:00 42 4")]
    [InlineData("P 1004 11 11 a fe:00 42 4 21")]
    [InlineData("P 1004 11 11 a fe:00 42 zz 0")]
    [InlineData("C 1002 11 11 fe:00 42 20000 3 0:1 /a")]
    [InlineData("C 1002 11 11 fe:00 42 20000 1 zz:1 /a")]
    [InlineData("C 1002 11 11 fe:00 -42 20000 0 /a")]
    public void AMalformedResidencyOrChangeLineIsRejectedNamingIt(string line)
    {
        string samples = Path.Combine(_dir, "bad");
        File.WriteAllLines(samples, ["H ptlab-tracer 1 10", line]);
        var e = Assert.Throws<TraceFormatException>(() => TracerOutput.Read(samples));
        Assert.StartsWith(samples + ":2:", e.Message);
    }

    /// <summary>
    /// warmcold maps a 16 MiB file that was read whole before (cached, in the large folios
    /// readahead gave it) and one that was written back and dropped (cold), each read every 64th
    /// page, half of it under MADV_RANDOM. The recording holds both files' residency as the host
    /// had it, and replayed with it, every sample's RssFile and VmPTE is the kernel's within the
    /// replay's tolerances; replayed as cold (the model's assumption before the residency was
    /// recorded), the warm file's pages are missing from RssFile.
    /// </summary>
    [RecordFact]
    public void AWarmFileAndAColdFileReplayWithTheHostsFileRss()
    {
        var (exe, dir, trace) = Prepare("warmcold");
        try
        {
            var prep = Process.Start(new ProcessStartInfo(exe, ["prep", dir.FullName]) { RedirectStandardOutput = true })!;
            string said = prep.StandardOutput.ReadToEnd();
            prep.WaitForExit();
            output.WriteLine(said.Trim());
            Assert.Equal(0, prep.ExitCode);
            long Cached(string name) => long.Parse(said.Split('\n').Single(l => l.StartsWith(name + ":", StringComparison.Ordinal)).Split(' ')[1], CultureInfo.InvariantCulture);
            if (Cached("cold") > 4096 / 20 || Cached("warm") < 4096 * 19 / 20)
            {
                output.WriteLine($"SKIP: the file system here kept {Cached("cold")} pages of a dropped file, or {Cached("warm")} of a file just read, cached");
                return;
            }

            var recorded = Recorder.Run(
                new RecordOptions { Output = trace, Command = [exe, dir.FullName], CommandStdout = Path.Combine(_dir, "warmcold.out"), Interval = TimeSpan.FromMilliseconds(20) },
                TextWriter.Null, default);
            Assert.Equal(0, recorded.ExitCode);
        }
        finally
        {
            dir.Delete(recursive: true);
        }

        // What the recording found of each file when the program first mapped it.
        using (var reader = TraceReader.Open(trace))
        {
            Assert.Equal(TraceMetadata.PageCacheMapped, reader.Metadata.PageCache);
            var rows = reader.ReadEvents().ToList();
            ulong CachedBytes(string name)
            {
                int at = rows.FindIndex(r => r.Kind == TraceEventKind.FileCache && r.Path!.EndsWith("/ptlab-" + name, StringComparison.Ordinal));
                Assert.True(at >= 0, $"no residency of the {name} file in the trace");
                return (ulong)rows.Skip(at + 1).Take((int)rows[at].Result).Sum(r => (long)r.Length);
            }

            output.WriteLine($"recorded: warm {CachedBytes("warm") >> 12} pages cached, cold {CachedBytes("cold") >> 12}");
            Assert.True(CachedBytes("warm") >= (16UL << 20) * 9 / 10, "the warm file was not found cached");
            Assert.True(CachedBytes("cold") <= (16UL << 20) / 10, "the cold file was found cached");
        }

        AssertSamplesWithin(Replay(trace, pageCacheState: true));

        var cold = Replay(trace, pageCacheState: false).Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        Assert.True(cold.Compared.RssFileKb < cold.Kernel.RssFileKb && !ReplayFidelity.Within(cold.Kernel.RssFileKb, cold.Compared.RssFileKb, ReplayFidelity.SamplePercent),
            $"replayed as cold, the exit RssFile should fall short of the kernel's: {cold.Compared.RssFileKb} kB in the model, {cold.Kernel.RssFileKb} kB in the kernel");
    }

    /// <summary>
    /// cachechange maps a cold 16 MiB file under MADV_RANDOM, then read()s its first 8 MiB, has a
    /// child process drop [2 MiB, 4 MiB) with POSIX_FADV_DONTNEED, and reads every 64th page of
    /// the mapping. The residency taken when the file first appeared says "nothing cached"; what
    /// happened after (the read's readahead, the child's invalidation) shows only in the page-cache
    /// changes the recorder reads from the filemap tracepoints. Replayed with them, the exit and
    /// every sample of the mapping process are the kernel's within the replay's tolerances
    /// (RssFile and VmPTE); replayed without them (the rows removed, as a recording without the
    /// tracepoints would be), the faults find nothing cached and RssFile falls short.
    /// </summary>
    [RecordFact]
    public void PageCacheChangesAfterAFileFirstAppearedReplayWithTheHostsFileRss()
    {
        var (exe, dir, trace) = Prepare("cachechange");
        try
        {
            var recorded = Recorder.Run(
                new RecordOptions { Output = trace, Command = [exe, dir.FullName], CommandStdout = Path.Combine(_dir, "cachechange.out"), Interval = TimeSpan.FromMilliseconds(20) },
                TextWriter.Null, default);
            output.WriteLine(File.ReadAllText(Path.Combine(_dir, "cachechange.out")).Trim());
            Assert.Equal(0, recorded.ExitCode);
        }
        finally
        {
            dir.Delete(recursive: true);
        }

        TraceMetadata metadata;
        List<TraceEvent> rows;
        using (var reader = TraceReader.Open(trace))
        {
            metadata = reader.Metadata;
            rows = [.. reader.ReadEvents()];
        }

        if (metadata.PageCacheChanges != TraceMetadata.PageCacheChangesRecorded)
        {
            output.WriteLine($"SKIP: page-cache changes were not recorded here ({metadata.Notes.GetValueOrDefault("page_cache_changes_off")})");
            return;
        }

        // The file appeared cold; its changes came after, the read's additions and the child's deletions.
        var file = rows.Single(r => r.Kind == TraceEventKind.FileCache && r.Path!.Contains("/ptlab-cachechange.", StringComparison.Ordinal));
        // (Before the program's exit: the file, unlinked, leaves the cache whole when it closes.)
        long exitNs = rows.Last(r => r.Kind == TraceEventKind.StatusExit && r.Pid == metadata.RootPid).TimeNs;
        var changes = rows.Where(r => TraceKinds.IsPageCacheChange(r.Kind) && r.Dev == file.Dev && r.Inode == file.Inode && r.TimeNs < exitNs).ToList();
        long Pages(TraceEventKind kind, ulong from, ulong to) =>
            changes.Where(c => c.Kind == kind && c.Offset >= from && c.Offset < to).Sum(c => 1L << (int)c.Flags);
        output.WriteLine($"residency at first appearance: {file.Result} runs; changes: {Pages(TraceEventKind.CacheAdd, 0, ulong.MaxValue)} pages added, {Pages(TraceEventKind.CacheDelete, 0, ulong.MaxValue)} deleted ({changes.Count} rows)");
        Assert.True(Pages(TraceEventKind.CacheAdd, 0, 8UL << 20) >= 2048, "the read of the first 8 MiB added fewer than its 2048 pages");
        Assert.True(Pages(TraceEventKind.CacheDelete, 2UL << 20, 4UL << 20) >= 512 * 9 / 10, "the child's POSIX_FADV_DONTNEED of [2 MiB, 4 MiB) deleted fewer than its 512 pages");
        Assert.All(changes, c => Assert.True(c.TimeNs > file.TimeNs, "a change stamped before the file's residency"));

        int root = metadata.RootPid!.Value;
        Assert.True(Pages(TraceEventKind.CacheDelete, 0, 2UL << 20) + Pages(TraceEventKind.CacheDelete, 4UL << 20, ulong.MaxValue) == 0, "pages outside the dropped range left the cache");
        var with = Replay(trace, pageCacheState: true, pid: root);
        var exit = with.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        Assert.True(ReplayFidelity.Within(exit.Kernel.RssFileKb, exit.Compared.RssFileKb, ReplayFidelity.ExitPercent),
            $"exit RssFile {exit.Compared.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
        Assert.True(ReplayFidelity.Within(exit.Kernel.VmPteKb, exit.Kernel.VmPteKb + exit.VmPteDifferenceKb, ReplayFidelity.ExitPercent),
            $"exit VmPTE {exit.Compared.VmPteKb} kB in the model, {exit.Kernel.VmPteKb} kB in the kernel");
        AssertSamplesWithin(with);

        // The same recording without the change rows.
        string without = Path.Combine(_dir, "cachechange-without.parquet");
        using (var w = TraceWriter.Create(without))
        {
            foreach (var r in rows.Where(r => !TraceKinds.IsPageCacheChange(r.Kind)))
            {
                w.Append(r);
            }

            w.Complete(metadata with { PageCacheChanges = TraceMetadata.PageCacheChangesNone });
        }

        var missed = Replay(without, pageCacheState: true, pid: root).Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        output.WriteLine($"exit RssFile: kernel {exit.Kernel.RssFileKb} kB, replay with the changes {exit.Compared.RssFileKb} kB, without {missed.Compared.RssFileKb} kB");
        Assert.True(missed.Compared.RssFileKb < exit.Kernel.RssFileKb && !ReplayFidelity.Within(exit.Kernel.RssFileKb, missed.Compared.RssFileKb, ReplayFidelity.SamplePercent),
            $"without the changes the exit RssFile should fall short of the kernel's: {missed.Compared.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
    }

    /// <summary>The test program built, a folder for its file on a disk-backed file system, and where its trace goes.</summary>
    private (string Exe, DirectoryInfo Dir, string Trace) Prepare(string program) =>
        (TestPrograms.Build(program),
         Directory.CreateDirectory(Path.Combine(KernelTarget.DiskBackedTempDirectory(), $"ptlab-{program}-{Guid.NewGuid():N}")),
         Path.Combine(_dir, program + ".parquet"));

    /// <summary>Every sample's RssFile and VmPTE within the replay's sample tolerance of the kernel's.</summary>
    private static void AssertSamplesWithin(ReplayProcessResult p)
    {
        foreach (var s in p.Samples)
        {
            Assert.True(ReplayFidelity.Within(s.Kernel.RssFileKb, s.Compared.RssFileKb, ReplayFidelity.SamplePercent),
                $"{TraceKinds.Name(s.Kind)} sample at {s.TimeNs} ns: RssFile {s.Compared.RssFileKb} kB in the model, {s.Kernel.RssFileKb} kB in the kernel");
            Assert.True(ReplayFidelity.Within(s.Kernel.VmPteKb, s.Kernel.VmPteKb + s.VmPteDifferenceKb, ReplayFidelity.SamplePercent),
                $"{TraceKinds.Name(s.Kind)} sample at {s.TimeNs} ns: VmPTE {s.Compared.VmPteKb} kB in the model, {s.Kernel.VmPteKb} kB in the kernel");
        }
    }

    private ReplayProcessResult Replay(string trace, bool pageCacheState, int? pid = null)
    {
        using var reader = TraceReader.Open(trace);
        string design = reader.Metadata.Host[HostFacts.MatchingDesign];
        var options = new ReplayOptions { Design = design, DesignFactory = Designs.Factory(design)!, RamBytes = 8L << 30, Cpus = 2, PageCacheState = pageCacheState }.WithHostOf(reader.Metadata);
        var r = new TraceReplayer(trace, options);
        foreach (var batch in reader.ReadBatches())
        {
            r.Apply(batch);
        }

        var result = r.Finish();
        output.WriteLine($"{(pageCacheState ? "recorded page cache" : "cold files")}: " + string.Join("; ", result.FileModels.Select(f => $"{f.Value} × {f.Key}")));
        var p = pid is { } only ? result.Processes.Single(q => q.Pid == only) : result.Processes.Single();
        foreach (var s in p.Samples)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {TraceKinds.Name(s.Kind),-12} RssFile {s.Compared.RssFileKb,6}/{s.Kernel.RssFileKb,6} kB  VmPTE {s.Compared.VmPteKb,4}/{s.Kernel.VmPteKb,4} kB (model/kernel)"));
        }

        return p;
    }
}
