using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Core.Tests.Workloads;

/// <summary>
/// The replay of shmat and shmdt rows on the model, from hand-made traces: a segment's attaches in
/// every process map its one shmem file shared, and shmdt detaches one attach as do_shmdt does.
/// </summary>
public sealed class SysvShmReplayModelTests
{
    private readonly TraceReplayer _replayer = new("test.parquet", new ReplayOptions { Design = "none", DesignFactory = Designs.Factory("none")!, RamBytes = 1L << 30 });
    private long _t = 1_000;

    private const int Parent = 100, Child = 101;
    private const ulong First = 0x7f00_0000_0000, Second = 0x7f10_0000_0000, Segment = 4UL << 20;
    private const ulong ShmRdonly = 0x1000;

    private void Apply(TraceEvent e) => _replayer.Apply(e);

    private void Touch(int pid, ulong start, ulong length, bool write)
    {
        for (ulong a = start; a < start + length; a += 4096)
        {
            Apply(TraceEvent.Fault(_t++, pid, pid, a, write ? 6 : 4, 0x400000));
        }
    }

    /// <summary>An attach: the kernel's record of the segment's mapping, then the call's row.</summary>
    private void Shmat(int pid, ulong at, ulong flags, bool record = true)
    {
        if (record)
        {
            Apply(TraceEvent.Create(TraceEventKind.Mmap2, _t++, pid, pid) with
            {
                Address = at,
                Length = Segment,
                Prot = (flags & ShmRdonly) != 0 ? 1 : 3,
                Flags = 1,
                Offset = 0,
                Dev = "00:01",
                Inode = 4,
                Path = "/SYSV00000000 (deleted)",
            });
        }

        Apply((TraceEvent.Create(TraceEventKind.Shmat, _t++, pid, pid) with { Address = 0, Fd = 7, Flags = flags }).Returned((long)at, 10));
    }

    private void Shmdt(int pid, ulong at, long result) =>
        Apply((TraceEvent.Create(TraceEventKind.Shmdt, _t++, pid, pid) with { Address = at }).Returned(result, 10));

    private ReplayResult Run()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Parent, Parent) with { Path = "p" });
        Shmat(Parent, First, 0);
        Touch(Parent, First, Segment / 2, write: true);
        Apply(TraceEvent.Create(TraceEventKind.NewTask, _t++, Parent, Parent) with { Flags = 0x11, Result = Child, Path = "c" });

        // The child: the inherited attach (no tables: a shared mapping is not copied at fork),
        // read in part; a second attach, read-only, read whole; then the first one detached.
        Touch(Child, First, Segment / 4, write: false);
        Shmat(Child, Second, ShmRdonly);
        Touch(Child, Second, Segment, write: false);
        Shmdt(Child, First + 4096, -22); // no attach placed at that address: EINVAL, as the model answers
        Shmdt(Child, First, 0);
        Shmdt(Child, First, -22); // gone
        return _replayer.Finish();
    }

    [Fact]
    public void AttachesShareTheSegmentsPagesAndShmdtDetachesOneAttach()
    {
        var r = Run();
        Assert.Empty(r.Divergences);
        Assert.Empty(r.Unsupported);
        var parent = r.Processes.Single(p => p.Pid == Parent).Exit!.Value;
        var child = r.Processes.Single(p => p.Pid == Child).Exit!.Value;
        Assert.Equal((2048, 0, 4096), (parent.RssShmemKb, parent.RssAnonKb, parent.VmSizeKb)); // the half it wrote
        Assert.Equal((4096, 0, 4096), (child.RssShmemKb, child.RssAnonKb, child.VmSizeKb)); // the second attach, whole; the first is gone
    }

    [Fact]
    public void AWriteThroughAReadOnlyAttachIsRefusedAsTheKernelDoes()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Parent, Parent) with { Path = "p" });
        Shmat(Parent, First, ShmRdonly);
        Touch(Parent, First, 4096, write: true);
        Apply(TraceEvent.Create(TraceEventKind.Signal, _t++, Parent, Parent) with { Result = TraceKinds.SigSegv, Flags = 2 }); // SEGV_ACCERR
        var r = _replayer.Finish();
        Assert.Empty(r.Divergences);
        Assert.Equal(0, r.Processes.Single().Exit!.Value.RssShmemKb);
    }

    [Fact]
    public void AnAttachWithoutItsMappingRecordIsCountedNotReplayed()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Parent, Parent) with { Path = "p" });
        Shmat(Parent, First, 0, record: false);
        Shmdt(Parent, First, 0);
        var r = _replayer.Finish();
        Assert.Equal(1, r.Unsupported["shmat without the kernel's mapping record of the segment (not replayed)"]);
        Assert.Equal(1, r.Divergences["shmdt: kernel succeeded, model EINVAL"]);
    }
}
