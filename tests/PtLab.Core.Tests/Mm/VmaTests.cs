using PtLab.Mm;

namespace PtLab.Tests.Mm;

public class VmaTests
{
    [Fact]
    public void AdjacentCompatibleAnonymousMappingsMergeIntoOneVma()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, addr: 0x10000000, flags: Sim.Anon | MapFlags.Fixed);
        ulong b = s.Map(Sim.M1, addr: 0x10100000, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(a + Sim.M1, b);
        var v = Assert.Single(s.Mm.Vmas);
        Assert.Equal(0x10000000UL, v.Start);
        Assert.Equal(0x10200000UL, v.End);
    }

    [Fact]
    public void MappingsWithDifferentProtectionStaySeparate()
    {
        using var s = new Sim();
        s.Map(Sim.M1, addr: 0x10000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Map(Sim.M1, Prot.Read, addr: 0x10100000, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(2, s.Mm.Vmas.Count);
    }

    [Fact]
    public void AMappingThatFillsAHoleMergesWithBothNeighbours()
    {
        using var s = new Sim();
        s.Map(Sim.M1, addr: 0x10000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Map(Sim.M1, addr: 0x10200000, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(2, s.Mm.Vmas.Count);
        s.Map(Sim.M1, addr: 0x10100000, flags: Sim.Anon | MapFlags.Fixed);
        var v = Assert.Single(s.Mm.Vmas);
        Assert.Equal(0x10300000UL, v.End);
    }

    [Fact]
    public void NeighboursThatAlreadyHaveDifferentAnonVmasDoNotMerge()
    {
        using var s = new Sim();
        // Two faulted mappings a page apart get separate anon_vmas; filling the hole between them
        // can merge with one side only, as Linux's is_mergeable_anon_vma decides.
        s.Map(Sim.K4, addr: 0x10000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Map(Sim.K4, addr: 0x10002000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(0x10000000, Sim.K4);
        s.TouchAll(0x10002000, Sim.K4);
        Assert.NotSame(s.Mm.Vmas[0].AnonVma, s.Mm.Vmas[1].AnonVma);
        var left = s.Mm.Vmas[0].AnonVma;
        s.Map(Sim.K4, addr: 0x10001000, flags: Sim.Anon | MapFlags.Fixed);
        var vmas = s.Mm.Vmas;
        Assert.Equal(2, vmas.Count);
        Assert.Equal(0x10002000UL, vmas[0].End); // merged to the left, as vma_merge prefers
        Assert.Same(left, vmas[0].AnonVma);
    }

    [Fact]
    public void MprotectOfTheMiddleSplitsIntoThreeAndRestoringMergesBack()
    {
        using var s = new Sim();
        ulong a = s.Map(3 * Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.M1, Sim.M1, Prot.Read));
        var vmas = s.Mm.Vmas;
        Assert.Equal(3, vmas.Count);
        Assert.Equal("r--p", vmas[1].FlagString());
        Assert.Equal(a + Sim.M1, vmas[1].Start);
        Assert.Equal(a + (2 * Sim.M1), vmas[1].End);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.M1, Sim.M1, Sim.Rw));
        Assert.Single(s.Mm.Vmas);
    }

    [Fact]
    public void MunmapOfTheMiddleLeavesTwoVmas()
    {
        using var s = new Sim();
        ulong a = s.Map(3 * Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + Sim.M1, Sim.M1));
        var vmas = s.Mm.Vmas;
        Assert.Equal(2, vmas.Count);
        Assert.Equal(a + Sim.M1, vmas[0].End);
        Assert.Equal(a + (2 * Sim.M1), vmas[1].Start);
        Assert.Equal(4UL << 20 >> 10, (ulong)s.Mm.Status().VmSizeKb * 2);
    }

    [Fact]
    public void TopDownPlacementStartsBelowTheStackGap()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.K4 * 3);
        Assert.Equal(MmStruct.DefaultMmapBase - (3 * Sim.K4), a);
        ulong b = s.Map(Sim.K4);
        Assert.Equal(a - Sim.K4, b);
    }

    /// <summary>
    /// A replay gives the address space the recorded mmap_base (exec randomises it): top-down
    /// placement then starts there, and fork keeps it. A base outside user space is refused.
    /// </summary>
    [Fact]
    public void TopDownPlacementStartsAtTheMmapBaseSet()
    {
        using var s = new Sim();
        const ulong recorded = 0x7f3a_1c2d_5000;
        s.Mm.SetMmapBase(s.Cpu, recorded + 0x123);
        Assert.Equal(recorded, s.Mm.MmapBase);
        Assert.Equal(recorded - Sim.K4 * 3, s.Map(Sim.K4 * 3));
        Assert.Equal(recorded - Sim.K4 * 3 - Sim.M2 * 2 - ((recorded - Sim.K4 * 3) % Sim.M2), s.Map(Sim.M2 * 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Mm.SetMmapBase(s.Cpu, 0x1000));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Mm.SetMmapBase(s.Cpu, 1UL << 48));
    }

    [Fact]
    public void LargeAnonymousMappingsComeBackTwoMegabyteAligned()
    {
        using var s = new Sim();
        s.Map(Sim.K4); // leave the top unaligned
        ulong a = s.Map(50UL << 30, flags: Sim.Anon | MapFlags.NoReserve);
        Assert.Equal(0UL, a % Sim.M2);
        ulong b = s.Map(Sim.M2 * 3, flags: Sim.Anon | MapFlags.NoReserve);
        Assert.Equal(0UL, b % Sim.M2);
        Assert.True(b + (Sim.M2 * 3) <= a);
    }

    [Fact]
    public void AHintIsUsedWhenTheRangeIsFree()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.K4, addr: 0x20000000);
        Assert.Equal(0x20000000UL, a);
        ulong b = s.Map(Sim.K4, addr: 0x20000000); // taken now: placed elsewhere
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void MapFixedReplacesWhatWasThere()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M2);
        Assert.Equal(512 * 4, s.Mm.Status().RssAnonKb);
        s.Map(Sim.M1, Prot.Read, addr: a, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(256 * 4, s.Mm.Status().RssAnonKb);
        Assert.Equal(2, s.Mm.Vmas.Count);
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(0, v);
    }
}
