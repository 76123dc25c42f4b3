using System.Globalization;
using PtLab.Kernel.Record;
using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>A recording fact whose program needs the replay to replay <paramref name="needs"/>: skipped, saying so, until it does.</summary>
public sealed class ReplayFactAttribute : FactAttribute
{
    public ReplayFactAttribute(TraceEventKind needs)
    {
        Skip = new RecordFactAttribute().Skip;
        if (Skip is null && !TraceReplayer.Replays(needs))
        {
            Skip = $"the replay does not replay {TraceKinds.Name(needs)} yet (the program uses it)";
        }
    }
}

/// <summary>
/// Records the test programs (tests/Programs) with ptlab record's library API and replays each
/// trace on the design that matches the recording host: every process's exit VmPTE must be the
/// kernel's within 2% (8 kB below 400 kB), and every sample within 5% (the same 8 kB below 400 kB).
/// </summary>
public sealed class ReplayFidelityTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-replay-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ReplayResult RecordAndReplay(string program, params string[] args)
    {
        string exe = TestPrograms.Build(program);
        string trace = Path.Combine(_dir, program + ".parquet");
        var recorded = Recorder.Run(
            new RecordOptions { Output = trace, Command = [exe, .. args.Select(a => a.Replace("DIR", _dir, StringComparison.Ordinal))], CommandStdout = Path.Combine(_dir, program + ".out"), Interval = TimeSpan.FromMilliseconds(20) },
            TextWriter.Null, default);
        Assert.Equal(0, recorded.ExitCode);
        return Replay(trace, program);
    }

    private ReplayResult Replay(string trace, string program, string? under = null)
    {
        using var reader = TraceReader.Open(trace);
        string design = under ?? reader.Metadata.Host[HostFacts.MatchingDesign];
        var result = TraceReplayer.Run(reader, new ReplayOptions { Design = design, DesignFactory = Designs.Factory(design)!, RamBytes = 8L << 30, Cpus = 2 });
        foreach (var p in result.Processes)
        {
            output.WriteLine($"{program} pid {p.Pid} ({p.Name}), {design}: " + string.Join(", ", p.Samples.Select(s =>
                string.Create(CultureInfo.InvariantCulture, $"{TraceKinds.Name(s.Kind)} {s.Compared.VmPteKb}/{s.Kernel.VmPteKb}"))));
        }

        output.WriteLine("divergences: " + string.Join(", ", result.Divergences.Select(d => $"{d.Key}={d.Value}")));
        output.WriteLine("unsupported: " + string.Join(", ", result.Unsupported.Select(d => $"{d.Key}={d.Value}")));
        return result;
    }

    private static void MatchesTheKernel(ReplayResult r)
    {
        Assert.NotEmpty(r.Processes);
        foreach (var p in r.Processes)
        {
            var exit = p.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
            Assert.True(
                ReplayFidelity.Within(exit.Kernel.VmPteKb, exit.Kernel.VmPteKb + exit.VmPteDifferenceKb, ReplayFidelity.ExitPercent),
                $"pid {p.Pid} ({p.Name}): exit VmPTE {exit.Compared.VmPteKb} kB in the model, {exit.Kernel.VmPteKb} kB in the kernel");
            foreach (var s in p.Samples)
            {
                Assert.True(
                    ReplayFidelity.Within(s.Kernel.VmPteKb, s.Kernel.VmPteKb + s.VmPteDifferenceKb, ReplayFidelity.SamplePercent),
                    $"pid {p.Pid} ({p.Name}): {TraceKinds.Name(s.Kind)} sample at {s.TimeNs} ns: VmPTE {s.Compared.VmPteKb} kB in the model, {s.Kernel.VmPteKb} kB in the kernel");
            }
        }
    }

    /// <summary>
    /// <c>record -p</c> of a process that built its tables (empty ones too) before the attach and keeps changing
    /// its address space in two threads meanwhile: the replay starts from the layout and the pages
    /// read with every thread stopped, so every sample, the attach sample first, matches the
    /// kernel's, and nothing perf saw before that moment is replayed on top (a fault or a call of
    /// then, replayed before the layout, would fault outside the model's VMAs or fail).
    /// </summary>
    [RecordFact]
    public async Task AnAttachedRecordingStartsFromTheProcesssLayoutAndPages()
    {
        // It runs until its standard input ends (at most 120 s): ended once the recording has had
        // 1.5 s of it, however long perf and the tracer took to start on a loaded machine.
        string trace = Path.Combine(_dir, "attachee.parquet");
        var recorded = await RecordAttached(TestPrograms.Build("attachee"), "120", trace, TimeSpan.FromMilliseconds(1500), TimeSpan.FromMilliseconds(20));
        TraceMetadata metadata;
        int resident, sealedRanges;
        using (var reader = TraceReader.Open(trace))
        {
            metadata = reader.Metadata;
            var rows = reader.ReadEvents().ToList();
            resident = rows.Count(e => e.Kind == TraceEventKind.Resident);
            sealedRanges = rows.Count(e => e.Kind == TraceEventKind.VmaSealed && e.Length == 2UL << 20);
        }

        // The region it sealed before the attach is in the layout as sealed where the host can
        // seal, so that the refused mprotect and munmap at its end replay as refused (no
        // difference below).
        if (KernelInfo.Probe().HasMseal)
        {
            Assert.Equal(1, sealedRanges);
        }

        Assert.Equal("attach", metadata.Source);
        // Recorded until the process exited: whole, with its exit status (perf's SIGTERM to the tracer after it does not cut it).
        Assert.False(metadata.Truncated);
        Assert.Equal(0, recorded.ExitCode);
        Assert.True(long.Parse(metadata.Notes["attach_events_before_layout"], CultureInfo.InvariantCulture) >= 0);
        if (metadata.Notes.TryGetValue("attach_resident_off", out var off))
        {
            output.WriteLine($"the pages at the attach were not recorded here ({off}): only the layout is checked");
            var r = Replay(trace, "attachee");
            Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("SegvMapErr", StringComparison.Ordinal));
            return;
        }

        // The 64 MiB written, the 16 MiB of zero pages, the 8 MiB made read-only and the file at least.
        Assert.True(resident >= 3, $"{resident} resident rows");
        var result = Replay(trace, "attachee");
        MatchesTheKernel(result);
        // Not even an mmap placed elsewhere: the layout gives mmap_base, as exec's does. Only
        // where the two churning threads' calls overlapped may the model place otherwise, as
        // the trace does not say which of the two the kernel placed first; the kernel's address
        // is used all the same, and the layouts stay one.
        Assert.DoesNotContain(result.Divergences.Keys, k => !k.EndsWith(TraceReplayer.InFlight, StringComparison.Ordinal));
        var replayed = Assert.Single(result.Processes);
        var attach = Assert.Single(replayed.Samples, s => s.Kind == TraceEventKind.StatusAttach);
        Assert.True(attach.Kernel.VmPteKb >= 4 * 44, $"the attach sample shows {attach.Kernel.VmPteKb} kB of tables in the kernel");
        // The 16 tables left empty by the munmaps, made as found (the design frees none of them on its own).
        output.WriteLine($"{replayed.EmptyTablesAtAttach} empty PTE tables made at the attach");
        Assert.InRange(replayed.EmptyTablesAtAttach, 16, 64);
        Assert.Equal(attach.Kernel.VmPteKb, attach.Compared.VmPteKb);

        // pte-ref frees a table with its last entry: it starts without the empty ones, and only those.
        var counted = Assert.Single(Replay(trace, "attachee", "pte-ref").Processes);
        var start = Assert.Single(counted.Samples, s => s.Kind == TraceEventKind.StatusAttach);
        Assert.Equal(replayed.EmptyTablesAtAttach, counted.EmptyTablesAtAttach);
        Assert.Equal(attach.Kernel.VmPteKb - (4 * counted.EmptyTablesAtAttach), start.Model.VmPteKb);
    }

    /// <summary>
    /// <c>record -p</c> of a process that does nothing until its input ends: its first event of
    /// perf's comes only then, long after the layout was read, and the task perf synthesized must
    /// still come before the layout's rows (before, every one of them was dropped, and the replay
    /// had no VMA for the faults at the end). The replay matches the kernel at every sample; where
    /// the host has swap, the half it paged out is rebuilt as swap entries, VmSwap matching too.
    /// </summary>
    [RecordFact]
    public async Task AnIdleProcessIsRecordedFromItsLayoutWhenItsFirstEventComesLate()
    {
        string trace = Path.Combine(_dir, "idle.parquet");
        var recorded = await RecordAttached(TestPrograms.Build("idle"), "", trace, TimeSpan.FromSeconds(1), TimeSpan.FromMilliseconds(50));
        Assert.Equal(0, recorded.ExitCode);
        TraceMetadata metadata;
        using (var reader = TraceReader.Open(trace))
        {
            metadata = reader.Metadata;
        }

        Assert.Equal("0", metadata.Notes["dropped_samples"]);
        var result = Replay(trace, "idle");
        MatchesTheKernel(result);
        Assert.Empty(result.Divergences);
        var replayed = Assert.Single(result.Processes);
        var attach = Assert.Single(replayed.Samples, s => s.Kind == TraceEventKind.StatusAttach);
        Assert.Equal(attach.Kernel.VmPteKb, attach.Compared.VmPteKb);
        Assert.Equal(attach.Kernel.VmSwapKb, attach.Compared.VmSwapKb);
        output.WriteLine($"swapped out at the attach: {attach.Kernel.VmSwapKb} kB (the host's swap decides), {metadata.Notes[TraceMetadata.AttachSwappedPagesNote]} pages noted");
    }

    /// <summary>
    /// Starts <paramref name="exe"/>, waits for its "ready", and records it with <c>record -p</c>
    /// until <paramref name="recordFor"/> after the tracer is seen attached (however long perf and
    /// the tracer took to start), when its standard input is closed; it must then exit 0.
    /// </summary>
    private static async Task<RecordResult> RecordAttached(string exe, string args, string trace, TimeSpan recordFor, TimeSpan interval)
    {
        using var process = new System.Diagnostics.Process { StartInfo = new System.Diagnostics.ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardInput = true } };
        process.Start();
        try
        {
            Assert.Equal("ready", process.StandardOutput.ReadLine());
            var ender = Task.Run(async () =>
            {
                for (int i = 0; i < 1200 && !Traced(process.Id); i++)
                {
                    await Task.Delay(50);
                }

                await Task.Delay(recordFor);
                process.StandardInput.Close();
            });
            var recorded = Recorder.Run(new RecordOptions { Output = trace, AttachPid = process.Id, Interval = interval }, TextWriter.Null, default);
            await ender;
            Assert.True(process.WaitForExit(30_000));
            Assert.Equal(0, process.ExitCode);
            return recorded;
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
    }

    /// <summary>Whether a tracer is attached to <paramref name="pid"/> (its status's TracerPid); false once it is gone.</summary>
    private static bool Traced(int pid)
    {
        try
        {
            return File.ReadLines($"/proc/{pid}/status").Any(l => l.StartsWith("TracerPid:", StringComparison.Ordinal) && l.Split(':')[1].Trim() != "0");
        }
        catch (IOException)
        {
            return false;
        }
    }

    [RecordFact]
    public void CoverLetterLoop() => MatchesTheKernel(RecordAndReplay("cover", "48", "4"));

    [RecordFact]
    public void HalvesOfEachChunk() => MatchesTheKernel(RecordAndReplay("halves", "16", "2"));

    [RecordFact]
    public void MallocChurn() => MatchesTheKernel(RecordAndReplay("churn", "20000", "7"));

    [RecordFact]
    public void Threads() => MatchesTheKernel(RecordAndReplay("threads", "4"));

    [RecordFact]
    public void ForkAndExec() => MatchesTheKernel(RecordAndReplay("forkexec", "2"));

    [ReplayFact(TraceEventKind.Mremap)]
    public void FileMappingsAndMremap() => MatchesTheKernel(RecordAndReplay("filemap", "DIR"));

    /// <summary>
    /// A shared file mapping grown with mremap as its file grows by ftruncate (which no event
    /// records): the writes to the new part must find the file's pages, not SIGBUS at the size the
    /// file had when first mapped.
    /// </summary>
    [RecordFact]
    public void AFileMappingGrownWithItsFile()
    {
        var r = RecordAndReplay("growfile", "DIR");
        MatchesTheKernel(r);
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("Bus", StringComparison.Ordinal));
    }

    /// <summary>
    /// A hole punched in shared memory by another process (fallocate, which no event records):
    /// the host's page-cache deletions take the pages out of the mapping in the model too, so
    /// the exit RssShmem is the kernel's, not the 8 MiB written.
    /// </summary>
    [RecordFact]
    public void AHolePunchedInSharedMemoryByAnotherProcessLeavesTheMapping()
    {
        var r = RecordAndReplay("cutshared", "hole");
        MatchesTheKernel(r);
        var parent = r.Processes.First();
        var exit = parent.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        output.WriteLine($"exit RssShmem {exit.Compared.RssShmemKb} kB in the model, {exit.Kernel.RssShmemKb} kB in the kernel");
        Assert.Equal((4 << 10) + 4, exit.Kernel.RssShmemKb);
        Assert.Equal(exit.Kernel.RssShmemKb, exit.Compared.RssShmemKb);
    }

    /// <summary>
    /// A mapped file truncated by another process (ftruncate, which no event records): the host's
    /// page-cache deletions take the pages past the new end out of the mapping in the model too,
    /// so the exit RssFile is the kernel's, not the 8 MiB written.
    /// </summary>
    [RecordFact]
    public void AMappedFileTruncatedByAnotherProcessLeavesTheMapping()
    {
        var r = RecordAndReplay("cutshared", "truncate", "DIR");
        MatchesTheKernel(r);
        var exit = r.Processes.First().Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        output.WriteLine($"exit RssFile {exit.Compared.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
        Assert.InRange(exit.Kernel.RssFileKb, 4 << 10, 6 << 10); // the file's half, and the program's own pages (1.2 MiB)
        Assert.Equal(exit.Kernel.RssFileKb, exit.Compared.RssFileKb);
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("page cache", StringComparison.Ordinal));
    }

    /// <summary>
    /// Forked children grow the heap they inherited with brk: the break is the mm's, copied by
    /// fork, so the children's first brk extends the parent's heap and their writes land in it.
    /// </summary>
    [RecordFact]
    public void ForkedChildrenGrowTheirInheritedHeap()
    {
        ProcessesMatchTheKernel("forkbrk", 3, "Segv", "brk");
    }

    /// <summary>
    /// Records and replays <paramref name="program"/>, which must make <paramref name="processes"/>
    /// processes that all match the kernel, with no divergence that names any of <paramref name="words"/>.
    /// </summary>
    private ReplayResult ProcessesMatchTheKernel(string program, int processes, params string[] words)
    {
        var r = RecordAndReplay(program);
        Assert.Equal(processes, r.Processes.Count);
        MatchesTheKernel(r);
        Assert.DoesNotContain(r.Divergences.Keys, k => words.Any(w => k.Contains(w, StringComparison.Ordinal)));
        return r;
    }

    /// <summary>
    /// A file mapped part by part at adjoining offsets, each part merging with the one before: the
    /// kernel's mapping record reports the merged VMA, which the replay must take as the new part's
    /// record (the file's pages, not anonymous memory), so the exit VmRSS is the kernel's.
    /// </summary>
    [RecordFact]
    public void AFileMappedInPartsThatMerge()
    {
        var r = RecordAndReplay("filemerge", "DIR");
        MatchesTheKernel(r);
        var exit = r.Processes.Single().Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        output.WriteLine($"exit VmRSS {exit.Compared.VmRssKb} kB in the model, {exit.Kernel.VmRssKb} kB in the kernel");
        Assert.True(ReplayFidelity.Within(exit.Kernel.VmRssKb, exit.Compared.VmRssKb, ReplayFidelity.ExitPercent), $"exit VmRSS {exit.Compared.VmRssKb} kB in the model, {exit.Kernel.VmRssKb} kB in the kernel");
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("mapping record", StringComparison.Ordinal));
    }

    /// <summary>
    /// Children forked by a dynamically linked program that exit at once: fork copies the tables
    /// of written segments only, so each child's exit RssFile is the kernel's only if exec's
    /// segments are charged as the kernel charges them and a RELRO segment stays apart from the
    /// read-only segment before it.
    /// </summary>
    [RecordFact]
    public void ForkedChildrenCopyTheTablesOfWrittenSegmentsOnly()
    {
        var r = RecordAndReplay("forkrelro");
        Assert.Equal(3, r.Processes.Count);
        MatchesTheKernel(r);
        foreach (var p in r.Processes)
        {
            var exit = p.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
            output.WriteLine($"pid {p.Pid}: exit RssFile {exit.Compared.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
            Assert.True(ReplayFidelity.Within(exit.Kernel.RssFileKb, exit.Compared.RssFileKb, ReplayFidelity.ExitPercent), $"pid {p.Pid}: exit RssFile {exit.Compared.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
        }
    }

    /// <summary>
    /// The vDSO, which exec maps as a special mapping of the kernel's pages: each page read counts
    /// in RssFile, the [vvar] pages in no counter, and the forked child, which fork gives no
    /// entries for the vDSO, refaults its pages. Every process's exit RssFile is the kernel's
    /// exactly, as the vDSO is the only file-like memory the child maps anew.
    /// </summary>
    [RecordFact]
    public void TheVdsoIsTheKernelsPagesCountedInRssFile()
    {
        var r = ProcessesMatchTheKernel("vdso", 2, "[vdso]", "[vvar");
        foreach (var p in r.Processes)
        {
            var exit = p.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
            output.WriteLine($"pid {p.Pid}: exit RssFile {exit.Compared.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
            Assert.True(exit.Kernel.RssFileKb > 0, $"pid {p.Pid}: the kernel counted no file pages: the program did not run as meant");
            Assert.Equal(exit.Kernel.RssFileKb, exit.Compared.RssFileKb);
        }
    }

    [RecordFact]
    public void TransparentHugePages() => MatchesTheKernel(RecordAndReplay("thp"));

    /// <summary>
    /// MADV_COLLAPSE by madvise and by process_madvise, then splits and unmaps of the huge pages:
    /// every call is replayed (none counted as not modelled) with the kernel's result, and the exit
    /// RssAnon, which the collapses fill to whole 2 MiB, is the kernel's within 2%.
    /// </summary>
    [RecordFact]
    public void MadviseCollapse()
    {
        var r = RecordAndReplay("madvcollapse");
        MatchesTheKernel(r);
        var exit = r.Processes.Single().Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        output.WriteLine($"exit RssAnon {exit.Compared.RssAnonKb} kB in the model, {exit.Kernel.RssAnonKb} kB in the kernel");
        Assert.True(ReplayFidelity.Within(exit.Kernel.RssAnonKb, exit.Compared.RssAnonKb, ReplayFidelity.ExitPercent), $"exit RssAnon {exit.Compared.RssAnonKb} kB in the model, {exit.Kernel.RssAnonKb} kB in the kernel");
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("COLLAPSE", StringComparison.Ordinal) || k.Contains("advice 25", StringComparison.Ordinal));
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("madvise", StringComparison.Ordinal));
    }

    /// <summary>
    /// A memfd mapped twice, chunk by chunk (the kernel merges the chunks and reports the merged
    /// mapping), and /dev/zero mapped shared and private, then a fork: every mapping is replayed as
    /// what it is (shmem, shared with the child; anonymous memory), none as a stand-in, and the
    /// child, which the kernel gives no copied tables for the shared views, matches the kernel.
    /// RssShmem at exit is the kernel's within 2%.
    /// </summary>
    [RecordFact]
    public void MemfdDoubleMappingAndDevZero()
    {
        var r = RecordAndReplay("memfd");
        MatchesTheKernel(r);
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("mapping record", StringComparison.Ordinal));
        foreach (var p in r.Processes)
        {
            var exit = p.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
            output.WriteLine($"pid {p.Pid}: exit RssShmem {exit.Compared.RssShmemKb} kB in the model, {exit.Kernel.RssShmemKb} kB in the kernel");
            Assert.True(exit.Kernel.RssShmemKb > 0, "the kernel counted no shmem: the program did not run as meant");
            Assert.True(ReplayFidelity.Within(exit.Kernel.RssShmemKb, exit.Compared.RssShmemKb, ReplayFidelity.ExitPercent), $"pid {p.Pid}: exit RssShmem {exit.Compared.RssShmemKb} kB in the model, {exit.Kernel.RssShmemKb} kB in the kernel");
        }
    }

    /// <summary>
    /// A System V segment attached by a parent, inherited by its child, attached there a second
    /// time read-only and detached once: the recording holds the shmat and shmdt rows, the replay
    /// maps the segment's one shmem file in both processes (so the child's reads find the pages its
    /// parent wrote, and the parent's find the ones the child's reads allocated), and each process's
    /// exit VmPTE and RssShmem are the kernel's within 2%.
    /// </summary>
    [ReplayFact(TraceEventKind.Shmat)]
    public void SysvSharedMemoryAttachedTwice()
    {
        var r = RecordAndReplay("sysvshm");
        using (var reader = TraceReader.Open(Path.Combine(_dir, "sysvshm.parquet")))
        {
            var calls = reader.ReadEvents().Where(e => e.Kind is TraceEventKind.Shmat or TraceEventKind.Shmdt).ToList();
            Assert.Equal([TraceEventKind.Shmat, TraceEventKind.Shmat, TraceEventKind.Shmdt], calls.Select(c => c.Kind));
            Assert.Equal([0UL, 0x1000UL], calls.Where(c => c.Kind == TraceEventKind.Shmat).Select(c => c.Flags)); // 0, SHM_RDONLY
            Assert.Equal((ulong)calls[0].Result, calls[2].Address); // the child detaches the inherited attach
            Assert.All(calls, c => Assert.True(c.Result >= 0, $"{TraceKinds.Name(c.Kind)} failed: {c.Result}"));
        }

        MatchesTheKernel(r);
        Assert.Equal(2, r.Processes.Count);
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("shm", StringComparison.Ordinal));
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("shm", StringComparison.Ordinal) || k.Contains("fault", StringComparison.Ordinal));
        foreach (var p in r.Processes)
        {
            var exit = p.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
            output.WriteLine($"pid {p.Pid}: exit RssShmem {exit.Compared.RssShmemKb} kB in the model, {exit.Kernel.RssShmemKb} kB in the kernel");
            Assert.True(exit.Kernel.RssShmemKb >= 16 << 10, "the kernel counted less than the segment as shmem: the program did not run as meant");
            Assert.True(ReplayFidelity.Within(exit.Kernel.RssShmemKb, exit.Compared.RssShmemKb, ReplayFidelity.ExitPercent), $"pid {p.Pid}: exit RssShmem {exit.Compared.RssShmemKb} kB in the model, {exit.Kernel.RssShmemKb} kB in the kernel");
        }
    }

    /// <summary>
    /// MADV_DONTFORK, DOFORK, WIPEONFORK, KEEPONFORK (and their EINVAL cases), MERGEABLE and
    /// UNMERGEABLE, then a fork: every call is replayed with the kernel's answer, none counted as
    /// not modelled, and the child, which lacks the DONTFORK range and gets the WIPEONFORK range
    /// without tables, matches the kernel.
    /// </summary>
    [RecordFact]
    public void ForkAdvices()
    {
        var r = RecordAndReplay("madvfork");
        MatchesTheKernel(r);
        Assert.Equal(2, r.Processes.Count);
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("advice", StringComparison.Ordinal));
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("madvise", StringComparison.Ordinal) || k.Contains("fault", StringComparison.Ordinal));
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("placed elsewhere", StringComparison.Ordinal)); // the recorded mmap_base
    }

    /// <summary>
    /// Faults the kernel answered with SIGSEGV and the program survived (a null read, a guard page
    /// written and read, a hole): the recording holds the four signals, and the replay, whose model
    /// refuses the same four faults the same way, counts no divergence.
    /// </summary>
    [RecordFact]
    public void FaultsTheKernelAnsweredWithSigsegv()
    {
        var r = RecordAndReplay("segv");
        MatchesTheKernel(r);
        using (var reader = TraceReader.Open(Path.Combine(_dir, "segv.parquet")))
        {
            var signals = reader.ReadEvents().Where(e => e.Kind == TraceEventKind.Signal).ToList();
            Assert.Equal([1UL, 2UL, 2UL, 1UL], signals.Select(s => s.Flags));
        }

        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("fault", StringComparison.Ordinal));
    }

    /// <summary>
    /// A cold 48 MiB file mapped with no advice and read in order: the replay must grow the folio
    /// order on readahead marks as the host does (with the recorded read_ahead_kb), and map the
    /// PMD-sized folios of the last part by PMD entries, or it keeps PTE tables the host does not have.
    /// </summary>
    [ReplayFact(TraceEventKind.Mmap)]
    public void ASequentiallyReadFileMapping()
    {
        // The model reads files in large folios as ext4 does since 6.16 (and xfs before it); the
        // file goes to a disk-backed directory, as a tmpfs one would give shmem pages.
        if (KernelInfo.Probe().ReleaseVersion is not { } v || v < new Version(6, 16))
        {
            output.WriteLine("SKIP: the host kernel is older than 6.16, whose ext4 reads files in large folios");
            return;
        }

        var dir = Directory.CreateDirectory(Path.Combine(KernelTarget.DiskBackedTempDirectory(), $"ptlab-replay-file-{Guid.NewGuid():N}"));
        try
        {
            MatchesTheKernel(RecordAndReplay("seqfile", dir.FullName));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
