using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.Differential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// File-backed and shared mappings on the model (the design matching the host) and on the host
/// kernel, in ptlab's own address space, placed alone in an empty 512 GiB slot: VmPTE, RssFile,
/// RssAnon and RssShmem must move by the same amounts, and fault-around must map the same pages.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class FileMappingKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096;

    private static string Design => KernelInfo.Probe().MatchingDesign;

    /// <summary>The host's <c>read_ahead_kb</c> where the test files live: the model's files get the same read-around window.</summary>
    private static int ReadAheadKb => ReadAhead.KbFor(KernelTarget.DiskBackedTempDirectory()) ?? 128;

    private static (long Pte, long Anon, long File, long Shmem) Deltas(ScenarioResult r, MmStatus s) =>
        (s.VmPteKb - r.Before.VmPteKb, s.RssAnonKb - r.Before.RssAnonKb, s.RssFileKb - r.Before.RssFileKb, s.RssShmemKb - r.Before.RssShmemKb);

    private static bool SameDeltas(ScenarioResult model, ScenarioResult kernel) =>
        FileMappingScenario.Steps.All(l => Deltas(model, Checkpoint(model, l)) == Deltas(kernel, Checkpoint(kernel, l)));

    [LinuxFact]
    public void FileAndSharedMappingsMoveVmPteAndEveryRssCounterAlikeAtEveryStep()
    {
        output.WriteLine($"host read_ahead_kb {ReadAheadKb}");
        var (model, kernel) = Run(at => new FileMappingScenario(8UL << 20, at), SameDeltas, output, 0, Design, ReadAheadKb);
        foreach (string label in FileMappingScenario.Steps)
        {
            var m = Deltas(model, Checkpoint(model, label));
            var k = Deltas(kernel, Checkpoint(kernel, label));
            output.WriteLine($"{label,-14} model {m}  kernel {k}");
        }

        foreach (string label in FileMappingScenario.Steps)
        {
            Assert.Equal(Deltas(model, Checkpoint(model, label)), Deltas(kernel, Checkpoint(kernel, label)));
        }

        // The figures worked out from the rules: 8 MiB is 32 blocks of 256 KiB and 4 PTE tables per
        // mapping; the three mappings share one PMD and one PUD table. Reads map 16 pages, writes 1.
        Assert.Equal((6 * 4, 0, 32 * 16 * 4, 0), Deltas(model, Checkpoint(model, "read-around")));
        Assert.Equal((6 * 4, 64 * 4, 32 * 15 * 4, 0), Deltas(model, Checkpoint(model, "private-write")));
        Assert.Equal((10 * 4, 64 * 4, (32 * 15 * 4) + (32 * 17 * 4), 0), Deltas(model, Checkpoint(model, "shared-write")));
        Assert.Equal((14 * 4, 64 * 4, (32 * 15 * 4) + (32 * 17 * 4), (1024 + 16) * 4), Deltas(model, Checkpoint(model, "shmem")));
        Assert.Equal((0, 0, 0, 0), Deltas(model, Checkpoint(model, "munmap")));
    }

    [LinuxFact]
    public void ReadFaultAroundMapsTheSamePagesOnTheModelAndTheKernel()
    {
        // A mapping of 96 file pages starting 40 pages below a 2 MiB boundary and 3 pages into the
        // file: windows are clamped by the VMA, by the PTE table and by end of file (90 pages).
        const int pages = 96;
        ulong offset = (2UL << 20) - (40 * K4);
        (int Read, bool[] Present)[] Run(IFileTarget t, ulong slot)
        {
            int f = t.CreateFile((93 * K4) - 100);
            var r = t.MmapFile(slot + offset, pages * K4, Prot.Read, MapFlags.Shared | MapFlags.FixedNoReplace, f, 3 * K4);
            Assert.True(r.Ok, r.ToString());
            var seen = new List<(int, bool[])>();
            foreach (int page in new[] { 1, 37, 39, 40, 63, 88, 70 })
            {
                Assert.True(t.TouchPages(r.Address + ((ulong)page * K4), K4, write: false).Ok);
                seen.Add((page, t.PresentPages(r.Address, pages)));
            }

            Assert.Equal(FaultOutcome.Bus, t.TouchPages(r.Address + (90 * K4), K4, write: false).Outcome);
            Assert.Equal(Errno.None, t.Munmap(r.Address, pages * K4));
            return [.. seen];
        }

        (int, bool[])[] model;
        using (var m = new ModelTarget(new MachineOptions { PageData = false, ZeroPage = MappingDifferential.HostZeroPage, Design = PtLab.Reclaim.Designs.Factory(Design)! }))
        {
            model = Run(m, 1UL << 39);
        }

        (int, bool[])[] kernel;
        using (var k = new KernelTarget())
        {
            kernel = Run(k, KernelTarget.FindFreeRegion(PgdSlot, PgdSlot));
        }

        for (int i = 0; i < model.Length; i++)
        {
            string Show(bool[] p) => new([.. p.Select(x => x ? '#' : '.')]);
            output.WriteLine($"after page {model[i].Item1,2}: model  {Show(model[i].Item2)}");
            output.WriteLine($"               kernel {Show(kernel[i].Item2)}");
            Assert.Equal(Show(model[i].Item2), Show(kernel[i].Item2));
        }
    }

    [LinuxFact]
    public void AColdFileIsReadAroundItsFaultAndTheRetriedFaultMapsTheWindowOnBothTheModelAndTheKernel()
    {
        // R pages of read-around (the host's read_ahead_kb / 4). The first read, at page c = 2R + 8,
        // misses: the window [c - R/2, c + R/2) is read in and the retried fault maps c's 16 pages. A
        // read at c - R/2 + 4 then maps only the 8 cached pages of its half-cached fault-around window;
        // one at c - R/2 - 6 misses again and reads the next window in below.
        int r = ReadAheadKb / 4;
        Assert.True(r >= 32, $"read_ahead_kb {ReadAheadKb} is too small for this test's windows");
        int pages = 4 * r;
        int c = (2 * r) + 8;
        int[] reads = [c, c - (r / 2) + 4, c - (r / 2) - 6, c - (r / 2) + 12];
        string[] Run(IFileTarget t, ulong slot)
        {
            int f = t.CreateFile((ulong)pages * K4);
            t.DropFileCache(f);
            var m = t.MmapFile(slot, (ulong)pages * K4, Prot.Read, MapFlags.Private | MapFlags.FixedNoReplace, f, 0);
            Assert.True(m.Ok, m.ToString());
            var seen = new List<string>();
            foreach (int page in reads)
            {
                Assert.True(t.TouchPages(m.Address + ((ulong)page * K4), K4, write: false).Ok);
                seen.Add(Runs(t.PresentPages(m.Address, pages)));
            }

            Assert.Equal(Errno.None, t.Munmap(m.Address, (ulong)pages * K4));
            return [.. seen];
        }

        string[] model;
        using (var m = new ModelTarget(new MachineOptions { PageData = false, ZeroPage = MappingDifferential.HostZeroPage, ReadAheadKb = ReadAheadKb, Design = PtLab.Reclaim.Designs.Factory(Design)! }))
        {
            model = Run(m, 1UL << 39);
        }

        // The host reads the window in with asynchronous I/O: the retried fault waits only for the
        // faulting folio, and its fault-around maps the neighbours whose reads have completed. On a
        // loaded host a few may still be in flight, so a run that differs is run again on the host
        // (up to three runs in all), and every run that differed is printed. The model is deterministic.
        string[] kernel = [];
        for (int run = 1; run <= 3; run++)
        {
            using (var k = new KernelTarget())
            {
                kernel = Run(k, KernelTarget.FindFreeRegion(PgdSlot, PgdSlot));
            }

            if (model.SequenceEqual(kernel))
            {
                break;
            }

            output.WriteLine($"kernel run {run} differed: {string.Join("; ", kernel)}");
        }

        for (int i = 0; i < reads.Length; i++)
        {
            output.WriteLine($"after page {reads[i]}: model {model[i]}; kernel {kernel[i]}");
        }

        Assert.Equal(model, kernel);
        Assert.Equal($"[{2 * r}, {(2 * r) + 16})", model[0]);
        Assert.Equal($"[{(3 * r / 2) + 8}, {(3 * r / 2) + 16}) [{2 * r}, {(2 * r) + 16})", model[1]);
    }

    /// <summary>The present pages as half-open runs, "[a, b) [c, d)".</summary>
    internal static string Runs(bool[] present)
    {
        var runs = new List<string>();
        for (int i = 0; i < present.Length;)
        {
            if (!present[i])
            {
                i++;
                continue;
            }

            int j = i;
            while (j < present.Length && present[j])
            {
                j++;
            }

            runs.Add($"[{i}, {j})");
            i = j;
        }

        return string.Join(' ', runs);
    }
}
