using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Tests.Reclaim;

/// <summary>Behaviour every refcount design (atomic, pte-ref) must show, single-threaded.</summary>
public class RefcountDesignTests
{
    public static TheoryData<string> Designs => new() { "atomic", "pte-ref" };

    internal static Func<IPageTableReclaim> Factory(string name) => PtLab.Reclaim.Designs.Factory(name) ?? throw new ArgumentException(name);

    [Theory]
    [MemberData(nameof(Designs))]
    public void DontneedOfAWholeTableFreesIt(string design)
    {
        using var s = new Sim(design: Factory(design));
        ulong a = s.Map(4 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 4 * Sim.M2);
        Assert.Equal(4, s.Tables.Pte);
        s.AssertRefcountsMatchEntries();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(3, s.Tables.Pte);
        Assert.Equal(1, s.Mm.Counters().PteTablesFreed);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void DontneedInHalvesStillFreesTheTableOnceItIsEmpty(string design)
    {
        using var s = new Sim(design: Factory(design));
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.DontNeed));
        Assert.Equal(1, s.Tables.Pte);
        s.AssertRefcountsMatchEntries();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M1, Sim.M1, Advice.DontNeed));
        Assert.Equal(0, s.Tables.Pte);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void ZeroPageEntriesHoldTheTableUntilZapped(string design)
    {
        using var s = new Sim(design: Factory(design));
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M2, write: false);
        Assert.Equal(1, s.Tables.Pte);
        s.AssertRefcountsMatchEntries();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Tables.Pte);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void AccessAfterTheTableWasFreedFaultsInAFreshOne(string design)
    {
        using var s = new Sim(design: Factory(design));
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Cpu.Write(a, [1, 2, 3]);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Tables.Pte);
        var buf = new byte[3];
        Assert.True(s.Cpu.Read(a, buf).Ok);
        Assert.Equal(new byte[3], buf);
        Assert.True(s.Cpu.Write(a + 100, [9]).Ok);
        Assert.Equal(1, s.Tables.Pte);
        Assert.Equal(2, s.Mm.Counters().PteTablesAllocated);
        s.AssertRefcountsMatchEntries();
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void MunmapAndExitStillFreeEverythingOnce(string design)
    {
        var s = new Sim(design: Factory(design));
        ulong a = s.Map(8 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 8 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 2 * Sim.M2, Advice.DontNeed));
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + (2 * Sim.M2), 2 * Sim.M2));
        Assert.Equal(4, s.Tables.Pte);
        s.AssertAccountingConsistent();
        s.Dispose();
        Assert.Equal(1, s.Machine.Phys.UsedFrames);
        Assert.Equal(0, s.Machine.Phys.TableFrames);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void TheCoverLetterLoopLeavesNoPteTable(string design)
    {
        using var s = new Sim(ramBytes: 64L << 20, pageData: false, design: Factory(design));
        ulong a = s.Map(128UL << 20, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong q = a; q < a + (128UL << 20); q += Sim.M2)
        {
            s.TouchAll(q, Sim.M2);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, q, Sim.M2, Advice.DontNeed));
        }

        Assert.Equal(0, s.Tables.Pte);
        Assert.Equal(64, s.Mm.Counters().PteTablesFreed);
        s.AssertAccountingConsistent();
    }
}
