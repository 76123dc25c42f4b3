using PtLab.Mm;

namespace PtLab.Tests.Mm;

/// <summary>munmap frees only the tables wholly inside the unmapped range (free_pgd_range's floor and ceiling).</summary>
public class FreePgtablesTests
{
    private const ulong Base = 0x40000000; // 1 GiB aligned

    [Fact]
    public void UnmappingEverythingFreesEveryTable()
    {
        using var s = new Sim();
        ulong a = s.Map(4 * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 4 * Sim.M2);
        Assert.Equal(new TableCounts(4, 1, 1), s.Tables);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, 4 * Sim.M2));
        Assert.Equal(new TableCounts(0, 0, 0), s.Tables);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AnAlignedTwoMegabyteHoleFreesExactlyItsPteTable()
    {
        using var s = new Sim();
        ulong a = s.Map(3 * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 3 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + Sim.M2, Sim.M2));
        Assert.Equal(new TableCounts(2, 1, 1), s.Tables);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AHoleInsideATwoMegabyteRangeKeepsTheTableItSharesWithNeighbours()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + (Sim.M2 / 4), Sim.M1));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, Sim.M2 / 4));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables); // the last quarter still shares it
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + (3 * Sim.M2 / 4), Sim.M2 / 4));
        Assert.Equal(new TableCounts(0, 0, 0), s.Tables);
    }

    [Fact]
    public void ARangeStraddlingABoundaryKeepsBothPartlyCoveredTables()
    {
        using var s = new Sim();
        ulong a = s.Map(2 * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 2 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + Sim.M1, Sim.M2));
        Assert.Equal(new TableCounts(2, 1, 1), s.Tables);
    }

    [Fact]
    public void ThePmdTableStaysWhileAnotherMappingUsesTheSameGigabyte()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        ulong b = s.Map(Sim.M2, addr: Base + (100 * Sim.M2), flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M2);
        s.TouchAll(b, Sim.M2);
        Assert.Equal(new TableCounts(2, 1, 1), s.Tables);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, Sim.M2));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, b, Sim.M2));
        Assert.Equal(new TableCounts(0, 0, 0), s.Tables);
    }

    [Fact]
    public void AMappingSpanningTwoGigabytesFreesBothPmdTablesWhenAlone()
    {
        using var s = new Sim();
        ulong a = s.Map(2 * Sim.M2, addr: Base + Sim.G1 - Sim.M2, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 2 * Sim.M2);
        Assert.Equal(new TableCounts(2, 2, 1), s.Tables);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, Sim.M2));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void NeighbouringVmasInTheSameTwoMegabytesKeepTheTableAcrossMunmap()
    {
        using var s = new Sim();
        // Different protections make two VMAs that share one PTE table.
        ulong a = s.Map(Sim.M1, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        s.Map(Sim.M1, Prot.Read, addr: Base + Sim.M1, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M1);
        s.TouchAll(Base + Sim.M1, Sim.M1, write: false);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, Sim.M1));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
    }

    [Fact]
    public void ExitFreesEveryFrameTheAddressSpaceUsed()
    {
        var s = new Sim();
        long baseline = s.Machine.Phys.UsedFrames - 1; // the PGD
        s.Map(8 * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(Base, 8 * Sim.M2);
        s.Dispose();
        Assert.Equal(baseline, s.Machine.Phys.UsedFrames);
        Assert.Equal(0, s.Machine.Phys.TableFrames);
    }
}
