using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Tests;

/// <summary>
/// exec's own mappings are charged in the replay as the kernel charged them; a simulated machine
/// too small to charge one still gets the mapping the kernel made, uncharged, with the difference
/// counted, so the program's accesses to it replay.
/// </summary>
public sealed class ExecLayoutReplayTests : IDisposable
{
    private const int P = 4000;
    private const ulong Bss = 0x5555_0000_0000;
    private const ulong BssLength = 4UL << 30;
    private const ulong Stack = 0x7fff_fffd_e000;

    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-exec-layout-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static IEnumerable<TraceEvent> ProgramWithAHugeBss()
    {
        long t = 1_000_000;
        var none = new StatusFigures(0, 0, 0, 0, 0, 0, 0);
        yield return TraceEvent.Create(TraceEventKind.Task, t, P, P) with { Path = "p" };
        yield return TraceEvent.Create(TraceEventKind.Exec, t += 10, P, P) with { Path = "/bin/p", Result = P };
        yield return TraceEvent.Create(TraceEventKind.Mmap2, t += 10, P, P) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" };
        yield return TraceEvent.Create(TraceEventKind.Mmap2, t += 10, P, P) with { Address = Bss, Length = BssLength, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "//anon" };
        yield return TraceEvent.Sample(TraceEventKind.StatusExec, t += 10, P, P, none with { VmPteKb = 12 });
        yield return TraceEvent.Fault(t += 100, P, P, Bss + (BssLength / 2), 6, 0x400000);
        yield return TraceEvent.Create(TraceEventKind.ExitGroup, t += 100, P, P) with { Result = 0 };
        yield return TraceEvent.Sample(TraceEventKind.StatusExit, t += 100, P, P, none with { VmPteKb = 24, VmRssKb = 4, RssAnonKb = 4 }).WithResult(0);
        yield return TraceEvent.Create(TraceEventKind.TaskExit, t += 100, P, P) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags };
    }

    private ReplayResult Replay(long ramBytes)
    {
        string path = Path.Combine(_dir, "bss.parquet");
        using (var w = TraceWriter.Create(path))
        {
            foreach (var e in ProgramWithAHugeBss())
            {
                w.Append(e);
            }

            w.Complete(SyntheticTrace.Metadata());
        }

        using var r = TraceReader.Open(path);
        return TraceReplayer.Run(r, new ReplayOptions { Design = "pt-reclaim", DesignFactory = Designs.Factory("pt-reclaim")!, Cpus = 2, RamBytes = ramBytes });
    }

    [Fact]
    public void AnExecMappingTooBigToChargeOnTheModelsMachineIsMappedUncharged()
    {
        var small = Replay(1L << 30);
        Assert.Equal(1, small.Divergences.GetValueOrDefault("exec's mapping could not be charged on the model's machine (mapped uncharged)"));
        Assert.DoesNotContain(small.Divergences.Keys, k => k.Contains("refused", StringComparison.Ordinal) || k.Contains("fault the model answered", StringComparison.Ordinal));

        // Where it fits it is charged, and nothing is counted.
        var big = Replay(8L << 30);
        Assert.DoesNotContain(big.Divergences.Keys, k => k.Contains("charged", StringComparison.Ordinal) || k.Contains("refused", StringComparison.Ordinal));

        // The write into the bss replayed alike on both machines: its page is there.
        Assert.True(small.Processes.Single().Exit?.RssAnonKb >= 4);
        Assert.Equal(big.Processes.Single().Exit, small.Processes.Single().Exit);
    }
}
