using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Tests.Reclaim;

/// <summary>--free-pmd: MADV_DONTNEED frees the PMD tables it leaves empty, in the designs that take it.</summary>
public class FreePmdTests
{
    private static Sim New(string design, bool freePmd) => new(design: Designs.Factory(design, new DesignOptions { FreePmd = freePmd })!);

    // A GiB-aligned region of two GiB, so each GiB has a PMD table of its own.
    private static ulong MapTwoGiB(Sim s) => s.Map(2 * Sim.G1, flags: Sim.Anon | MapFlags.Fixed | MapFlags.NoReserve, addr: 4 * Sim.G1);

    [Theory]
    [InlineData("occupancy")]
    [InlineData("pt-reclaim")]
    public void ADontNeedThatEmptiesAGibFreesItsPmdTableAndAFaultBringsANewOne(string design)
    {
        using var s = New(design, freePmd: true);
        ulong p = MapTwoGiB(s);
        foreach (ulong off in new[] { 0UL, Sim.M2, Sim.G1 + Sim.M2 })
        {
            s.TouchAll(p + off, Sim.K4);
        }

        Assert.Equal(new TableCounts(3, 2, 1), s.Tables);
        long vmPteBefore = s.Mm.Status().VmPteKb;
        // Empties the first GiB's two PTE tables, and so its PMD table; the second GiB keeps one page.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.G1 + Sim.M2, Advice.DontNeed));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
        Assert.Equal(vmPteBefore - (3 * 4), s.Mm.Status().VmPteKb); // two PTE tables and one PMD table, 4 kB each
        Assert.Equal(1, s.Mm.PmdTablesFreedByMadvise);
        s.AssertAccountingConsistent();
        Assert.Null(PtLab.Systematic.Invariants.CheckAtQuiescence(s.Machine, s.Mm, p, p + (4 * Sim.M2), exit: false));

        s.TouchAll(p + Sim.K4, Sim.K4); // the fault allocates a fresh PMD table
        Assert.Equal(new TableCounts(2, 2, 1), s.Tables);
        Assert.Equal(1, s.Mm.Counters().PmdTablesFreed);
        Assert.Null(PtLab.Systematic.Invariants.CheckAtQuiescence(s.Machine, s.Mm, p, p + (4 * Sim.M2)));
    }

    [Theory]
    [InlineData("occupancy", false)]
    [InlineData("pt-reclaim", false)]
    [InlineData("none", true)] // no PTE table is freed by the zap, so no PMD table empties
    public void WithoutTheOptionOrWithoutTableFreeingThePmdTableStays(string design, bool freePmd)
    {
        using var s = New(design, freePmd);
        ulong p = MapTwoGiB(s);
        s.TouchAll(p, Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.G1, Advice.DontNeed));
        Assert.Equal(1, s.Tables.Pmd);
        Assert.Equal(design == "none" ? 1 : 0, s.Tables.Pte);
        Assert.Equal(0, s.Mm.PmdTablesFreedByMadvise);
    }

    [Fact]
    public void PtReclaimKeepsThePmdTableWhileAPartialZapKeepsAPteTable()
    {
        using var s = New("pt-reclaim", freePmd: true);
        ulong p = MapTwoGiB(s);
        s.TouchAll(p, Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.K4, Advice.DontNeed)); // less than the whole 2 MiB: the table stays
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.M2, Advice.DontNeed));
        Assert.Equal(new TableCounts(0, 0, 1), s.Tables);
    }

    [Fact]
    public void TheOptionIsReportedOnlyByTheDesignsThatTakeItAndItsMutationsNeedIt()
    {
        Assert.True(Designs.TakesFreePmd("occupancy"));
        Assert.True(Designs.TakesFreePmd("pt-reclaim"));
        Assert.False(Designs.TakesFreePmd("pte-ref"));
        Assert.Contains(new KeyValuePair<string, string>("freePmd", "on"), Designs.ReportedOptions("occupancy", new DesignOptions { FreePmd = true }));
        Assert.Empty(Designs.ReportedOptions("pt-reclaim", new DesignOptions()));
        Assert.Null(Designs.Factory("pte-ref", new DesignOptions { FreePmd = true })!().FreesPmdTables);
        var e = Assert.Throws<ArgumentException>(() => Designs.Factory("occupancy", new DesignOptions { Mutation = Mutation.SkipPmdRcu }));
        Assert.Contains("--free-pmd", e.Message);
    }
}
