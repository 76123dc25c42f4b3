using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Tests.Mm;

/// <summary>
/// <c>split_folio</c> of anonymous huge pages by MADV_FREE, MADV_COLD and MADV_PAGEOUT of part of
/// one (and MADV_PAGEOUT of a whole one, which reclaim splits without a huge swap slot): the leaf
/// becomes its deposited table (VmPTE unchanged), the folio 512 pages, zero-filled ones the shared
/// zero page (RssAnon drops), and the advice then acts on the pages in range. Each figure here was
/// measured on Linux 6.18 (CollapseKernelTests.APartialMadviseSplitsTheHugePageAsTheHostDoes).
/// </summary>
public class ThpSplitTests
{
    private const ulong At = 0x40000000; // 1 GiB: 2 MiB aligned, its own PMD table

    private static Sim HugeSim(string design = "none", bool pageData = true) =>
        new(ramBytes: 256L << 20, pageData: pageData, design: Designs.Factory(design), thp: new ThpSettings(ThpEnabled.Madvise, ThpDefrag.Madvise, true));

    private static ulong MapHuge(Sim s, ulong length = 2 * Sim.M2)
    {
        ulong a = s.Map(length, addr: At, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, length, Advice.HugePage));
        return a;
    }

    private static bool IsLeaf(Sim s, ulong va)
    {
        long pmdTable = s.Mm.PmdTableOf(va);
        return pmdTable >= 0 && Entry.IsHuge(s.Machine.Phys.Table(pmdTable)[Geometry.Index(va, 2)]);
    }

    private static SmapsEntry SmapsAt(Sim s, ulong va) => s.Mm.Smaps(s.Cpu).Single(v => v.Start <= va && va < v.End);

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void PartOfAHugePageSplitsItKeepsVmPteAndMapsItsZeroFilledPagesTheZeroPage(string design)
    {
        using var s = HugeSim(design);
        ulong a = MapHuge(s);
        Assert.True(s.Cpu.Touch(a + 100, 7).Ok); // one huge page, one page of it written
        Assert.True(IsLeaf(s, a));
        long head = Entry.Pfn(s.Machine.Phys.Table(s.Mm.PmdTableOf(a))[Geometry.Index(a, 2)]);

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.Free));
        Assert.False(IsLeaf(s, a));
        var st = s.Mm.Status();
        Assert.Equal(12, st.VmPteKb); // the deposit became the PTE table
        Assert.Equal(0, s.Mm.DepositedTables);
        Assert.Equal(4, st.RssAnonKb); // 511 zero-filled pages went to the zero page
        Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
        Assert.Equal(1, s.Mm.ThpCounters().SplitPmd);
        Assert.False(s.Machine.Phys.IsHugeFrame(head));
        Assert.True(Entry.IsSpecial(s.Mm.PeekPte(a + Sim.K4))); // the zero page
        Assert.True(s.Machine.Phys.Desc(head + 1).Has(PageFlags.Free));
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.SwapBacked)); // lazy-free
        Assert.Equal(4, SmapsAt(s, a).LazyFreeKb);
        Assert.Equal(0, SmapsAt(s, a).AnonHugePagesKb);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();

        // The lazy-free page goes under MADV_PAGEOUT; the written zero page gets a page of its own
        // (a design that frees a table of zero-page entries refaults a huge page there instead).
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.PageOut));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        if (s.Mm.Design is IZeroPageCounted)
        {
            return;
        }

        Assert.True(s.Cpu.Touch(a + Sim.K4, 3).Ok);
        Assert.True(s.Cpu.ReadByte(a + Sim.K4, out byte v).Ok);
        Assert.Equal(3, v);
        Assert.Equal(4, s.Mm.Status().RssAnonKb);
        Assert.Equal(12, s.Mm.Status().VmPteKb);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void AWrittenHugePageKeepsItsPagesAndOnlyThoseInRangeBecomeLazyFree()
    {
        using var s = HugeSim();
        ulong a = MapHuge(s);
        s.TouchAll(a, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (256 * Sim.K4), 256 * Sim.K4, Advice.Free));
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(1024, SmapsAt(s, a).LazyFreeKb);
        Assert.Equal(0, SmapsAt(s, a).AnonHugePagesKb);
        Assert.Equal(12, s.Mm.Status().VmPteKb);

        // Written again: redirtied, kept; the others are discarded.
        Assert.True(s.Cpu.Touch(a + (300 * Sim.K4), 5).Ok);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.PageOut));
        Assert.Equal((256 + 1) * 4, s.Mm.Status().RssAnonKb);
        Assert.True(s.Cpu.ReadByte(a + (300 * Sim.K4), out byte v).Ok);
        Assert.Equal(5, v);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void APinnedHugePageIsNotSplitAndKeepsItsLeaf()
    {
        using var s = HugeSim();
        ulong a = MapHuge(s);
        s.TouchAll(a, Sim.M2);
        Span<long> pinned = stackalloc long[1];
        Assert.Equal(1, s.Mm.GetUserPages(s.Cpu, a, 1, write: true, pinned));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.K4, Sim.K4, Advice.Free));
        Assert.True(IsLeaf(s, a)); // can_split_folio refused before anything was unmapped
        Assert.Equal(0, SmapsAt(s, a).LazyFreeKb);
        Assert.Equal(0, s.Mm.ThpCounters().SplitPage);
        s.Mm.PutUserPages(s.Cpu, pinned);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.K4, Sim.K4, Advice.Free));
        Assert.False(IsLeaf(s, a));
        Assert.Equal(4, SmapsAt(s, a).LazyFreeKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AHugePageMappedByPtesIsSplitWhenTheRangeCoversItInPartAndMarkedWholeOtherwise()
    {
        using var s = HugeSim();
        ulong a = MapHuge(s);
        s.TouchAll(a, 2 * Sim.M2);
        // A partial zap splits the leaves, not the folios: two huge pages mapped by PTEs.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.DontNeed));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.M2 + Sim.K4, Sim.K4, Prot.Read));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.M2 + Sim.K4, Sim.K4, Prot.Read | Prot.Write));
        Assert.False(IsLeaf(s, a) || IsLeaf(s, a + Sim.M2));
        Assert.True(s.Machine.Phys.IsHugeFrame(Entry.Pfn(s.Mm.PeekPte(a + Sim.K4))));

        // 511 of 512 pages mapped: never covered whole, so split, and each page marked.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Free));
        Assert.False(s.Machine.Phys.IsHugeFrame(Entry.Pfn(s.Mm.PeekPte(a + Sim.K4))));
        Assert.Equal(511 * 4, SmapsAt(s, a).LazyFreeKb);

        // All 512 mapped and covered: marked lazy-free as one folio, not split.
        long head = Entry.Pfn(s.Mm.PeekPte(a + Sim.M2));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Free));
        Assert.True(s.Machine.Phys.IsHugeFrame(head));
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.SwapBacked));
        Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
        Assert.Equal((511 + 512) * 4, SmapsAt(s, a).LazyFreeKb);
        Assert.Equal(1023 * 4, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void MadvColdSplitsPartOfAHugePageAndAgesAWholeOneInPlace()
    {
        using var s = HugeSim();
        ulong a = MapHuge(s);
        s.TouchAll(a, 2 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Cold));
        Assert.True(IsLeaf(s, a + Sim.M2));
        ulong leaf = s.Machine.Phys.Table(s.Mm.PmdTableOf(a))[Geometry.Index(a + Sim.M2, 2)];
        Assert.False(Entry.IsYoung(leaf));

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.Cold));
        Assert.False(IsLeaf(s, a));
        Assert.False(Entry.IsYoung(s.Mm.PeekPte(a)));
        Assert.True(Entry.IsYoung(s.Mm.PeekPte(a + Sim.K4)));
        Assert.Equal(4096, s.Mm.Status().RssAnonKb);
        Assert.Equal(16, s.Mm.Status().VmPteKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void MadvPageoutOfAWholeHugePageWithoutSwapSplitsItAndKeepsTheWrittenPages()
    {
        using var s = HugeSim();
        ulong a = MapHuge(s);
        Assert.True(s.Cpu.Touch(a, 1).Ok);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.PageOut));
        Assert.False(IsLeaf(s, a));
        Assert.Equal(4, s.Mm.Status().RssAnonKb);
        Assert.Equal(12, s.Mm.Status().VmPteKb);

        // A lazy-free one is discarded, through its split leaf: the PTE table stays.
        Assert.True(s.Cpu.Touch(a + Sim.M2, 1).Ok);
        s.TouchAll(a + Sim.M2, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Free));
        Assert.Equal(2048, SmapsAt(s, a).LazyFreeKb);
        Assert.Equal(2048, SmapsAt(s, a).AnonHugePagesKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.PageOut));
        Assert.Equal(4, s.Mm.Status().RssAnonKb);
        Assert.Equal(16, s.Mm.Status().VmPteKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void WithoutPageDataAPageNeverWrittenCountsAsZeroFilled()
    {
        using var s = HugeSim(pageData: false);
        ulong a = MapHuge(s);
        s.TouchAll(a, 16 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2 - Sim.K4, Sim.K4, Advice.Cold));
        Assert.Equal(16 * 4, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AHugePageMovedByMremapToAnOddMegabyteIsSplitInTheTableThatHoldsItsMappedPages()
    {
        // Found by the collapse fuzzer (seed 12, sequence 10): the huge page at 0x6e200000 moves
        // to 0x3f00000, not 2 MiB aligned, with its first 242 pages still mapped, all in one table.
        using var s = HugeSim();
        ulong a = s.Map(0x5e4000, addr: 0x6e000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(0x6e2a0000, 0xa000);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, 0x6e200000, 0x3e4000, Advice.Collapse));
        var r = s.Mm.Mremap(s.Cpu, a, 0x5e4000, 0x2f2000, MremapFlags.MayMove | MremapFlags.Fixed, 0x3d00000);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(968, s.Mm.Status().RssAnonKb);
        Assert.True(s.Machine.Phys.IsHugeFrame(Entry.Pfn(s.Mm.PeekPte(0x3f00000))));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, 0x3d00000, 0x2f2000, Advice.Free));
        Assert.False(s.Machine.Phys.IsHugeFrame(Entry.Pfn(s.Mm.PeekPte(0x3f00000))));
        Assert.Equal(40, s.Mm.Status().RssAnonKb); // as the host: the ten written pages
        Assert.Equal(40, SmapsAt(s, 0x3d00000).LazyFreeKb);
        s.AssertAccountingConsistent();
    }
}
