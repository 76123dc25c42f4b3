using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Core.Tests.Workloads;

/// <summary>
/// The replay of process_madvise rows on the model, from hand-made traces: the recorded ranges in
/// order on the target's address space, with vector_madvise's partial progress and
/// process_madvise's refusal of destructive advice for another process.
/// </summary>
public sealed class ProcessMadviseReplayModelTests
{
    private const int Parent = 100, Child = 101;
    private const ulong Region = 0x7f00_0000_0000;
    private const ulong Mb = 1UL << 20;
    private long _t = 1_000;

    private readonly TraceReplayer _replayer = new("test.parquet", new ReplayOptions { Design = "none", DesignFactory = Designs.Factory("none")!, RamBytes = 1L << 30 });

    private void Apply(TraceEvent e) => _replayer.Apply(e);

    private void WriteEveryPage(int pid)
    {
        for (ulong a = Region; a < Region + (4 * Mb); a += 4096)
        {
            Apply(TraceEvent.Fault(_t++, pid, pid, a, 6, 0x400000));
        }
    }

    /// <summary>One call: its range rows, then its row with the kernel's result.</summary>
    private void ProcessMadvise(int caller, int target, Advice advice, long result, params (ulong Start, ulong Length)[] ranges)
    {
        long t = _t++;
        foreach (var (start, length) in ranges)
        {
            Apply(TraceEvent.Create(TraceEventKind.MadviseRange, t, caller, caller) with { Address = start, Length = length, Result = target });
        }

        Apply((TraceEvent.Create(TraceEventKind.ProcessMadvise, t, caller, caller) with { Fd = 3, Address = 0x7ffd_0000_0000, Length = (ulong)ranges.Length, Prot = (int)advice }).Returned(result, 10));
    }

    private ReplayResult Run()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Parent, Parent) with { Path = "p" });
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Parent, Parent) with { Address = 0, Length = 4 * Mb, Prot = 3, Flags = 0x22, Fd = -1 }).Returned((long)Region, 10));
        WriteEveryPage(Parent);
        Apply(TraceEvent.Create(TraceEventKind.NewTask, _t++, Parent, Parent) with { Flags = 0x11, Result = Child, Path = "c" });
        WriteEveryPage(Child);

        // Itself: 1 MiB, an empty range (skipped), then 2 MiB + 5000 that runs past the mapping:
        // that range zaps what is mapped and fails (ENOMEM), so the call returns the first range's bytes.
        ProcessMadvise(Parent, Parent, Advice.DontNeed, (long)Mb, (Region, Mb), (Region + Mb, 0), (Region + (2 * Mb), (2 * Mb) + 5000));
        // The child: DONTNEED is refused for another process (EINVAL), COLD and PAGEOUT are taken.
        ProcessMadvise(Parent, Child, Advice.DontNeed, -22, (Region, 4 * Mb));
        ProcessMadvise(Parent, Child, Advice.Cold, (long)(4 * Mb), (Region, 2 * Mb), (Region + (2 * Mb), 2 * Mb));
        ProcessMadvise(Parent, Child, Advice.PageOut, (long)(4 * Mb), (Region, 4 * Mb));
        // The child exits: a call on its pidfd now gets ESRCH, with nothing to replay.
        Apply(TraceEvent.Create(TraceEventKind.TaskExit, _t++, Child, Child) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags });
        ProcessMadvise(Parent, Child, Advice.Cold, -3, (Region, Mb));
        // A process outside the trace, and a call whose ranges were not recorded.
        ProcessMadvise(Parent, 999, Advice.Cold, (long)Mb, (Region, Mb));
        Apply((TraceEvent.Create(TraceEventKind.ProcessMadvise, _t++, Parent, Parent) with { Fd = 3, Address = 0x7ffd_0000_0000, Length = 3, Prot = 4 }).Returned(8192, 10));
        return _replayer.Finish();
    }

    [Fact]
    public void RangesApplyInOrderToTheTargetAsVectorMadviseDoes()
    {
        var r = Run();
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("process_madvise", StringComparison.Ordinal));
        Assert.Equal(1, r.Unsupported["process_madvise of a process outside the trace (not replayed)"]);
        Assert.Equal(1, r.Unsupported[TraceReplayer.UnrecordedRanges]);
        var parent = r.Processes.Single(p => p.Pid == Parent).Exit!.Value;
        var child = r.Processes.Single(p => p.Pid == Child).Exit!.Value;
        Assert.Equal(1024, parent.RssAnonKb); // [1, 2) MiB is left: the ranges' pages went, the hole's range's too
        Assert.Equal(4096, child.RssAnonKb); // the refused DONTNEED left the child whole (no swap: PAGEOUT keeps anonymous pages)
    }

    [Fact]
    public void MadviseCollapseIsAppliedToAnonymousAndShmemAndAForkedShmemIsReportedAsNotModelled()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Parent, Parent) with { Path = "p" });
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Parent, Parent) with { Address = 0, Length = 4 * Mb, Prot = 3, Flags = 0x22, Fd = -1 }).Returned((long)Region, 10));
        for (ulong a = Region; a < Region + (4 * Mb); a += 64 * 4096)
        {
            Apply(TraceEvent.Fault(_t++, Parent, Parent, a, 6, 0x400000));
        }

        // The first 2 MiB by madvise, the second by process_madvise on itself: both become huge
        // pages (RssAnon the whole 4 MiB), the tables deposited beside them (VmPTE kept).
        Apply((TraceEvent.Create(TraceEventKind.Madvise, _t++, Parent, Parent) with { Address = Region, Length = 2 * Mb, Prot = (int)Advice.Collapse }).Returned(0, 10));
        ProcessMadvise(Parent, Parent, Advice.Collapse, (long)(2 * Mb), (Region + (2 * Mb), 2 * Mb));
        // A range inside one 2 MiB that reaches no boundary: EINVAL, as the kernel answers.
        Apply((TraceEvent.Create(TraceEventKind.Madvise, _t++, Parent, Parent) with { Address = Region + 4096, Length = 8192, Prot = (int)Advice.Collapse }).Returned(-22, 10));

        // Shared anonymous memory (shmem) mapped once: collapsed, its PTE table freed, the holes
        // filled (RssShmem the whole 2 MiB).
        const ulong shmem = Region + (64 * Mb);
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Parent, Parent) with { Address = 0, Length = 2 * Mb, Prot = 3, Flags = 0x21, Fd = -1 }).Returned((long)shmem, 10));
        Apply(TraceEvent.Fault(_t++, Parent, Parent, shmem, 6, 0x400000));
        Apply((TraceEvent.Create(TraceEventKind.Madvise, _t++, Parent, Parent) with { Address = shmem, Length = 2 * Mb, Prot = (int)Advice.Collapse }).Returned(0, 10));

        // A shmem mapping split in three by mprotect (its file mapped by three VMAs, each its own
        // part): the first 2 MiB is collapsed as the host does.
        const ulong split = Region + (128 * Mb);
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Parent, Parent) with { Address = 0, Length = 6 * Mb, Prot = 3, Flags = 0x21, Fd = -1 }).Returned((long)split, 10));
        Apply(TraceEvent.Fault(_t++, Parent, Parent, split, 6, 0x400000));
        Apply(TraceEvent.Fault(_t++, Parent, Parent, split + (4 * Mb), 6, 0x400000));
        Apply((TraceEvent.Create(TraceEventKind.Mprotect, _t++, Parent, Parent) with { Address = split + (2 * Mb), Length = 4096, Prot = 1 }).Returned(0, 10));
        Apply((TraceEvent.Create(TraceEventKind.Madvise, _t++, Parent, Parent) with { Address = split, Length = 2 * Mb, Prot = (int)Advice.Collapse }).Returned(0, 10));

        // After a fork the child maps the file too: the parent's collapse of its last 2 MiB is
        // not modelled (the host retracts the child's table as well), whatever the kernel answered.
        Apply(TraceEvent.Create(TraceEventKind.NewTask, _t++, Parent, Parent) with { Flags = 0x11, Result = Child, Path = "c" });
        Apply((TraceEvent.Create(TraceEventKind.Madvise, _t++, Parent, Parent) with { Address = split + (4 * Mb), Length = 2 * Mb, Prot = (int)Advice.Collapse }).Returned(0, 10));

        var r = _replayer.Finish();
        Assert.DoesNotContain(r.Divergences.Keys, k => k.Contains("madvise", StringComparison.Ordinal));
        Assert.Equal(1, r.Unsupported[TraceReplayer.CollapseShmemNotModelled]);
        Assert.DoesNotContain(r.Unsupported.Keys, k => k.Contains("advice 25", StringComparison.Ordinal));
        var exit = r.Processes.Single(p => p.Pid == Parent).Exit!.Value;
        Assert.Equal(4096, exit.RssAnonKb);
        Assert.Equal(2048 + 2048 + 4, exit.RssShmemKb); // the two collapsed 2 MiB, and the split mapping's last page
        Assert.Equal(3, exit.Tables.Pte); // two deposited beside the huge pages, and the last 2 MiB's; the collapsed shmem's went
    }

    [Fact]
    public void AResultTheModelDoesNotGiveIsADivergence()
    {
        Apply(TraceEvent.Create(TraceEventKind.Task, _t++, Parent, Parent) with { Path = "p" });
        Apply((TraceEvent.Create(TraceEventKind.Mmap, _t++, Parent, Parent) with { Address = 0, Length = 4 * Mb, Prot = 3, Flags = 0x22, Fd = -1 }).Returned((long)Region, 10));
        // The kernel says both ranges were done; the second lies beyond the mapping, so the model stops after the first.
        ProcessMadvise(Parent, Parent, Advice.DontNeed, (long)(5 * Mb), (Region, 4 * Mb), (Region + (8 * Mb), Mb));
        var r = _replayer.Finish();
        Assert.Equal(1, r.Divergences[$"process_madvise: kernel {5 * Mb} bytes, model {4 * Mb} bytes"]);
    }
}
