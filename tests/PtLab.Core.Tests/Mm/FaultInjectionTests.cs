using PtLab.Mm;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

/// <summary>Allocation failures at chosen or random points leave nothing leaked and every invariant intact.</summary>
public class FaultInjectionTests
{
    public static TheoryData<string> Designs => Sim.EveryDesign();

    [Theory]
    [MemberData(nameof(Designs))]
    public void RandomAllocationFailuresGiveOomAndLeakNothing(string design)
    {
        var s = new Sim(ramBytes: 64L << 20, design: PtLab.Reclaim.Designs.Factory(design));
        s.Machine.Phys.FaultInjection = new FaultInjector(AllocSite.All, probability: 0.05, seed: 7);
        ulong a = s.Map(8 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        var rng = new Random(11);
        int ooms = 0, oks = 0;
        for (int i = 0; i < 4000; i++)
        {
            ulong va = a + ((ulong)rng.Next(8 * 512) * Sim.K4);
            switch (rng.Next(6))
            {
                case < 3:
                    var r = s.Cpu.Touch(va, (byte)i);
                    Assert.True(r.Ok || r.Outcome == FaultOutcome.Oom, r.ToString());
                    if (r.Ok)
                    {
                        oks++;
                    }
                    else
                    {
                        ooms++;
                    }

                    break;
                case 3:
                    var pinned = new long[1];
                    var g = s.Mm.GetUserPages(s.Cpu, va, 1, write: true, pinned);
                    Assert.True(g == 1 || g == -(long)Errno.ENOMEM, $"gup returned {g}");
                    if (g == 1)
                    {
                        s.Mm.PutUserPages(s.Cpu, pinned);
                    }

                    break;
                case 4:
                    Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, va & ~(Sim.M2 - 1), Sim.M2, Advice.DontNeed));
                    break;
                default:
                    Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, va, Sim.K4));
                    Assert.True(s.Mm.Mmap(s.Cpu, va, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.FixedNoReplace).Ok);
                    break;
            }
        }

        Assert.True(ooms > 10 && oks > 100, $"{ooms} OOMs, {oks} successful touches");
        Assert.True(s.Machine.Phys.FaultInjection!.Injected > 10);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
        s.Dispose();
        Assert.Equal(1, s.Machine.Phys.UsedFrames);
    }

    [Theory]
    [InlineData(AllocSite.Table, 1)] // the PUD table of the first fault
    [InlineData(AllocSite.Table, 3)] // the PTE table
    [InlineData(AllocSite.Page, 1)]  // the data page
    public void AFailureAtAChosenPointIsAnOomAndTheRetrySucceeds(AllocSite site, long failAt)
    {
        using var s = new Sim(design: PtLab.Reclaim.Designs.Factory("pte-ref"));
        s.Machine.Phys.FaultInjection = new FaultInjector(site, failAt: failAt);
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(FaultOutcome.Oom, s.Cpu.Touch(a).Outcome);
        Assert.True(s.Cpu.Touch(a, 5).Ok);
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(5, v);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void MapPopulateGoesOnPastAnInjectedFailureAndReportsNothing()
    {
        // __mm_populate takes the 99 pages done, starts again at the page that failed, and the
        // second try of a one-off failure succeeds; mmap never reports a populate error.
        using var s = new Sim();
        s.Machine.Phys.FaultInjection = new FaultInjector(AllocSite.Page, failAt: 100);
        ulong a = s.Map(Sim.M1, flags: Sim.Anon | MapFlags.Populate);
        Assert.Equal(1, s.Machine.Phys.FaultInjection.Injected);
        Assert.Equal(256 * 4, s.Mm.Status().RssAnonKb);
        Assert.True(s.Cpu.Touch(a + (200 * Sim.K4)).Ok);
    }

    [Fact]
    public void MapPopulateLeavesTheRestOfAVmaUnpopulatedWhenEveryTryFails()
    {
        using var s = new Sim();
        s.Machine.Phys.FaultInjection = new FaultInjector(AllocSite.Page, probability: 1);
        var r = s.Mm.Mmap(s.Cpu, 0, Sim.M1, Sim.Rw, Sim.Anon | MapFlags.Populate);
        Assert.True(r.Ok); // ignore_errors: the VMA is skipped, mmap succeeds
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
    }
}
