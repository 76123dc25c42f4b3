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

    /// <summary>
    /// A huge page with pages 0, 300 and 511 written, moved by mremap to 1 MiB past a 2 MiB
    /// boundary: its leaf is split into PTEs, the folio stays whole, 256 of its pages in each of
    /// two PTE tables. Returns the new address; <paramref name="head"/> is the folio's first frame.
    /// </summary>
    private static ulong HugePageInTwoTables(Sim s, out long head)
    {
        ulong a = MapHuge(s, 8 * Sim.M2);
        Assert.True(s.Cpu.Touch(a, 1).Ok);
        Assert.True(s.Cpu.Touch(a + (300 * Sim.K4), 2).Ok);
        Assert.True(s.Cpu.Touch(a + (511 * Sim.K4), 3).Ok);
        Assert.True(IsLeaf(s, a));
        ulong to = a + (5 * Sim.M1);
        var r = s.Mm.Mremap(s.Cpu, a, Sim.M2, Sim.M2, MremapFlags.MayMove | MremapFlags.Fixed, to);
        Assert.True(r.Ok, r.ToString());
        head = Entry.Pfn(s.Mm.PeekPte(to));
        Assert.True(s.Machine.Phys.Desc(head).Has(PageFlags.Head));
        Assert.Equal(head + 511, Entry.Pfn(s.Mm.PeekPte(to + (511 * Sim.K4))));
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        return to;
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void AHugePageInTwoTablesIsSplitInBothByAPartialMadvFree(string design)
    {
        // Linux 6.18 (CollapseKernelTests.AHugePageInTwoTablesIsSplitAsTheHostDoes): RssAnon 12 kB
        // and LazyFree 4 kB after freeing a written page in either table, VmPTE unchanged.
        foreach (ulong page in new ulong[] { 0, 300 })
        {
            using var s = HugeSim(design);
            ulong to = HugePageInTwoTables(s, out long head);
            long vmPte = s.Mm.Status().VmPteKb;
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to + (page * Sim.K4), Sim.K4, Advice.Free));
            Assert.False(s.Machine.Phys.IsHugeFrame(head));
            Assert.Equal(12, s.Mm.Status().RssAnonKb); // 509 zero-filled pages went to the zero page
            Assert.Equal(vmPte, s.Mm.Status().VmPteKb);
            Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
            Assert.True(Entry.IsSpecial(s.Mm.PeekPte(to + Sim.K4)));           // first table
            Assert.True(Entry.IsSpecial(s.Mm.PeekPte(to + (400 * Sim.K4))));   // second table
            Assert.Equal(head + 511, Entry.Pfn(s.Mm.PeekPte(to + (511 * Sim.K4))));
            Assert.True(s.Machine.Phys.Desc(head + 1).Has(PageFlags.Free));
            Assert.Equal(4, SmapsAt(s, to).LazyFreeKb);
            Assert.False(s.Machine.Phys.Desc(head + (long)page).Has(PageFlags.SwapBacked));
            Assert.True(s.Machine.Phys.Desc(head + 511).Has(PageFlags.SwapBacked));
            s.AssertAccountingConsistent();
        }
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void AHugePageInTwoTablesIsSplitEvenWhenTheRangeCoversItWhole(string design)
    {
        // No one table's batch holds all 512 pages, so the kernel splits it (measured: RssAnon 12,
        // LazyFree 12, then 0 and 0 after MADV_PAGEOUT discards the lazy-free pages).
        using var s = HugeSim(design);
        ulong to = HugePageInTwoTables(s, out long head);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.M2, Advice.Free));
        Assert.False(s.Machine.Phys.IsHugeFrame(head));
        Assert.Equal(12, s.Mm.Status().RssAnonKb);
        Assert.Equal(12, SmapsAt(s, to).LazyFreeKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.M2, Advice.PageOut));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(0, SmapsAt(s, to).LazyFreeKb);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void ColdAndPageoutSplitAHugePageInTwoTables(string design)
    {
        using (var s = HugeSim(design))
        {
            ulong to = HugePageInTwoTables(s, out long head);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to + (220 * Sim.K4), 100 * Sim.K4, Advice.Cold));
            Assert.False(s.Machine.Phys.IsHugeFrame(head));
            Assert.Equal(12, s.Mm.Status().RssAnonKb);
            s.AssertAccountingConsistent();
        }

        using (var s = HugeSim(design))
        {
            ulong to = HugePageInTwoTables(s, out long head);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.M2, Advice.PageOut));
            Assert.False(s.Machine.Phys.IsHugeFrame(head));
            Assert.Equal(12, s.Mm.Status().RssAnonKb); // no swap: the written pages stay
            Assert.Equal(1, s.Mm.ThpCounters().SplitPage);
            s.AssertAccountingConsistent();
        }
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void APartMovedAgainIsFoundByTheReverseMapAndSplitToo(string design)
    {
        // Pages 64..127 of the folio move on to 1 MiB into the mapping: three tables, two VMAs.
        using var s = HugeSim(design);
        ulong to = HugePageInTwoTables(s, out long head);
        ulong part = At + Sim.M1;
        var r = s.Mm.Mremap(s.Cpu, to + (64 * Sim.K4), 64 * Sim.K4, 64 * Sim.K4, MremapFlags.MayMove | MremapFlags.Fixed, part);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(head + 64, Entry.Pfn(s.Mm.PeekPte(part)));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.K4, Advice.Free));
        Assert.False(s.Machine.Phys.IsHugeFrame(head));
        Assert.True(Entry.IsSpecial(s.Mm.PeekPte(part))); // zero-filled, in the part moved away
        Assert.Equal(12, s.Mm.Status().RssAnonKb);
        Assert.Equal(4, SmapsAt(s, to).LazyFreeKb);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void APinnedOrSharedHugePageInTwoTablesIsNotSplit(string design)
    {
        using (var s = HugeSim(design))
        {
            ulong to = HugePageInTwoTables(s, out long head);
            var pinned = new long[1];
            Assert.Equal(1, s.Mm.GetUserPages(s.Cpu, to + (10 * Sim.K4), 1, write: false, pinned));
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.K4, Advice.Free));
            Assert.True(s.Machine.Phys.IsHugeFrame(head)); // can_split_folio refuses: skipped
            Assert.Equal(2048, s.Mm.Status().RssAnonKb);
            Assert.Equal(0, SmapsAt(s, to).LazyFreeKb);
            Assert.Equal(0, s.Mm.ThpCounters().SplitPage);
            s.Mm.PutUserPages(s.Cpu, pinned);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.K4, Advice.Free));
            Assert.False(s.Machine.Phys.IsHugeFrame(head)); // once unpinned it splits
            Assert.Equal(12, s.Mm.Status().RssAnonKb);
            s.AssertAccountingConsistent();
        }

        using (var s = HugeSim(design))
        {
            ulong to = HugePageInTwoTables(s, out long head);
            var child = s.Mm.Fork(s.Cpu);
            Assert.NotNull(child);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.K4, Advice.Free));
            Assert.True(s.Machine.Phys.IsHugeFrame(head)); // folio_maybe_mapped_shared: skipped
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, to, Sim.K4, Advice.Cold));
            Assert.True(s.Machine.Phys.IsHugeFrame(head));
            child!.Exit(s.Cpu);
            s.AssertAccountingConsistent();
        }
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void APartlyMlockedMovedHugePageIsNotMlockedAndItsSplitKeepsOnlyTheLockedVmasPages(string design)
    {
        // Found by the collapse fuzzer (seed 115, sequence 41, minimized): a collapsed huge page
        // with pages 85-98 written, shrunk to 377 pages and moved to an address 0x0b1000 past a
        // 2 MiB boundary, pages 82-94 mlocked (mlock2 splits the VMA in three), then MADV_COLD
        // from before it: the first VMA's part splits it. Linux 6.18: RssAnon 1508 kB, then 68 kB
        // (the 14 written pages and the 13 pages of the VM_LOCKED VMA), EINVAL at the locked VMA
        // (FuzzCases/thp-split-keeps-zero-pages-only-in-locked-vma.case replays the host's
        // sequence, from a 1 GiB mapping; here it is 16 MiB).
        using var s = HugeSim(design);
        ulong a = s.Map(16 * Sim.M1, addr: 0x7fff000000, flags: Sim.Anon | MapFlags.Fixed);
        for (ulong p = 85; p < 99; p++)
        {
            Assert.True(s.Cpu.Touch(a + (p * Sim.K4), 1).Ok);
        }

        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, 4 * Sim.M1, Advice.Collapse));
        Assert.True(IsLeaf(s, a));
        const ulong to = 0x7fffcb1000;
        var r = s.Mm.Mremap(s.Cpu, a, 0x2f1000, 0x178800, MremapFlags.MayMove | MremapFlags.Fixed, to);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(1508, s.Mm.Status().RssAnonKb);
        long head = Entry.Pfn(s.Mm.PeekPte(to));
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, to + (82 * Sim.K4), 13 * Sim.K4));
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.Mlocked)); // not all of it in the range
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, 0x7fff7fc000, 0x804000, Advice.Cold));
        Assert.False(s.Machine.Phys.IsHugeFrame(head));
        Assert.Equal(68, s.Mm.Status().RssAnonKb);
        Assert.True(Entry.IsSpecial(s.Mm.PeekPte(to)));                      // zero-filled, not locked
        Assert.False(Entry.IsSpecial(s.Mm.PeekPte(to + (82 * Sim.K4))));    // zero-filled, VM_LOCKED
        s.AssertAccountingConsistent();
    }
}
