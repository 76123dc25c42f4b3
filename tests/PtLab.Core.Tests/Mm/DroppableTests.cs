using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Tests.Mm;

/// <summary>MAP_DROPPABLE (Linux 6.11+): anonymous memory whose pages reclaim drops, written or not.</summary>
public class DroppableTests
{
    private const ulong At = 0x40000000;

    private static MmapResult MapDroppable(Sim s, ulong len, Prot prot = Sim.Rw, MapFlags extra = MapFlags.None) =>
        s.Mm.Mmap(s.Cpu, At, len, prot, MapFlags.Droppable | MapFlags.Anonymous | MapFlags.Fixed | extra);

    [Fact]
    public void ADroppableMappingReservesNothingAndSurvivesNoForkNorDump()
    {
        using var s = new Sim();
        Assert.True(MapDroppable(s, Sim.M1).Ok);
        var flags = s.Mm.FindVma(At)!.Flags;
        const VmFlags expected = VmFlags.Droppable | VmFlags.NoReserve | VmFlags.WipeOnFork | VmFlags.DontDump;
        Assert.Equal(expected, flags & (expected | VmFlags.Account | VmFlags.Shared));
        Assert.Equal(0, s.Mm.CommittedPages);
    }

    [Fact]
    public void DroppableIsForAnonymousMemoryOnlyAndNeitherLockedNorGrowingDown()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 5), Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, At, Sim.M1, Sim.Rw, MapFlags.Droppable | MapFlags.Fixed, f, 0).Error);
        Assert.Equal(Errno.EINVAL, MapDroppable(s, Sim.M1, extra: MapFlags.Locked).Error);
        Assert.Equal(Errno.EINVAL, MapDroppable(s, Sim.M1, extra: MapFlags.GrowsDown).Error);
        Assert.Empty(s.Mm.Vmas);
    }

    [Fact]
    public void AWrittenDroppablePageIsNeverSwapBackedAndReclaimDropsIt()
    {
        using var s = new Sim(); // no swap: a swap-backed page would stay
        Assert.True(MapDroppable(s, 16 * Sim.K4).Ok);
        s.Map(16 * Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed, At + Sim.M2);
        s.TouchAll(At, 16 * Sim.K4);
        s.TouchAll(At + Sim.M2, 16 * Sim.K4);
        long pfn = Entry.Pfn(s.Mm.PeekPte(At));
        Assert.False(s.Machine.Phys.Desc(pfn).Has(PageFlags.SwapBacked));
        Assert.Equal(16, s.Machine.Phys.LruFilePages); // folio_is_file_lru: not swap-backed
        Assert.Equal(128, s.Mm.Status().RssAnonKb);

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 16 * Sim.K4, Advice.PageOut));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M2, 16 * Sim.K4, Advice.PageOut));
        Assert.Equal(64, s.Mm.Status().RssAnonKb); // the droppable pages went, dirty as they were
        Assert.True(Entry.IsNone(s.Mm.PeekPte(At)));
        Assert.True(s.Cpu.ReadByte(At, out byte b).Ok);
        Assert.Equal(0, b); // dropped: it reads as zeros again
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// Reclaim drops a whole written table's worth of droppable pages under every design: the
    /// counts, the page references and each design's table accounting stay consistent, and a
    /// design that frees a table with its last entry may free it here too.
    /// </summary>
    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void EveryDesignDropsAWrittenDroppableTableConsistently(string design)
    {
        using var s = new Sim(design: Designs.Factory(design));
        Assert.True(MapDroppable(s, Sim.M2).Ok);
        s.TouchAll(At, Sim.M2);
        long pte = s.Mm.Status().VmPteKb;
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.True(s.Mm.Status().VmPteKb <= pte);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
        Assert.True(s.Cpu.ReadByte(At + Sim.M1, out byte b).Ok);
        Assert.Equal(0, b);
    }

    [Fact]
    public void MlockLeavesADroppableVmaUnlockedButMlockallFutureStillFaultsItIn()
    {
        using var s = new Sim();
        Assert.True(MapDroppable(s, Sim.M1).Ok);
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, Sim.M1));
        Assert.Equal(VmFlags.None, s.Mm.FindVma(At)!.Flags & VmFlags.Locked);
        Assert.Equal(0, s.Mm.Status().VmLckKb);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At, Sim.M1));

        // mlockall(MCL_FUTURE | MCL_ONFAULT): a private mapping is locked and not faulted in; a
        // droppable one is not locked, and faulted in whole (the populate follows the lock asked
        // for, and the VMA has no VM_LOCKONFAULT to stop it).
        Assert.Equal(Errno.None, s.Mm.Mlockall(s.Cpu, MlockallFlags.Future | MlockallFlags.OnFault));
        Assert.True(MapDroppable(s, Sim.M1).Ok);
        Assert.Equal(0, s.Mm.Status().VmLckKb);
        Assert.Equal(1024, s.Mm.Status().RssAnonKb);
        s.Map(Sim.M1, Sim.Rw, Sim.Anon | MapFlags.Fixed, At + Sim.M2);
        Assert.Equal(1024, s.Mm.Status().VmLckKb);
        Assert.Equal(1024, s.Mm.Status().RssAnonKb);
    }

    /// <summary>
    /// Under mlockall(MCL_FUTURE) a droppable mapping tries its merge with the lock bits it then
    /// loses, so two droppable neighbours with the same flags stay two VMAs, as on the host (found
    /// by the kernel fuzzer).
    /// </summary>
    [Fact]
    public void UnderMlockallFutureDroppableNeighboursStayApart()
    {
        using var s = new Sim();
        Assert.Equal(Errno.None, s.Mm.Mlockall(s.Cpu, MlockallFlags.Future | MlockallFlags.OnFault));
        Assert.True(MapDroppable(s, 4 * Sim.K4, Prot.Read).Ok);
        Assert.True(s.Mm.Mmap(s.Cpu, At + (4 * Sim.K4), 4 * Sim.K4, Prot.Read, MapFlags.Droppable | MapFlags.Anonymous | MapFlags.Fixed).Ok);
        Assert.Equal(2, s.Mm.Vmas.Count);
        Assert.Equal(s.Mm.Vmas[0].Flags, s.Mm.Vmas[1].Flags);

        // Without the lock they merge.
        using var t = new Sim();
        Assert.True(MapDroppable(t, 4 * Sim.K4, Prot.Read).Ok);
        Assert.True(t.Mm.Mmap(t.Cpu, At + (4 * Sim.K4), 4 * Sim.K4, Prot.Read, MapFlags.Droppable | MapFlags.Anonymous | MapFlags.Fixed).Ok);
        Assert.Single(t.Mm.Vmas);
    }

    [Theory]
    [InlineData(Advice.KeepOnFork)]
    [InlineData(Advice.DoDump)]
    public void ADroppableVmaRefusesToKeepItsPagesOverAForkOrInADump(Advice advice)
    {
        using var s = new Sim();
        Assert.True(MapDroppable(s, Sim.M1).Ok);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, At, Sim.K4, advice));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.K4, Advice.Mergeable)); // ignored: not for KSM
        Assert.Equal(VmFlags.None, s.Mm.FindVma(At)!.Flags & VmFlags.Mergeable);
    }
}
