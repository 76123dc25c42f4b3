using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Core.Tests.Workloads;

/// <summary>
/// Rows are stamped when their calls return, but the kernel places a mapping early in its call: of
/// two threads' overlapping mmaps the trace does not say which placed first. A placement the model
/// makes otherwise is then counted with that reason; one that overlapped nothing is counted plainly.
/// </summary>
public sealed class ConcurrentPlacementReplayModelTests
{
    private const ulong Hint = 0x7e00_0000_0000, Elsewhere = 0x7d00_0000_0000, Mb = 1UL << 20;
    private const int Pid = 100, Worker = 101;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AMisplacementIsSaidToBeARaceOnlyWhenAnotherThreadsCallOverlappedIt(bool overlapping)
    {
        var replayer = new TraceReplayer("test.parquet", new ReplayOptions { Design = "pt-reclaim", DesignFactory = Designs.Factory("pt-reclaim")!, RamBytes = 1L << 30 });
        void Add(TraceEvent e) => replayer.Apply(e);

        Add(TraceEvent.Create(TraceEventKind.Task, 1_000, Pid, Pid) with { Path = "p" });
        Add(TraceEvent.Create(TraceEventKind.NewTask, 2_000, Pid, Pid) with { Flags = TraceEvent.CloneThread | TraceEvent.CloneVm, Result = Worker, Path = "w" });
        // The worker's mmap (MAP_POPULATE) takes the hint first and returns last; the main thread's
        // asks for the same hint, finds it taken and gets another address, and returns first.
        // Overlapping: the worker entered (at 10 µs) before the main thread's call returned (at 30 µs).
        long workerEnter = overlapping ? 10_000 : 40_000;
        Add(Mmap(Pid, 30_000, 20_000, 8 * Mb, flags: 0x22, result: Elsewhere));
        Add(Mmap(Worker, 90_000, 90_000 - workerEnter, 4 * Mb, flags: 0x8022, result: Hint));

        var r = replayer.Finish();
        var key = Assert.Single(r.Divergences).Key;
        Assert.Equal(1, r.Divergences[key]);
        Assert.StartsWith("mmap placed elsewhere by the model: a hint address it took otherwise", key, StringComparison.Ordinal);
        Assert.Equal(overlapping, key.EndsWith(TraceReplayer.InFlight, StringComparison.Ordinal));
    }

    private static TraceEvent Mmap(int tid, long exitNs, long durationNs, ulong length, ulong flags, ulong result) =>
        (TraceEvent.Create(TraceEventKind.Mmap, exitNs, Pid, tid) with { Address = Hint, Length = length, Prot = 3, Flags = flags, Fd = -1 }).Returned((long)result, durationNs);
}
