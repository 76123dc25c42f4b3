using System.Globalization;
using PtLab.Kernel.Record;
using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// process_madvise recorded with its ranges (the tracer's seccomp stop reads the iovec array) and
/// replayed: tests/Programs/pmadv.c advises itself (MADV_DONTNEED over three ranges, COLD,
/// PAGEOUT, a call cut short by a hole) and a child (PAGEOUT of a file range, COLD, and a
/// DONTNEED the kernel refuses for another process).
/// </summary>
// Serialized with the other host tests: one of them switches a swap area on for the whole
// machine for a few seconds, which would change what MADV_PAGEOUT does here.
[Collection(HostKernelCollection.Name)]
public sealed class ProcessMadviseReplayTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-pmadv-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [RecordFact]
    public void RangesAreRecordedAndReplayedOnTheTargetsAddressSpace()
    {
        string exe = TestPrograms.Build("pmadv");
        string trace = Path.Combine(_dir, "pmadv.parquet");
        string stdout = Path.Combine(_dir, "pmadv.out");
        var recorded = Recorder.Run(new RecordOptions { Output = trace, Command = [exe, _dir], CommandStdout = stdout, Interval = TimeSpan.FromMilliseconds(20) }, TextWriter.Null, default);
        Assert.Equal(0, recorded.ExitCode);
        var printed = File.ReadAllLines(stdout).Where(l => l.StartsWith("call ", StringComparison.Ordinal))
                          .Select(l => long.Parse(l.Split(' ')[2], CultureInfo.InvariantCulture)).ToList();

        using var reader = TraceReader.Open(trace);
        Assert.True(reader.Metadata.ProcessMadviseRanges);
        var rows = reader.ReadEvents().ToList();
        var calls = rows.Where(e => e.Kind == TraceEventKind.ProcessMadvise).ToList();
        Assert.Equal(printed, calls.Select(c => c.Result));
        Assert.Equal([2UL, 1, 1, 3, 2, 1, 2], calls.Select(c => c.Length));
        int root = reader.Metadata.RootPid!.Value;
        int child = rows.Single(e => e.Kind == TraceEventKind.NewTask && e.Pid == root).ChildPid;
        foreach (var call in calls)
        {
            // Each call's ranges lie right before it, with its time and thread, naming its target.
            int at = rows.IndexOf(call);
            var ranges = rows.GetRange(at - (int)call.Length, (int)call.Length);
            Assert.All(ranges, r => Assert.True(r.Kind == TraceEventKind.MadviseRange && r.TimeNs == call.TimeNs && r.Tid == call.Tid));
            Assert.All(ranges, r => Assert.Equal(calls.IndexOf(call) < 3 ? child : root, (int)r.Result));
        }

        // The self DONTNEED call: 2 MiB, 3 MiB and 1 MiB + 5000 bytes, the sum returned.
        var dontneed = rows.Where(e => e.Kind == TraceEventKind.MadviseRange && e.TimeNs == calls[3].TimeNs).Select(e => e.Length).ToList();
        Assert.Equal([2UL << 20, 3UL << 20, (1UL << 20) + 5000], dontneed);
        Assert.Equal(-22, calls[2].Result); // DONTNEED of another process: EINVAL

        string design = reader.Metadata.Host[HostFacts.MatchingDesign];
        var result = TraceReplayer.Run(reader, new ReplayOptions { Design = design, DesignFactory = Designs.Factory(design)!, RamBytes = 8L << 30, Cpus = 2 });
        output.WriteLine("divergences: " + string.Join(", ", result.Divergences.Select(d => $"{d.Key}={d.Value}")));
        output.WriteLine("unsupported: " + string.Join(", ", result.Unsupported.Select(d => $"{d.Key}={d.Value}")));
        Assert.DoesNotContain(result.Unsupported.Keys, k => k.Contains("process_madvise", StringComparison.Ordinal));
        Assert.DoesNotContain(result.Divergences.Keys, k => k.Contains("process_madvise", StringComparison.Ordinal));
        foreach (var p in result.Processes)
        {
            var exit = p.Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"pid {p.Pid} ({p.Name}), {design}: exit VmPTE {exit.Compared.VmPteKb}/{exit.Kernel.VmPteKb} kB, VmRSS {exit.Model.VmRssKb}/{exit.Kernel.VmRssKb} kB, RssFile {exit.Model.RssFileKb}/{exit.Kernel.RssFileKb} kB, RssAnon {exit.Model.RssAnonKb}/{exit.Kernel.RssAnonKb} kB (model/kernel)"));
            Assert.True(
                ReplayFidelity.Within(exit.Kernel.VmPteKb, exit.Kernel.VmPteKb + exit.VmPteDifferenceKb, ReplayFidelity.ExitPercent),
                $"pid {p.Pid}: exit VmPTE {exit.Compared.VmPteKb} kB in the model, {exit.Kernel.VmPteKb} kB in the kernel");
            // The advised memory left both: anonymous within 5% (or 400 kB), and the child's file pages paged out.
            Assert.True(Math.Abs(exit.Model.RssAnonKb - exit.Kernel.RssAnonKb) <= Math.Max(400, exit.Kernel.RssAnonKb / 20),
                $"pid {p.Pid}: exit RssAnon {exit.Model.RssAnonKb} kB in the model, {exit.Kernel.RssAnonKb} kB in the kernel");
            Assert.True(Math.Abs(exit.Model.RssFileKb - exit.Kernel.RssFileKb) <= Math.Max(400, exit.Kernel.RssFileKb / 20),
                $"pid {p.Pid}: exit RssFile {exit.Model.RssFileKb} kB in the model, {exit.Kernel.RssFileKb} kB in the kernel");
        }

        // Without the ranges the self DONTNEED could not have dropped 6 MiB of the root's anonymous memory.
        var rootExit = result.Processes.Single(p => p.Pid == root).Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        Assert.True(rootExit.Kernel.RssAnonKb < 16 * 1024 - 6 * 1024 + 2048, $"root's exit RssAnon {rootExit.Kernel.RssAnonKb} kB");
        var childExit = result.Processes.Single(p => p.Pid == child).Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        Assert.True(childExit.Kernel.RssFileKb < 2048, $"child's exit RssFile {childExit.Kernel.RssFileKb} kB: the pageout left it mapped");
    }
}
