using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Tests.Mm;

/// <summary>
/// MADV_PAGEOUT of a whole huge page: reclaim takes it whole (a lazy-free one is discarded, a
/// swap-backed one written to one swap cluster where the device allows it) instead of splitting it;
/// and fork shares a PMD-mapped huge page whole (<c>copy_huge_pmd</c>), which the madvise walks then
/// leave alone.
/// </summary>
public class FolioReclaimTests
{
    private const ulong At = 0x40000000; // 1 GiB: 2 MiB aligned, its own PMD table

    private static Sim HugeSim(string design = "none", long swap = 0, bool blockDevice = false) =>
        new(ramBytes: 256L << 20, design: Designs.Factory(design), swapBytes: swap, swapBlockDevice: blockDevice);

    /// <summary>A huge page at <see cref="At"/> with pages 0, 300 and 511 written (1, 2, 3), mapped by a PMD or, with <paramref name="byPtes"/>, by the 512 PTEs of one table in one VMA.</summary>
    private static long HugePage(Sim s, bool byPtes)
    {
        ulong a = s.Map(Sim.M2, addr: At, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.HugePage));
        Assert.True(s.Cpu.Touch(At, 1).Ok);
        Assert.True(s.Cpu.Touch(At + (300 * Sim.K4), 2).Ok);
        Assert.True(s.Cpu.Touch(At + (511 * Sim.K4), 3).Ok);
        long head = Entry.Pfn(s.Mm.PeekPte(At));
        Assert.True(s.Machine.Phys.Desc(head).Has(PageFlags.Head));
        if (byPtes)
        {
            Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At + Sim.K4, Sim.K4, Prot.Read)); // splits the PMD
            Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At + Sim.K4, Sim.K4, Sim.Rw)); // the VMAs merge again
            Assert.Single(s.Mm.Vmas);
        }

        return head;
    }

    private static int Count(Sim s, Func<ulong, bool> what)
    {
        int n = 0;
        for (ulong va = At; va < At + Sim.M2; va += Sim.K4)
        {
            n += what(s.Mm.PeekPte(va)) ? 1 : 0;
        }

        return n;
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void AWholePteMappedLazyFreeHugePageIsDiscardedWholeNotSplit(string design)
    {
        using var s = HugeSim(design);
        long head = HugePage(s, byPtes: true);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.Free));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        Assert.Equal(0, Count(s, e => !Entry.IsNone(e))); // a split would have mapped 509 zero pages
        Assert.Equal(0, s.Mm.ThpCounters().SplitPage);
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.True(s.Machine.Phys.Desc(head).Has(PageFlags.Free));
        Assert.True(s.Cpu.ReadByte(At + (300 * Sim.K4), out byte v).Ok);
        Assert.Equal(0, v);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void APmdMappedLazyFreeHugePageHasItsPmdSplitAndIsDiscardedThroughItsPtes()
    {
        using var s = HugeSim();
        HugePage(s, byPtes: false);
        long vmPte = s.Mm.Status().VmPteKb;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.Free));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        var c = s.Mm.ThpCounters();
        Assert.Equal((1L, 0L), (c.SplitPmd, c.SplitPage));
        Assert.Equal(0, Count(s, e => !Entry.IsNone(e)));
        Assert.Equal(vmPte, s.Mm.Status().VmPteKb); // the deposit became the PTE table
        Assert.Equal(0, s.Mm.DepositedTables);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void ARedirtiedLazyFreeHugePageKeepsAllItsPagesAndAHeldOneStaysLazyFree()
    {
        using var s = HugeSim();
        long head = HugePage(s, byPtes: true);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.Free));
        Span<long> pinned = stackalloc long[1];
        Assert.Equal(1, s.Mm.GetUserPages(s.Cpu, At + (7 * Sim.K4), 1, write: false, pinned));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        Assert.Equal(512, Count(s, Entry.IsPresent));
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.SwapBacked)); // held: still lazy-free
        s.Mm.PutUserPages(s.Cpu, [pinned[0]]);

        Assert.True(s.Cpu.Touch(At + (5 * Sim.K4), 9).Ok); // written again
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        Assert.Equal(512, Count(s, Entry.IsPresent));
        Assert.True(s.Machine.Phys.Desc(head).Has(PageFlags.SwapBacked));
        Assert.Equal(0, s.Mm.ThpCounters().SplitPage);
        Assert.True(s.Cpu.ReadByte(At + (300 * Sim.K4), out byte v).Ok);
        Assert.Equal(2, v);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OnABlockDeviceASwapBackedHugePageIsWrittenOutWholeAndReadBack(bool byPtes)
    {
        using var s = HugeSim(swap: 64L << 20, blockDevice: true);
        HugePage(s, byPtes);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        Assert.Equal(512, Count(s, Entry.IsSwap)); // the zero-filled pages too
        Assert.Equal((1L, 0L), s.Machine.ThpSwapStats);
        Assert.Equal(0, s.Mm.ThpCounters().SplitPage);
        var st = s.Mm.Status();
        Assert.Equal((0L, 2048L), (st.RssAnonKb, st.VmSwapKb));
        Assert.True(s.Cpu.ReadByte(At + (300 * Sim.K4), out byte v).Ok);
        Assert.Equal(2, v);
        Assert.True(s.Cpu.ReadByte(At + (301 * Sim.K4), out v).Ok);
        Assert.Equal(0, v);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void OnASwapFileASwapBackedHugePageIsSplitAndOnlyItsWrittenPagesGoToSwap()
    {
        using var s = HugeSim(swap: 64L << 20);
        HugePage(s, byPtes: false);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PageOut));
        Assert.Equal(3, Count(s, Entry.IsSwap));
        Assert.Equal(509, Count(s, e => Entry.IsPresent(e) && Entry.Pfn(e) == s.Machine.Phys.ZeroPfn));
        Assert.Equal((0L, 1L), s.Machine.ThpSwapStats);
        Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void ForkSharesAHugePageWholeAndTheFirstWriteSplitsOnlyThatAddressSpacesPmd(string design)
    {
        using var s = HugeSim(design);
        long head = HugePage(s, byPtes: false);
        var child = s.Mm.Fork(s.Cpu)!;
        Assert.True(Entry.IsHuge(s.Machine.Phys.Table(s.Mm.PmdTableOf(At))[Geometry.Index(At, 2)]));
        Assert.True(Entry.IsHuge(s.Machine.Phys.Table(child.PmdTableOf(At))[Geometry.Index(At, 2)]));
        Assert.Equal(2, s.Machine.Phys.EntireMapCount(head));
        Assert.Equal((1, 2048L), (child.DepositedTables, child.Status().RssAnonKb));
        Assert.Equal(0, s.Mm.ThpCounters().SplitPmd);

        // The advice leaves a shared huge page alone.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.K4, Advice.PageOut));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.Free));
        Assert.Equal(0, s.Mm.ThpCounters().SplitPmd);
        Assert.True(s.Machine.Phys.Desc(head).Has(PageFlags.SwapBacked));

        // The parent's write splits its PMD and copies one page; the child still sees the old data.
        Assert.True(s.Cpu.Touch(At + (300 * Sim.K4), 7).Ok);
        Assert.Equal(1, s.Mm.ThpCounters().SplitPmd);
        Assert.NotEqual(head + 300, Entry.Pfn(s.Mm.PeekPte(At + (300 * Sim.K4))));
        Assert.Equal(head + 301, Entry.Pfn(s.Mm.PeekPte(At + (301 * Sim.K4))));
        Assert.True(Entry.IsHuge(s.Machine.Phys.Table(child.PmdTableOf(At))[Geometry.Index(At, 2)]));
        s.Cpu.SwitchMm(child);
        Assert.True(s.Cpu.ReadByte(At + (300 * Sim.K4), out byte v).Ok);
        Assert.Equal(2, v);
        s.Cpu.SwitchMm(s.Mm);

        // With the child gone the folio is the parent's alone again, and a partial advice splits it.
        child.Exit(s.Cpu);
        Assert.Equal(0, s.Machine.Phys.EntireMapCount(head));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + (10 * Sim.K4), Sim.K4, Advice.Cold));
        Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void AHugePageWhosePagesLieInElevenTablesIsStillSplit(string design)
    {
        using var s = HugeSim(design);
        long head = HugePage(s, byPtes: false);
        for (ulong k = 1; k <= 10; k++)
        {
            ulong to = At + (4 * Sim.M2) + (k * (Sim.M2 + Sim.K4));
            Assert.True(s.Mm.Mremap(s.Cpu, At + (k * Sim.K4), Sim.K4, Sim.K4, MremapFlags.MayMove | MremapFlags.Fixed, to).Ok);
        }

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.K4, Advice.Free));
        Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.Head));
        ulong moved = s.Mm.PeekPte(At + (4 * Sim.M2) + (10 * (Sim.M2 + Sim.K4)));
        Assert.Equal(s.Machine.Phys.ZeroPfn, Entry.Pfn(moved)); // zero-filled: the zero page where it went
        Assert.True(s.Cpu.ReadByte(At + (300 * Sim.K4), out byte v).Ok);
        Assert.Equal(2, v);
        s.AssertAccountingConsistent();
    }
}
