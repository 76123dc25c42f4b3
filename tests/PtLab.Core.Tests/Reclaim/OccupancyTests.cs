using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Tests.Reclaim;

/// <summary>The occupancy design's freeing rules, one table at a time.</summary>
public class OccupancyTests
{
    private static Sim New() => new(design: Designs.Factory("occupancy")!);

    [Fact]
    public void APartialZapThatLeavesOnlyZeroPageEntriesFreesTheTable()
    {
        using var s = New();
        ulong p = s.Map(Sim.M2);
        s.TouchAll(p, 2 * Sim.K4);
        Assert.True(s.Cpu.ReadByte(p + (9 * Sim.K4), out _).Ok); // a zero-page entry
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.K4, Advice.DontNeed));
        Assert.Equal(1, s.Mm.Status().Tables.Pte); // one page still mapped
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p + Sim.K4, Sim.K4, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
        Assert.True(s.Cpu.ReadByte(p + (9 * Sim.K4), out byte b).Ok); // refaults the zero page in a fresh table
        Assert.Equal(0, b);
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
    }

    [Fact]
    public void PtReclaimAdviceFreesZeroPageOnlyTablesWhollyInTheRangeAndOtherDesignsRefuseIt()
    {
        using var s = New();
        ulong p = s.Map(3 * Sim.M2);
        for (ulong t = 0; t < 3; t++)
        {
            Assert.True(s.Cpu.ReadByte(p + (t * Sim.M2), out _).Ok);
        }

        s.TouchAll(p + (2 * Sim.M2) + Sim.K4, Sim.K4); // the third table holds a real page
        Assert.Equal(3, s.Mm.Status().Tables.Pte);
        // The range covers the first table whole, the second only in part.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.M2 + Sim.K4, Advice.PtReclaim));
        Assert.Equal(2, s.Mm.Status().Tables.Pte);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, 3 * Sim.M2, Advice.PtReclaim));
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
        Assert.Null(PtLab.Systematic.Invariants.CheckAtQuiescence(s.Machine, s.Mm, p, p + (3 * Sim.M2)));

        using var none = new Sim();
        ulong q = none.Map(Sim.M2);
        Assert.Equal(Errno.EINVAL, none.Mm.Madvise(none.Cpu, q, Sim.M2, Advice.PtReclaim));
    }
}
