using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Core.Tests.Workloads;

/// <summary>
/// Recorded madvise rows with MADV_GUARD_INSTALL (102) and MADV_GUARD_REMOVE (103), as a C library
/// that guards thread stacks with them leaves in a trace: replayed with their semantics, not
/// counted as advice the model does not know.
/// </summary>
public sealed class GuardRegionReplayModelTests
{
    private const int Pid = 100, Child = 101;
    private const ulong Region = 0x7f00_0000_0000;
    private const ulong Mb = 1UL << 20;
    private long _t = 1_000;

    private readonly TraceReplayer _replayer = new("test.parquet", new ReplayOptions { Design = "pt-reclaim", DesignFactory = Designs.Factory("pt-reclaim")!, RamBytes = 1L << 30 });

    private void Apply(TraceEvent e) => _replayer.Apply(e);

    private void Madvise(ulong addr, ulong length, Advice advice, long result) =>
        Apply((TraceEvent.Create(TraceEventKind.Madvise, _t++, Pid, Pid) with { Address = addr, Length = length, Prot = (int)advice }).Returned(result, 10));

    private void Write(int pid, ulong addr) => Apply(TraceEvent.Fault(_t++, pid, pid, addr, 6, 0x400000));

    private void Segv(int pid) => Apply(TraceEvent.Create(TraceEventKind.Signal, _t++, pid, pid) with { Result = TraceKinds.SigSegv, Flags = 1 }); // SEGV_MAPERR

    /// <summary>
    /// Install zaps the pages it covers and a write there is the kernel's SIGSEGV; DONTNEED over
    /// the whole 2 MiB keeps the table (a marker stays in it); a forked child inherits the markers;
    /// remove clears them, a write then faults a page in; install on a locked VMA is EINVAL on
    /// both sides.
    /// </summary>
    [Fact]
    public void GuardAdviceReplaysWithItsSemantics()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Pid, Pid) with { Path = "p" });
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Pid, Pid) with { Address = Region, Length = 4 * Mb, Prot = 3, Flags = 0x32, Fd = -1 }).Returned((long)Region, 10));
        Madvise(Region, 4 * Mb, Advice.NoHugePage, 0);
        for (ulong a = Region; a < Region + (2 * Mb); a += 4096)
        {
            Write(Pid, a);
        }

        Madvise(Region, 4 * 4096, Advice.GuardInstall, 0);
        Write(Pid, Region + 4096);
        Segv(Pid);
        Madvise(Region, 2 * Mb, Advice.DontNeed, 0);
        Apply(TraceEvent.Create(TraceEventKind.NewTask, _t++, Pid, Pid) with { Flags = 0x11, Result = Child, Path = "c" });
        Write(Child, Region);
        Segv(Child);
        Madvise(Region, 2 * Mb, Advice.GuardRemove, 0);
        Write(Pid, Region);
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Pid, Pid) with { Address = Region + (64 * Mb), Length = Mb, Prot = 3, Flags = 0x2032, Fd = -1 }).Returned((long)(Region + (64 * Mb)), 10)); // MAP_FIXED | MAP_LOCKED
        Madvise(Region + (64 * Mb), 4096, Advice.GuardInstall, -22);

        var r = _replayer.Finish();
        Assert.Empty(r.Divergences);
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("advice 102", StringComparison.Ordinal) || k.Contains("advice 103", StringComparison.Ordinal));
        var parent = r.Processes.Single(p => p.Pid == Pid).Exit!.Value;
        var child = r.Processes.Single(p => p.Pid == Child).Exit!.Value;
        Assert.Equal(4 + 1024, parent.RssAnonKb); // the page written after the remove, and the locked mapping
        Assert.Equal(0, child.RssAnonKb);
        Assert.Equal(2, parent.Tables.Pte); // the marker kept the first table through DONTNEED; the locked mapping's
        Assert.Equal(1, child.Tables.Pte); // fork copied the table with its markers
    }
}
