using PtLab.Reclaim;
using PtLab.Tests;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Core.Tests.Workloads;

/// <summary>
/// Shared anonymous memory grown by mremap, as a recorded program leaves it: the shmem object keeps
/// the size mmap gave it, so a write past it is the kernel's SIGBUS (BUS_ADRERR), and the replay
/// answers it the same way rather than growing the object as it grows a recorded file.
/// </summary>
public sealed class SharedAnonMremapReplayModelTests
{
    private const ulong Region = 0x7f00_0000_0000, Moved = 0x7f10_0000_0000;
    private const int Pid = 100;

    [Fact]
    public void AWritePastTheShmemObjectOfAGrownSharedAnonymousMappingIsSigbusOnBothSides()
    {
        var replayer = new TraceReplayer("test.parquet", new ReplayOptions { Design = "pt-reclaim", DesignFactory = Designs.Factory("pt-reclaim")!, RamBytes = 1L << 30 });
        long now = 1_000;
        void Add(TraceEvent e) => replayer.Apply(e with { TimeNs = now++ });

        Add(TraceEvent.Create(TraceEventKind.Task, 0, Pid, Pid) with { Path = "p" });
        // mmap(Region, 4 KiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        Add((TraceEvent.Create(TraceEventKind.Mmap, 0, Pid, Pid) with { Address = Region, Length = 4096, Prot = 3, Flags = 0x31, Fd = -1 }).Returned((long)Region, 10));
        Add(TraceEvent.Fault(0, Pid, Pid, Region, 6, 0x400000));
        // mremap(Region, 4 KiB, 8 KiB, MREMAP_MAYMOVE | MREMAP_FIXED, Moved)
        Add((TraceEvent.Create(TraceEventKind.Mremap, 0, Pid, Pid) with { Address = Region, Length = 4096, NewLength = 8192, Flags = 3, NewAddress = Moved }).Returned((long)Moved, 10));
        Add(TraceEvent.Fault(0, Pid, Pid, Moved + 4096, 6, 0x400000));
        Add(TraceEvent.Create(TraceEventKind.Signal, 0, Pid, Pid) with { Result = TraceKinds.SigBus, Flags = 2 });
        Add(TraceEvent.Fault(0, Pid, Pid, Moved, 6, 0x400000)); // the page inside the object is there

        var r = replayer.Finish();
        Assert.Empty(r.Divergences);
        var exit = r.Processes.Single(p => p.Pid == Pid).Exit!.Value;
        Assert.Equal(4, exit.RssShmemKb);
    }
}
