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

    [Theory]
    [InlineData("C 1002 11 11 fe:00 42 20000 3 0:1 /a")]
    [InlineData("C 1002 11 11 fe:00 42 20000 1 zz:1 /a")]
    [InlineData("C 1002 11 11 fe:00 -42 20000 0 /a")]
    public void AMalformedResidencyLineIsRejectedNamingIt(string line)
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
        string exe = TestPrograms.Build("warmcold");
        var dir = Directory.CreateDirectory(Path.Combine(KernelTarget.DiskBackedTempDirectory(), $"ptlab-warmcold-{Guid.NewGuid():N}"));
        string trace = Path.Combine(_dir, "warmcold.parquet");
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

        var warm = Replay(trace, pageCacheState: true);
        foreach (var s in warm.Samples)
        {
            Assert.True(ReplayFidelity.Within(s.Kernel.RssFileKb, s.Compared.RssFileKb, ReplayFidelity.SamplePercent),
                $"{TraceKinds.Name(s.Kind)} sample at {s.TimeNs} ns: RssFile {s.Compared.RssFileKb} kB in the model, {s.Kernel.RssFileKb} kB in the kernel");
            Assert.True(ReplayFidelity.Within(s.Kernel.VmPteKb, s.Kernel.VmPteKb + s.VmPteDifferenceKb, ReplayFidelity.SamplePercent),
                $"{TraceKinds.Name(s.Kind)} sample at {s.TimeNs} ns: VmPTE {s.Compared.VmPteKb} kB in the model, {s.Kernel.VmPteKb} kB in the kernel");
        }

        var cold = Replay(trace, pageCacheState: false).Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        Assert.True(cold.Compared.RssFileKb < cold.Kernel.RssFileKb && !ReplayFidelity.Within(cold.Kernel.RssFileKb, cold.Compared.RssFileKb, ReplayFidelity.SamplePercent),
            $"replayed as cold, the exit RssFile should fall short of the kernel's: {cold.Compared.RssFileKb} kB in the model, {cold.Kernel.RssFileKb} kB in the kernel");
    }

    private ReplayProcessResult Replay(string trace, bool pageCacheState)
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
        var p = result.Processes.Single();
        foreach (var s in p.Samples)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {TraceKinds.Name(s.Kind),-12} RssFile {s.Compared.RssFileKb,6}/{s.Kernel.RssFileKb,6} kB  VmPTE {s.Compared.VmPteKb,4}/{s.Kernel.VmPteKb,4} kB (model/kernel)"));
        }

        return p;
    }
}
