using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;

namespace PtLab.Tests.Mm;

/// <summary>mremap as mm/mremap.c does it: resizing in place, moving VMAs, and moving their tables.</summary>
public class MremapTests
{
    private const ulong At = 0x40000000;
    private const ulong To = 0x80000000;
    private const MremapFlags MoveFixed = MremapFlags.MayMove | MremapFlags.Fixed;

    private static ulong MapAt(Sim s, ulong at, ulong len, Prot prot = Sim.Rw) => s.Map(len, prot, Sim.Anon | MapFlags.Fixed, at);

    [Fact]
    public void GrowingIntoFreeRoomExtendsTheVmaInPlaceAndShrinkingUnmapsTheTail()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        s.TouchAll(At, Sim.M1);
        var r = s.Mm.Mremap(s.Cpu, At, Sim.M1, 3 * Sim.M1, MremapFlags.None);
        Assert.Equal(At, r.Address);
        Assert.Equal(At + (3 * Sim.M1), Assert.Single(s.Mm.Vmas).End);
        Assert.True(s.Cpu.Touch(At + (2 * Sim.M1)).Ok);
        r = s.Mm.Mremap(s.Cpu, At, 3 * Sim.M1, Sim.M1 / 2, MremapFlags.None);
        Assert.Equal(At, r.Address);
        Assert.Equal(128 * 4, s.Mm.Status().RssAnonKb);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(At + Sim.M1).Outcome);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void GrowingWithoutRoomNeedsMayMoveAndThenMovesTheDataKeepingItsTablesLayout()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        MapAt(s, At + Sim.M1, Sim.K4, Prot.Read); // a neighbour in the way
        s.Cpu.Write(At + 10, [42]);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M2, MremapFlags.None).Error);
        var r = s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M2, MremapFlags.MayMove);
        Assert.True(r.Ok);
        Assert.NotEqual(At, r.Address);
        Assert.True(s.Cpu.ReadByte(r.Address + 10, out byte v).Ok);
        Assert.Equal(42, v);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.ReadByte(At, out _).Outcome);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    public void AnAlignedMoveCarriesWholePteTablesAndFreesTheSourceTablesWithItsVma(string design)
    {
        using var s = new Sim(design: Designs.Factory(design));
        MapAt(s, At, 4 * Sim.M2);
        s.TouchAll(At, 4 * Sim.M2);
        var pteBefore = s.Mm.Status().Tables.Pte;
        var r = s.Mm.Mremap(s.Cpu, At, 4 * Sim.M2, 4 * Sim.M2, MoveFixed, To);
        Assert.Equal(To, r.Address);
        Assert.Equal(4, s.Mm.MremapMoves.NormalPmds);
        Assert.Equal(0, s.Mm.MremapMoves.Ptes);
        Assert.Equal(pteBefore, s.Mm.Status().Tables.Pte); // the same four tables, now under To
        Assert.Equal(1, s.Mm.Status().Tables.Pmd);         // the source GiB's PMD table went with its last VMA
        Assert.Equal(4 * 2048, s.Mm.Status().RssAnonKb);
        s.TouchAll(To, 4 * Sim.M2, write: false);
        Assert.Equal(4 * 512, s.Cpu.Faults); // no fault after the move
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void AMisalignedMoveMovesEntriesIntoNewTablesAndFreePgtablesTakesTheOldOnes()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M2);
        s.TouchAll(At, Sim.M2);
        var r = s.Mm.Mremap(s.Cpu, At, Sim.M2, Sim.M2, MoveFixed, To + Sim.K4);
        Assert.True(r.Ok);
        Assert.Equal(0, s.Mm.MremapMoves.NormalPmds);
        Assert.Equal(512, s.Mm.MremapMoves.Ptes);
        Assert.Equal(2, s.Mm.Status().Tables.Pte); // the destination straddles two tables; the source's went
        Assert.Equal(512 * 4, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AddressesAtTheSameOffsetInTheirPmdAreRealignedSoMostTablesMoveWhole()
    {
        using var s = new Sim();
        ulong off = 64 * Sim.K4;
        MapAt(s, At + off, (3 * Sim.M2) - off);
        s.TouchAll(At + off, (3 * Sim.M2) - off);
        var r = s.Mm.Mremap(s.Cpu, At + off, (3 * Sim.M2) - off, (3 * Sim.M2) - off, MoveFixed, To + off);
        Assert.True(r.Ok);
        Assert.Equal(3, s.Mm.MremapMoves.NormalPmds); // try_realign_addr made the first 2 MiB a whole-table move too
        Assert.Equal(0, s.Mm.MremapMoves.Ptes);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void APartMoveLeavesTheSourceTableWhenItsVmaStillUsesIt()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M2);
        s.TouchAll(At, Sim.M2);
        var r = s.Mm.Mremap(s.Cpu, At + Sim.M1, Sim.M1, Sim.M1, MoveFixed, To + Sim.M1);
        Assert.True(r.Ok);
        Assert.Equal(256, s.Mm.MremapMoves.Ptes);
        Assert.Equal(2, s.Mm.Status().Tables.Pte); // the source table still maps [At, At + 1 MiB)
        Assert.Equal(2, s.Mm.Vmas.Count);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void DontUnmapMovesThePagesAndKeepsTheOldRangeMappedEmptyAndUnlocked()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, Sim.M1));
        s.Cpu.Write(At, [5]);
        var r = s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M1, MoveFixed | MremapFlags.DontUnmap, To);
        Assert.Equal(To, r.Address);
        var old = s.Mm.Vmas.Single(v => v.Start == At);
        Assert.Equal(VmFlags.None, old.Flags & (VmFlags.Locked | VmFlags.LockOnFault));
        Assert.Equal(VmFlags.Account, old.Flags & VmFlags.Account); // kept, as on 6.18
        Assert.Null(old.AnonVma);
        Assert.True(s.Cpu.ReadByte(At, out byte v).Ok);
        Assert.Equal(0, v); // a fresh zero page: the data moved
        Assert.True(s.Cpu.ReadByte(To, out v).Ok);
        Assert.Equal(5, v);
        Assert.Equal(2048, s.Mm.Status().VmLckKb); // locked_vm is not given back for the old range
        s.AssertAccountingConsistent();
    }

    [Theory]
    [InlineData(0x1UL, Sim.K4, Sim.K4, MremapFlags.None, 0UL, Errno.EINVAL)]                       // unaligned address
    [InlineData(0x40000000UL, Sim.K4, 0UL, MremapFlags.None, 0UL, Errno.EINVAL)]                   // zero new length
    [InlineData(0x40000000UL, Sim.K4, Sim.K4, (MremapFlags)8, 0UL, Errno.EINVAL)]                  // unknown flag
    [InlineData(0x40000000UL, Sim.K4, Sim.K4, MremapFlags.Fixed, 0x80000000UL, Errno.EINVAL)]      // FIXED without MAYMOVE
    [InlineData(0x40000000UL, Sim.K4, Sim.M1, MremapFlags.MayMove | MremapFlags.DontUnmap, 0x80000000UL, Errno.EINVAL)] // DONTUNMAP resizing
    [InlineData(0x40000000UL, Sim.M1, Sim.M1, MremapFlags.MayMove | MremapFlags.Fixed, 0x40080000UL, Errno.EINVAL)]    // overlap
    [InlineData(0x50000000UL, Sim.K4, Sim.M1, MremapFlags.MayMove, 0UL, Errno.EFAULT)]             // nothing mapped
    [InlineData(0x40000000UL, 0UL, Sim.M1, MremapFlags.MayMove, 0UL, Errno.EINVAL)]                // duplicating a private mapping
    [InlineData(0x40000000UL, Sim.M2, Sim.M2 * 2, MremapFlags.MayMove, 0UL, Errno.EFAULT)]         // growing past the VMA
    public void BadRequestsGetLinuxsErrno(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr, Errno expected)
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(expected, s.Mm.Mremap(s.Cpu, addr, oldLen, newLen, flags, newAddr).Error);
        Assert.Single(s.Mm.Vmas);
    }

    [Fact]
    public void AFixedMoveOfEqualLengthCarriesSeveralVmasAndTheirGaps()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        MapAt(s, At + Sim.M1 + Sim.K4, Sim.M1, Prot.Read);
        s.Cpu.Write(At, [3]);
        var r = s.Mm.Mremap(s.Cpu, At, (2 * Sim.M1) + Sim.K4, (2 * Sim.M1) + Sim.K4, MoveFixed, To);
        Assert.Equal(To, r.Address);
        var vmas = s.Mm.Vmas;
        Assert.Equal(2, vmas.Count);
        Assert.Equal((To, To + Sim.M1), (vmas[0].Start, vmas[0].End));
        Assert.Equal(To + Sim.M1 + Sim.K4, vmas[1].Start);
        Assert.Equal(VmFlags.None, vmas[1].Flags & VmFlags.Write);
        Assert.True(s.Cpu.ReadByte(To, out byte v).Ok);
        Assert.Equal(3, v);
    }

    [Fact]
    public void AFaultedVmaKeepsItsPageOffsetSoItDoesNotMergeWithAFreshNeighbourAfterAMove()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        s.TouchAll(At, Sim.K4);
        Assert.True(s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M1, MoveFixed, To).Ok);
        MapAt(s, To + Sim.M1, Sim.M1);
        Assert.Equal(2, s.Mm.Vmas.Count);

        using var t = new Sim();
        MapAt(t, At, Sim.M1); // never faulted: it takes the new offset and merges
        Assert.True(t.Mm.Mremap(t.Cpu, At, Sim.M1, Sim.M1, MoveFixed, To).Ok);
        MapAt(t, To + Sim.M1, Sim.M1);
        Assert.Single(t.Mm.Vmas);
    }

    [Fact]
    public void HugePmdsMoveWholeWhenAlignedAndAreSplitOtherwise()
    {
        using var s = new Sim();
        MapAt(s, At, 2 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 2 * Sim.M2, Advice.HugePage));
        s.TouchAll(At, 2 * Sim.M2, write: false);
        s.Cpu.Touch(At);
        Assert.True(s.Mm.Mremap(s.Cpu, At, 2 * Sim.M2, 2 * Sim.M2, MoveFixed, To).Ok);
        Assert.Equal(2, s.Mm.MremapMoves.HugePmds);
        Assert.Equal(2, s.Mm.DepositedTables);
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);

        Assert.True(s.Mm.Mremap(s.Cpu, To, 2 * Sim.M2, 2 * Sim.M2, MoveFixed, At + Sim.K4).Ok);
        Assert.Equal(2, s.Mm.ThpCounters().SplitPmd);
        Assert.Equal(0, s.Mm.DepositedTables);
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.True(s.Cpu.ReadByte(At + Sim.K4, out _).Ok);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void GrowingALockedVmaPopulatesTheNewPart()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, Sim.M1));
        Assert.True(s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M2, MremapFlags.None).Ok);
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(2048, s.Mm.Status().VmLckKb);
        Assert.Equal(0, s.Cpu.Faults);
    }

    [Fact]
    public void MovingAnAccountedVmaKeepsTheCommitmentAndGrowingChargesTheDifference()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        long before = s.Mm.CommittedPages;
        Assert.True(s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M1, MoveFixed, To).Ok);
        Assert.Equal(before, s.Mm.CommittedPages);
        Assert.True(s.Mm.Mremap(s.Cpu, To, Sim.M1, Sim.M2, MremapFlags.None).Ok);
        Assert.Equal(before + 256, s.Mm.CommittedPages);
        Assert.True(s.Mm.Mremap(s.Cpu, To, Sim.M2, Sim.M1, MremapFlags.None).Ok);
        Assert.Equal(before, s.Mm.CommittedPages);
        Assert.True(s.Mm.Vmas.All(v => (v.Flags & VmFlags.Account) != 0));
    }
}
