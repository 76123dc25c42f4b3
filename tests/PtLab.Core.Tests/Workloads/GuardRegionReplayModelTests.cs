using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Tests;
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
    private const ulong Region = 0x7f00_0000_0000, Mb = Sim.M1;
    private const int Pid = 100, Child = 101;

    /// <summary>
    /// Install zaps the pages it covers and a write there is the kernel's SIGSEGV; DONTNEED over
    /// the whole 2 MiB keeps the table (a marker stays in it); a forked child inherits the markers;
    /// remove clears them, a write then faults a page in; install on a locked VMA is EINVAL on
    /// both sides.
    /// </summary>
    [Fact]
    public void GuardAdviceReplaysWithItsSemantics()
    {
        var trace = new Trace("pt-reclaim");
        trace.Add(TraceEvent.Create(TraceEventKind.Task, 0, Pid, Pid) with { Path = "p" });
        trace.MmapFixed(Pid, Region, 4 * Mb, locked: false);
        trace.Madvise(Pid, Region, 4 * Mb, Advice.NoHugePage, 0);
        for (ulong a = Region; a < Region + (2 * Mb); a += 4096)
        {
            trace.Write(Pid, a);
        }

        trace.Madvise(Pid, Region, 4 * 4096, Advice.GuardInstall, 0);
        trace.Write(Pid, Region + 4096);
        trace.SegvMapErr(Pid);
        trace.Madvise(Pid, Region, 2 * Mb, Advice.DontNeed, 0);
        trace.Add(TraceEvent.Create(TraceEventKind.NewTask, 0, Pid, Pid) with { Flags = 0x11, Result = Child, Path = "c" });
        trace.Write(Child, Region);
        trace.SegvMapErr(Child);
        trace.Madvise(Pid, Region, 2 * Mb, Advice.GuardRemove, 0);
        trace.Write(Pid, Region);
        trace.MmapFixed(Pid, Region + (64 * Mb), Mb, locked: true);
        trace.Madvise(Pid, Region + (64 * Mb), 4096, Advice.GuardInstall, -22);

        var r = trace.Replay();
        Assert.Empty(r.Divergences);
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("advice 102", StringComparison.Ordinal) || k.Contains("advice 103", StringComparison.Ordinal));
        var parent = r.Processes.Single(p => p.Pid == Pid).Exit!.Value;
        var child = r.Processes.Single(p => p.Pid == Child).Exit!.Value;
        Assert.Equal(4 + 1024, parent.RssAnonKb); // the page written after the remove, and the locked mapping
        Assert.Equal(0, child.RssAnonKb);
        Assert.Equal(2, parent.Tables.Pte); // the marker kept the first table through DONTNEED; the locked mapping's
        Assert.Equal(1, child.Tables.Pte); // fork copied the table with its markers
    }

    /// <summary>A hand-made trace, its rows stamped one nanosecond apart as they are added, replayed on one design.</summary>
    private sealed class Trace(string design)
    {
        private readonly TraceReplayer _replayer = new("test.parquet", new ReplayOptions { Design = design, DesignFactory = Designs.Factory(design)!, RamBytes = 1L << 30 });
        private long _now = 1_000;

        public void Add(TraceEvent e) => _replayer.Apply(e with { TimeNs = _now++ });

        public void MmapFixed(int pid, ulong addr, ulong length, bool locked) =>
            Add((TraceEvent.Create(TraceEventKind.Mmap, 0, pid, pid) with { Address = addr, Length = length, Prot = 3, Flags = locked ? 0x2032UL : 0x32, Fd = -1 }).Returned((long)addr, 10));

        public void Madvise(int pid, ulong addr, ulong length, Advice advice, long result) =>
            Add((TraceEvent.Create(TraceEventKind.Madvise, 0, pid, pid) with { Address = addr, Length = length, Prot = (int)advice }).Returned(result, 10));

        public void Write(int pid, ulong addr) => Add(TraceEvent.Fault(0, pid, pid, addr, 6, 0x400000));

        /// <summary>The SIGSEGV (SEGV_MAPERR) the kernel answered the thread's last fault with.</summary>
        public void SegvMapErr(int pid) => Add(TraceEvent.Create(TraceEventKind.Signal, 0, pid, pid) with { Result = TraceKinds.SigSegv, Flags = 1 });

        public ReplayResult Replay() => _replayer.Finish();
    }
}
