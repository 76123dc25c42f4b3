using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Systematic;

namespace PtLab.Tests.Reclaim;

/// <summary>The scanner design's rules: what a pass frees, its hint, its delay, its ranking and its triggers.</summary>
public class ScannerTests
{
    private static Sim New(int delay = 0, int period = 0, long ram = 256L << 20) =>
        new(ramBytes: ram, pageData: false, design: Designs.Factory(Designs.Scanner, new DesignOptions { ScanDelay = delay, ScanPeriod = period })!);

    private static ScannerReclaim Scanner(MmStruct mm) => (ScannerReclaim)mm.Design;

    [Fact]
    public void APassFreesEmptyAndZeroPageOnlyTablesAndKeepsPopulatedOnesBehindTheirHint()
    {
        using var s = New();
        ulong p = s.Map(3 * Sim.M2);
        s.TouchAll(p, 4 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, 4 * Sim.K4, Advice.DontNeed)); // partial: pt-reclaim's rule keeps it
        Assert.True(s.Cpu.ReadByte(p + Sim.M2 + (7 * Sim.K4), out _).Ok); // a zero-page-only table
        s.TouchAll(p + (2 * Sim.M2), Sim.K4); // a populated table
        Assert.Equal(3, s.Mm.Status().Tables.Pte);

        var first = Kscand.Pass(s.Machine, s.Cpu);
        Assert.Equal(3, first.Scanned);
        Assert.Equal(2, first.Freed);
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
        Assert.Equal(0UL, s.Mm.PeekPte(p + Sim.M2 + (7 * Sim.K4)));

        // Nothing changed: the populated table's hint spares it the read.
        var second = Kscand.Pass(s.Machine, s.Cpu);
        Assert.Equal(new ScanStats(0, 1, 0, 0, 0, 0), second);

        // A write into it clears the hint: the next pass reads it again and still keeps it.
        s.TouchAll(p + (2 * Sim.M2) + Sim.K4, Sim.K4);
        var third = Kscand.Pass(s.Machine, s.Cpu);
        Assert.Equal(new ScanStats(1, 0, 0, 0, 0, 0), third);

        // A freed zero-page table refaults as it was.
        Assert.True(s.Cpu.ReadByte(p + Sim.M2 + (7 * Sim.K4), out byte b).Ok);
        Assert.Equal(0, b);
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, p, p + (3 * Sim.M2)));
    }

    [Fact]
    public void ATableEmptiedRecentlyWaitsForTheDelay()
    {
        using var s = New(delay: 2);
        ulong p = s.Map(Sim.M2);
        s.TouchAll(p, 2 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, 2 * Sim.K4, Advice.DontNeed));
        Assert.Equal(1, Kscand.Pass(s.Machine, s.Cpu).Delayed);
        Assert.Equal(1, Kscand.Pass(s.Machine, s.Cpu).Delayed);
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
        Assert.Equal(1, Kscand.Pass(s.Machine, s.Cpu).Freed); // two passes went by without a change
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
    }

    [Fact]
    public void ThePassVisitsTheAddressSpaceWithMostCandidateTablesFirst()
    {
        using var s = New();
        var other = s.Machine.NewAddressSpace();
        ulong p = s.Map(Sim.M2);
        s.TouchAll(p, Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.K4, Advice.DontNeed));
        var q = other.Mmap(s.Cpu, 0, 3 * Sim.M2, Sim.Rw, Sim.Anon);
        Assert.True(q.Ok);
        s.Cpu.SwitchMm(other);
        for (ulong t = 0; t < 3; t++)
        {
            Assert.True(s.Cpu.ReadByte(q.Address + (t * Sim.M2), out _).Ok);
        }

        s.Cpu.SwitchMm(s.Mm);
        Assert.Equal(1, Scanner(s.Mm).Candidates);
        Assert.Equal(3, Scanner(other).Candidates);
        Assert.Equal([other, s.Mm], Kscand.Ranked(s.Machine));

        var stats = Kscand.Pass(s.Machine, s.Cpu);
        Assert.Equal(4, stats.Freed);
        Assert.Equal(0, Scanner(s.Mm).Candidates);
        Assert.Equal(0, Scanner(other).Candidates);
        other.Exit(s.Cpu);
    }

    [Fact]
    public void MemoryPressureTriggersAScanThatFreesTheTablesReclaimEmptiedAfterMadvFree()
    {
        // 24 MiB of RAM and 32 MiB written then lazily freed: reclaim discards the lazy-free pages,
        // and the madvise after it scans.
        using var s = New(ram: 24L << 20);
        const ulong size = 32UL << 20;
        ulong p = s.Map(size, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong off = 0; off < size; off += Sim.M2)
        {
            s.TouchAll(p + off, Sim.M2);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p + off, Sim.M2, Advice.Free));
        }

        Assert.True(s.Machine.ReclaimStats.Discarded > 0, "reclaim never discarded a lazy-free page");
        Assert.True(Scanner(s.Mm).Passes > 0, "no scan ran under memory pressure");
        Assert.True(Scanner(s.Mm).Totals.Freed > 0, "the pressure scans freed no table");
        Assert.True(s.Mm.Status().Tables.Pte < (long)(size / Sim.M2));
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, p, p + size));
    }

    [Fact]
    public void WithoutPressureOnlyThePeriodTriggersAScan()
    {
        using var quiet = New();
        using var periodic = New(period: 2);
        foreach (var s in new[] { quiet, periodic })
        {
            ulong p = s.Map(Sim.M2);
            s.TouchAll(p, 2 * Sim.K4);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.K4, Advice.DontNeed));
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p + Sim.K4, Sim.K4, Advice.DontNeed));
        }

        Assert.Equal(0, Scanner(quiet.Mm).Passes);
        Assert.Equal(1, quiet.Mm.Status().Tables.Pte);
        Assert.Equal(1, Scanner(periodic.Mm).Passes);
        Assert.Equal(0, periodic.Mm.Status().Tables.Pte);
    }

    [Fact]
    public void PtReclaimAdviceFreesAZeroPageOnlyTableAtOnce()
    {
        using var s = New(delay: 5);
        ulong p = s.Map(Sim.M2);
        Assert.True(s.Cpu.ReadByte(p, out _).Ok);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.M2, Advice.PtReclaim));
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
    }

    [Fact]
    public void AWholeTableDontNeedStillFreesAtOnceAsUpstreamDoes()
    {
        using var s = New();
        ulong p = s.Map(Sim.M2);
        s.TouchAll(p, 4 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, p, Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
        Assert.Equal(1, Scanner(s.Mm).ZapFrees);
        Assert.Equal(0, Scanner(s.Mm).Passes);
    }
}
