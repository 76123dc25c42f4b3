using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Tests;

/// <summary>
/// A replay fed a row at a time (<see cref="TraceReplayer.Apply(in TraceEvent)"/>) and one fed
/// batches (<see cref="TraceReplayer.Run"/>, which applies runs of one thread's faults together)
/// must give the same report to the last figure: the batched path is only faster.
/// </summary>
public sealed class ReplayPathsTests : IDisposable
{
    private const int P = 3000;
    private const int Worker = P + 1;
    private const int Child = P + 10;
    private const ulong Region = 0x7f00_0000_0000;
    private const ulong Stack = 0x7fff_fffd_e000;
    private const int RegionPages = 2048;

    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-replay-paths-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// Two threads of one process and a forked child fault in one region in runs of 1-40 rows
    /// from one thread, reads, writes and kernel faults mixed (many hit pages already mapped),
    /// with status samples, MADV_DONTNEED calls and mprotects between the runs.
    /// </summary>
    private static IEnumerable<TraceEvent> Interleaved(int seed)
    {
        var rng = new Random(seed);
        long t = 1_000_000;
        var none = new StatusFigures(0, 0, 0, 0, 0, 0, 0);
        yield return TraceEvent.Create(TraceEventKind.Task, t, P, P) with { Path = "p" };
        yield return TraceEvent.Create(TraceEventKind.Exec, t += 10, P, P) with { Path = "/bin/p", Result = P };
        yield return TraceEvent.Create(TraceEventKind.Vma, t += 10, P, P) with { Address = Stack, Length = 0x21000, Prot = 3, Flags = 2, Offset = 0, Dev = "00:00", Inode = 0, Path = "[stack]" };
        yield return TraceEvent.Sample(TraceEventKind.StatusExec, t += 10, P, P, none with { VmPteKb = 12 });
        yield return (TraceEvent.Create(TraceEventKind.Mmap, t += 1000, P, P) with { Address = 0, Length = (ulong)RegionPages << 12, Prot = 3, Flags = 0x22, Fd = -1, Offset = 0 }).Returned((long)Region, 500);
        yield return TraceEvent.Create(TraceEventKind.NewTask, t += 100, P, P) with { Flags = 0x3d0f00, Result = Worker, Path = "w" };
        (int Pid, int Tid)[] parentThreads = [(P, P), (P, Worker)];
        (int Pid, int Tid)[] all = [(P, P), (P, Worker), (Child, Child)];
        for (int phase = 0; phase < 2; phase++)
        {
            var threads = phase == 0 ? parentThreads : all;
            for (int run = 0; run < 400; run++)
            {
                var (pid, tid) = threads[rng.Next(threads.Length)];
                int length = 1 + rng.Next(40);
                for (int i = 0; i < length; i++)
                {
                    ulong address = Region + ((ulong)rng.Next(RegionPages) << 12) + (ulong)rng.Next(4096);
                    yield return rng.Next(50) == 0
                        ? TraceEvent.KernelFault(t += 50, pid, tid, address, 2)
                        : TraceEvent.Fault(t += 50, pid, tid, address, rng.Next(3) == 0 ? 4 : 6, 0x400000);
                }

                switch (rng.Next(10))
                {
                    case 0:
                        yield return TraceEvent.Sample(TraceEventKind.Status, t += 7, pid, pid, none with { VmPteKb = 20 });
                        break;
                    case 1:
                        ulong start = Region + ((ulong)rng.Next(RegionPages - 64) << 12);
                        yield return (TraceEvent.Create(TraceEventKind.Madvise, t += 1000, pid, tid) with { Address = start, Length = 64UL << 12, Prot = 4 }).Returned(0, 300);
                        break;
                    case 2:
                        ulong at = Region + ((ulong)rng.Next(RegionPages - 8) << 12);
                        yield return (TraceEvent.Create(TraceEventKind.Mprotect, t += 1000, pid, tid) with { Address = at, Length = 8UL << 12, Prot = 3 }).Returned(0, 200);
                        break;
                }
            }

            if (phase == 0)
            {
                yield return TraceEvent.Create(TraceEventKind.NewTask, t += 100, P, P) with { Flags = 0x11, Result = Child, Path = "c" };
            }
        }

        foreach (int pid in new[] { Child, P })
        {
            if (pid == P)
            {
                yield return TraceEvent.Create(TraceEventKind.TaskExit, t += 100, P, Worker);
            }

            yield return TraceEvent.Create(TraceEventKind.ExitGroup, t += 100, pid, pid) with { Result = 0 };
            yield return TraceEvent.Sample(TraceEventKind.StatusExit, t += 100, pid, pid, none with { VmPteKb = 20 }).WithResult(0);
            yield return TraceEvent.Create(TraceEventKind.TaskExit, t += 100, pid, pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags };
        }
    }

    private string Write(string name, IEnumerable<TraceEvent> rows)
    {
        string path = Path.Combine(_dir, name);
        using var w = TraceWriter.Create(path);
        foreach (var e in rows)
        {
            w.Append(e);
        }

        w.Complete(SyntheticTrace.Metadata());
        return path;
    }

    private static ReplayOptions Options(string design) =>
        new() { Design = design, DesignFactory = Designs.Factory(design)!, Cpus = 2 };

    private static ReplayResult Batched(string path, string design)
    {
        using var r = TraceReader.Open(path);
        return TraceReplayer.Run(r, Options(design));
    }

    private static ReplayResult RowByRow(string path, string design)
    {
        using var r = TraceReader.Open(path);
        var replayer = new TraceReplayer(path, Options(design) with { Thp = TraceReplayer.ThpOf(r.Metadata) });
        foreach (var e in r.ReadEvents())
        {
            replayer.Apply(e);
        }

        return replayer.Finish();
    }

    private static void AssertSame(ReplayResult a, ReplayResult b)
    {
        Assert.Equal(a.Events, b.Events);
        Assert.Equal(a.Divergences, b.Divergences);
        Assert.Equal(a.Unsupported, b.Unsupported);
        Assert.Equal(a.GracePeriods, b.GracePeriods);
        Assert.Equal(a.FaultsAlreadyMapped, b.FaultsAlreadyMapped);
        Assert.Equal(a.Processes.Count, b.Processes.Count);
        for (int i = 0; i < a.Processes.Count; i++)
        {
            var (x, y) = (a.Processes[i], b.Processes[i]);
            Assert.Equal((x.Pid, x.Name, x.Threads, x.Exited, x.Faults, x.PeakVmPteKb), (y.Pid, y.Name, y.Threads, y.Exited, y.Faults, y.PeakVmPteKb));
            Assert.Equal(x.Exit, y.Exit);
            Assert.Equal(x.Counters, y.Counters);
            Assert.Equal(x.Madvise.Count, y.Madvise.Count);
            Assert.Equal(x.Samples, y.Samples);
        }
    }

    [Theory]
    [InlineData("none", 1)]
    [InlineData("pte-ref", 2)]
    [InlineData("pt-reclaim", 3)]
    public void ThreadsAndAForkInterleavedReplayTheSameInBatchesAsRowByRow(string design, int seed)
    {
        string path = Write("interleaved.parquet", Interleaved(seed));
        var batched = Batched(path, design);
        AssertSame(batched, RowByRow(path, design));
        // Not a vacuous comparison: both processes fault, many faults find their page already mapped, and tables are made.
        Assert.Equal(2, batched.Processes.Count(p => p.Faults > 0));
        Assert.True(batched.FaultsAlreadyMapped > 0 && batched.FaultsAlreadyMapped < batched.Processes.Sum(p => p.Faults));
        Assert.All(batched.Processes, p => Assert.True(p.PeakVmPteKb > 0));
    }

    [Fact]
    public void TheBenchmarksSyntheticTraceReplaysTheSameInBatchesAsRowByRow()
    {
        string path = Path.Combine(_dir, "synthetic.parquet");
        SyntheticTrace.Write(path, 150_000, seed: 5, threads: 3);
        var batched = Batched(path, Designs.Baseline);
        AssertSame(batched, RowByRow(path, Designs.Baseline));
        Assert.True(batched.Processes.Sum(p => p.Faults) > 140_000);
    }
}
