using PtLab.Mm;
using PtLab.Paging;

namespace PtLab.Tests.Mm;

/// <summary>brk (mm/mmap.c) and stacks that grow down (expand_downwards, stack_guard_gap).</summary>
public class BrkAndStackTests
{
    [Fact]
    public void BrkGrowsOneHeapVmaAndShrinkingUnmapsAndFreesItsTables()
    {
        using var s = new Sim();
        ulong start = s.Mm.StartBrk;
        Assert.Equal(start, s.Mm.Brk(s.Cpu, 0)); // below start_brk: the current break
        Assert.Equal(start + 100, s.Mm.Brk(s.Cpu, start + 100));
        Assert.Equal(start + (3 * Sim.M1), s.Mm.Brk(s.Cpu, start + (3 * Sim.M1)));
        var heap = Assert.Single(s.Mm.Vmas);
        Assert.Equal((start, start + (3 * Sim.M1)), (heap.Start, heap.End));
        Assert.Equal(VmFlags.Read | VmFlags.Write | VmFlags.Account, heap.Flags & (VmFlags.Read | VmFlags.Write | VmFlags.Exec | VmFlags.Account));
        s.TouchAll(start, 3 * Sim.M1);
        long ptes = s.Mm.Status().Tables.Pte;
        Assert.Equal(start + Sim.K4 + 1, s.Mm.Brk(s.Cpu, start + Sim.K4 + 1));
        Assert.Equal(start + (2 * Sim.K4), Assert.Single(s.Mm.Vmas).End);
        Assert.Equal(8, s.Mm.Status().RssAnonKb);
        Assert.True(s.Mm.Status().Tables.Pte < ptes);
        Assert.Equal(start, s.Mm.Brk(s.Cpu, start));
        Assert.Empty(s.Mm.Vmas);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// dup_mm copies the parent's mm_struct, its break included: the child's brk grows the heap it
    /// inherited, in place, and leaves the parent's alone.
    /// </summary>
    [Fact]
    public void AForkedChildGrowsTheHeapItInherited()
    {
        using var s = new Sim();
        s.Mm.SetBrkBase(s.Cpu, 0x1000000000);
        ulong brk = s.Mm.Brk(s.Cpu, 0x1000000000 + Sim.M1 + 100);
        s.TouchAll(0x1000000000, Sim.M1);
        var child = s.Mm.Fork(s.Cpu)!;
        Assert.Equal((s.Mm.StartBrk, brk), (child.StartBrk, child.CurrentBrk));
        Assert.Equal(brk + Sim.M1, child.Brk(s.Cpu, brk + Sim.M1));
        var heap = Assert.Single(child.Vmas);
        Assert.Equal((0x1000000000UL, Geometry.PageAlign(brk + Sim.M1)), (heap.Start, heap.End));
        Assert.Equal(brk, s.Mm.CurrentBrk);
        Assert.Equal(Geometry.PageAlign(brk), Assert.Single(s.Mm.Vmas).End);
        child.Mmput(s.Cpu);
    }

    [Fact]
    public void BrkRefusesToGrowIntoAnotherMappingAndReturnsTheOldBreak()
    {
        using var s = new Sim();
        ulong start = s.Mm.StartBrk;
        s.Map(Sim.K4, addr: start + Sim.M1, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(start, s.Mm.Brk(s.Cpu, start + Sim.M2));
        Assert.Equal(start, s.Mm.Brk(s.Cpu, start + Sim.M1)); // a page must stay free below the next VMA
        Assert.Equal(start + Sim.M1 - Sim.K4, s.Mm.Brk(s.Cpu, start + Sim.M1 - Sim.K4));
        Assert.Equal(start + Sim.M1 - Sim.K4, s.Mm.CurrentBrk);
    }

    [Fact]
    public void BrkKeepsAStacksGuardGapFree()
    {
        using var s = new Sim();
        ulong start = s.Mm.StartBrk;
        ulong stack = start + (4 * Sim.M1);
        s.Map(Sim.M1, addr: stack, flags: Sim.Anon | MapFlags.Fixed | MapFlags.GrowsDown);
        Assert.Equal(start, s.Mm.Brk(s.Cpu, stack - MmStruct.StackGuardGap));
        ulong fits = stack - MmStruct.StackGuardGap - Sim.K4;
        Assert.Equal(fits, s.Mm.Brk(s.Cpu, fits));
    }

    [Fact]
    public void BrkRespectsRlimitDataAndAMovedBase()
    {
        using var s = new Sim();
        s.Mm.SetBrkBase(s.Cpu, 0x1000000000);
        Assert.Equal(0x1000000000UL, s.Mm.StartBrk);
        s.Mm.RlimitData = Sim.M1;
        Assert.Equal(0x1000000000UL, s.Mm.Brk(s.Cpu, 0x1000000000 + Sim.M2));
        Assert.Equal(0x1000000000 + Sim.M1, s.Mm.Brk(s.Cpu, 0x1000000000 + Sim.M1));
    }

    [Fact]
    public void AHeapVmaChangedByMprotectIsNotExtendedAndGrowthStartsANewVma()
    {
        using var s = new Sim();
        ulong start = s.Mm.StartBrk;
        s.Mm.Brk(s.Cpu, start + Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, start, Sim.M1, Prot.Read));
        s.Mm.Brk(s.Cpu, start + Sim.M2);
        Assert.Equal(2, s.Mm.Vmas.Count);
    }

    [Fact]
    public void AFaultBelowAGrowsDownVmaExtendsItAndAFaultTooFarIsASegfault()
    {
        using var s = new Sim();
        ulong top = 0x7f0000000000;
        ulong stack = s.Map(Sim.M1, addr: top - Sim.M1, flags: Sim.Anon | MapFlags.Fixed | MapFlags.GrowsDown);
        Assert.True(s.Cpu.Touch(stack - (5 * Sim.K4) + 8).Ok);
        var vma = Assert.Single(s.Mm.Vmas);
        Assert.Equal(stack - (5 * Sim.K4), vma.Start);
        Assert.Equal(1, s.Mm.StackExpansions);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(top - (9 * Sim.M1)).Outcome); // over RLIMIT_STACK (8 MiB)
        Assert.True(s.Cpu.Touch(top - (8 * Sim.M1)).Ok);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AStackCannotGrowWithinTheGuardGapOfTheMappingBelowIt()
    {
        using var s = new Sim();
        ulong stack = 0x7f0000000000;
        s.Map(Sim.M1, addr: stack, flags: Sim.Anon | MapFlags.Fixed | MapFlags.GrowsDown);
        s.Map(Sim.K4, addr: stack - (2 * Sim.M1), flags: Sim.Anon | MapFlags.Fixed);
        ulong floor = stack - (2 * Sim.M1) + Sim.K4; // end of the mapping below
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(floor + MmStruct.StackGuardGap - Sim.K4).Outcome);
        Assert.True(s.Cpu.Touch(floor + MmStruct.StackGuardGap).Ok);
    }

    [Fact]
    public void TopDownPlacementLeavesAStacksGuardGapAndPlacesAStackAboveItsOwnGap()
    {
        using var s = new Sim();
        ulong stack = s.Mm.MmapBase - Sim.M1;
        s.Map(Sim.M1, addr: stack, flags: Sim.Anon | MapFlags.Fixed | MapFlags.GrowsDown);
        ulong a = s.Map(Sim.K4);
        Assert.Equal(stack - MmStruct.StackGuardGap - Sim.K4, a);
        ulong st = s.Map(Sim.K4, flags: Sim.Anon | MapFlags.GrowsDown);
        Assert.Equal(a - Sim.K4, st);
        ulong next = s.Map(Sim.K4);
        Assert.Equal(st - MmStruct.StackGuardGap - Sim.K4, next);
    }
}
