using PtLab.Sync;
using PtLab.Systematic;
using Xunit;

namespace PtLab.Core.Tests.Systematic;

/// <summary>The soak's note of what a CPU keeps waiting on, for the report of a CPU that never finishes.</summary>
public class SoakWaitWatchTests
{
    private static readonly LockClass s_ptl = new("ptl", LockKind.Spin);

    [Fact]
    public void ACpuThatKeepsWaitingIsReportedWithTheLockClassItWaitsOn()
    {
        var watch = new Soak.WaitWatch(new PanicOnFailure(), cpus: 2);
        watch.Enter(1);
        for (int i = 0; i < (1 << 16) - 1; i++)
        {
            watch.Reached(SchedulingPointKind.Wait, s_ptl);
        }

        Assert.Contains("not at a wait point", watch.Describe(1)); // one wait short of the note

        watch.Reached(SchedulingPointKind.SpinLock, s_ptl); // not a wait: not counted
        Assert.Contains("not at a wait point", watch.Describe(1));

        watch.Reached(SchedulingPointKind.Wait, s_ptl);
        Assert.Contains("waiting on lock class ptl", watch.Describe(1));
        Assert.Contains("not at a wait point", watch.Describe(0)); // the other CPU's note is its own

        watch.StepDone(1); // the operation finished: its waits are forgotten
        Assert.Contains("not at a wait point", watch.Describe(1));
    }

    [Fact]
    public void WaitsOnAThreadThatDrivesNoSoakCpuAreNotNoted()
    {
        var watch = new Soak.WaitWatch(new PanicOnFailure(), cpus: 1);
        var t = new Thread(() =>
        {
            for (int i = 0; i < 1 << 17; i++)
            {
                watch.Reached(SchedulingPointKind.Wait, s_ptl);
            }
        });
        t.Start();
        t.Join();
        Assert.Contains("not at a wait point", watch.Describe(0));
    }

    [Fact]
    public void APanicStillStopsAWaitingCpu()
    {
        var panic = new PanicOnFailure();
        var watch = new Soak.WaitWatch(panic, cpus: 1);
        watch.Enter(0);
        watch.Reached(SchedulingPointKind.Wait, s_ptl);
        panic.Panic("CPU 1 failed");
        var e = Assert.Throws<MachinePanicException>(() => watch.Reached(SchedulingPointKind.Wait, s_ptl));
        Assert.Contains("CPU 1 failed", e.Message);
    }
}
