using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Tests.Mm;

/// <summary>
/// Transparent huge pages of anonymous memory, as mm/huge_memory.c maps them: a PMD leaf with a
/// deposited PTE table beside it, split into that table when part of it is unmapped, protected or
/// zapped, and freed whole with its deposit.
/// </summary>
public class ThpTests
{
    private const ulong At = 0x40000000; // 1 GiB: 2 MiB aligned, its own PMD table

    private static Sim HugeSim(ThpSettings? thp = null, string design = "none", long ram = 256L << 20, bool zeroPage = true) =>
        new(ramBytes: ram, design: Designs.Factory(design), thp: thp, zeroPage: zeroPage);

    private static ulong MapHuge(Sim s, ulong length, ulong at = At, bool advise = true)
    {
        ulong a = s.Map(length, addr: at, flags: Sim.Anon | MapFlags.Fixed);
        if (advise)
        {
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, length, Advice.HugePage));
        }

        return a;
    }

    private static ulong PmdAt(Sim s, ulong va)
    {
        long pmdTable = s.Mm.PmdTableOf(va);
        return pmdTable < 0 ? 0 : s.Machine.Phys.Table(pmdTable)[Geometry.Index(va, 2)];
    }

    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    public void AWriteFaultInAHugePageVmaMapsAPmdLeafWithADepositedTableInEveryDesign(string design)
    {
        using var s = HugeSim(design: design);
        ulong a = MapHuge(s, 4 * Sim.M2);
        Assert.True(s.Cpu.Touch(a + 12345).Ok);
        Assert.True(Entry.IsHuge(PmdAt(s, a)));
        var st = s.Mm.Status();
        Assert.Equal(new TableCounts(1, 1, 1), st.Tables); // the deposit, the PMD and the PUD table
        Assert.Equal(12, st.VmPteKb);
        Assert.Equal(2048, st.RssAnonKb);
        Assert.Equal(1, s.Mm.DepositedTables);
        Assert.Equal(1, s.Mm.ThpCounters().FaultAlloc);
        Assert.Equal(1, s.Cpu.Faults); // one user fault for 2 MiB
        for (ulong va = a; va < a + Sim.M2; va += 64 * Sim.K4)
        {
            Assert.True(s.Cpu.ReadByte(va, out _).Ok); // the rest is mapped already
        }

        Assert.Equal(1, s.Cpu.Faults);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void ModeMadviseNeedsMadvHugepageModeAlwaysDoesNotAndNeverNever()
    {
        using (var s = HugeSim())
        {
            MapHuge(s, Sim.M2, advise: false);
            s.TouchAll(At, Sim.K4);
            Assert.False(Entry.IsHuge(PmdAt(s, At)));
        }

        using (var s = HugeSim(ThpSettings.Default with { Enabled = ThpEnabled.Always }))
        {
            MapHuge(s, Sim.M2, advise: false);
            s.TouchAll(At, Sim.K4);
            Assert.True(Entry.IsHuge(PmdAt(s, At)));
        }

        using (var s = HugeSim(ThpSettings.Never))
        {
            MapHuge(s, Sim.M2);
            s.TouchAll(At, Sim.K4);
            Assert.False(Entry.IsHuge(PmdAt(s, At)));
        }
    }

    [Fact]
    public void MadvNoHugepageAndPrctlDisableWinOverModeAlways()
    {
        using var s = HugeSim(ThpSettings.Default with { Enabled = ThpEnabled.Always });
        MapHuge(s, 2 * Sim.M2, advise: false);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.NoHugePage));
        s.TouchAll(At, Sim.K4);
        Assert.False(Entry.IsHuge(PmdAt(s, At)));
        Assert.Equal(VmFlags.NoHugePage, s.Mm.Vmas[0].Flags & (VmFlags.NoHugePage | VmFlags.HugePage));
        s.Mm.ThpDisabled = true;
        s.TouchAll(At + Sim.M2, Sim.K4);
        Assert.False(Entry.IsHuge(PmdAt(s, At + Sim.M2)));
    }

    [Fact]
    public void A2MiBThatDoesNotFitTheVmaFallsBackToSmallPages()
    {
        using var s = HugeSim();
        ulong a = MapHuge(s, Sim.M2, at: At + Sim.K4); // not 2 MiB aligned: no aligned 2 MiB inside
        s.TouchAll(a, Sim.K4);
        Assert.False(Entry.IsHuge(PmdAt(s, a)));
        Assert.Equal(0, s.Mm.ThpCounters().FaultAlloc);
        Assert.Equal(4, s.Mm.Status().RssAnonKb);
    }

    [Fact]
    public void OnAHostWithoutTheZeroPageAHugeReadFaultTakesAPrivateHugePage()
    {
        using var s = HugeSim(zeroPage: false);
        MapHuge(s, Sim.M2);
        Assert.True(s.Cpu.ReadByte(At + 100, out byte v).Ok);
        Assert.Equal(0, v);
        ulong pmd = PmdAt(s, At);
        Assert.True(Entry.IsHuge(pmd));
        Assert.NotEqual(s.Machine.Phys.HugeZeroPfn, Entry.Pfn(pmd));
        Assert.True(Entry.IsWritable(pmd));
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(12, s.Mm.Status().VmPteKb);
        Assert.Equal(1, s.Mm.ThpCounters().FaultAlloc);
        Assert.Equal(0, s.Mm.ThpCounters().ZeroPageMapped);
    }

    [Fact]
    public void AReadFaultMapsTheHugeZeroPageWithADepositAndAWriteReplacesItKeepingTheDeposit()
    {
        using var s = HugeSim();
        MapHuge(s, Sim.M2);
        Assert.True(s.Cpu.ReadByte(At + 100, out byte v).Ok);
        Assert.Equal(0, v);
        ulong pmd = PmdAt(s, At);
        Assert.True(Entry.IsHuge(pmd));
        Assert.Equal(s.Machine.Phys.HugeZeroPfn, Entry.Pfn(pmd));
        Assert.False(Entry.IsWritable(pmd));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(12, s.Mm.Status().VmPteKb);

        Assert.True(s.Cpu.Touch(At + 5, 7).Ok);
        pmd = PmdAt(s, At);
        Assert.True(Entry.IsHuge(pmd) && Entry.IsWritable(pmd));
        Assert.NotEqual(s.Machine.Phys.HugeZeroPfn, Entry.Pfn(pmd));
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(12, s.Mm.Status().VmPteKb); // do_huge_zero_wp_pmd keeps the deposit
        Assert.True(s.Cpu.ReadByte(At + 5, out v).Ok);
        Assert.Equal(7, v);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void WithoutUseZeroPageAReadFaultAllocatesAHugePage()
    {
        using var s = HugeSim(ThpSettings.Default with { UseZeroPage = false });
        MapHuge(s, Sim.M2);
        Assert.True(s.Cpu.ReadByte(At, out _).Ok);
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    public void MunmapOfOnePageSplitsTheLeafIntoItsDepositedTable(string design)
    {
        using var s = HugeSim(design: design);
        MapHuge(s, Sim.M2);
        s.Cpu.Write(At + Sim.K4, [1, 2, 3]);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At + (7 * Sim.K4), Sim.K4));
        ulong pmd = PmdAt(s, At);
        Assert.False(Entry.IsHuge(pmd));
        Assert.Equal(0, s.Mm.DepositedTables);
        Assert.Equal(12, s.Mm.Status().VmPteKb); // the deposit became the PTE table
        Assert.Equal(2044, s.Mm.Status().RssAnonKb);
        Assert.Equal(1, s.Mm.ThpCounters().SplitPmd);
        var buf = new byte[3];
        Assert.True(s.Cpu.Read(At + Sim.K4, buf).Ok);
        Assert.Equal(new byte[] { 1, 2, 3 }, buf);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(At + (7 * Sim.K4)).Outcome);
        Assert.Equal(2, s.Mm.Vmas.Count);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void MprotectOfPartSplitsAndOfTheWholeRewritesTheLeaf()
    {
        using var s = HugeSim();
        MapHuge(s, 2 * Sim.M2);
        s.TouchAll(At, 2 * Sim.M2, write: true);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At + Sim.M2, Sim.M2, Prot.Read));
        ulong whole = PmdAt(s, At + Sim.M2);
        Assert.True(Entry.IsHuge(whole) && !Entry.IsWritable(whole));
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.Touch(At + Sim.M2).Outcome);

        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At, Sim.K4, Prot.None));
        Assert.False(Entry.IsHuge(PmdAt(s, At)));
        Assert.True(Entry.IsProtNone(s.Mm.PeekPte(At)));
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.ReadByte(At, out _).Outcome);
        Assert.True(s.Cpu.Touch(At + Sim.K4).Ok);

        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At + Sim.M2, Sim.M2, Sim.Rw));
        Assert.True(s.Cpu.Touch(At + Sim.M2).Ok); // exclusive: writable again at once
        Assert.Equal(4096, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AProtNoneHugeLeafStaysALeafForEveryWalker()
    {
        using var s = HugeSim();
        MapHuge(s, Sim.M2);
        s.TouchAll(At, Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At, Sim.M2, Prot.None));
        ulong pmd = PmdAt(s, At);
        Assert.True(Entry.IsHuge(pmd) && !Entry.IsHwPresent(pmd));
        var vec = new byte[512];
        Assert.Equal(Errno.None, s.Mm.Mincore(s.Cpu, At, Sim.M2, vec));
        Assert.All(vec, b => Assert.Equal(1, b));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At, Sim.M2, Sim.Rw));
        Assert.True(s.Cpu.ReadByte(At, out _).Ok);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At, Sim.M2));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    [Theory]
    [InlineData("none")]
    [InlineData("pt-reclaim")]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    public void DontneedOfAWholeLeafFreesItAndItsDepositAndOfPartSplits(string design)
    {
        using var s = HugeSim(design: design);
        MapHuge(s, 2 * Sim.M2);
        s.TouchAll(At, 2 * Sim.M2);
        long before = s.Machine.Phys.UsedFrames;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.DontNeed));
        Assert.Equal(0UL, PmdAt(s, At));
        Assert.Equal(before - 512 - 1, s.Machine.Phys.UsedFrames);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M2, Sim.K4, Advice.DontNeed));
        Assert.Equal(1, s.Mm.Status().Tables.Pte); // the split's table, 511 entries left in it
        Assert.Equal(2044, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void ExitFreesEveryHugePageAndDeposit()
    {
        var s = HugeSim();
        MapHuge(s, 8 * Sim.M2);
        s.TouchAll(At, 8 * Sim.M2, write: false);
        s.TouchAll(At, 4 * Sim.M2, write: true);
        s.Dispose();
        Assert.Equal(s.Machine.Phys.ReservedFrames, s.Machine.Phys.UsedFrames);
    }

    [Fact]
    public void SmapsAndPagemapSeeTheHugePage()
    {
        using var s = HugeSim();
        MapHuge(s, 2 * Sim.M2);
        s.TouchAll(At, Sim.K4, write: true);
        s.TouchAll(At + Sim.M2, Sim.K4, write: false);
        var smaps = Assert.Single(s.Mm.Smaps(s.Cpu));
        Assert.Equal(2048, smaps.AnonHugePagesKb);
        Assert.Equal(2048, smaps.RssKb); // the huge zero page is not RSS
        var pm = s.Mm.Pagemap(s.Cpu, At, At + (2 * Sim.K4));
        Assert.Equal(Entry.Pfn(PmdAt(s, At)) + 1, (long)(pm[1] & ((1UL << 55) - 1)));
        Assert.NotEqual(0UL, pm[1] & (1UL << 56)); // PM_MMAP_EXCLUSIVE: the folio's entire mapcount is one
    }

    [Fact]
    public void GupFastAndSlowPinAHugePageThroughItsHeadAndItOutlivesTheUnmap()
    {
        using var s = HugeSim();
        MapHuge(s, Sim.M2);
        s.TouchAll(At, Sim.K4);
        long head = Entry.Pfn(PmdAt(s, At));
        Span<long> pages = stackalloc long[2];
        Assert.Equal(2, s.Mm.GetUserPagesFast(s.Cpu, At + (3 * Sim.K4), 2, write: true, pages));
        Assert.Equal(head + 3, pages[0]);
        Assert.Equal(1, s.Mm.GetUserPages(s.Cpu, At + (9 * Sim.K4), 1, write: false, pages[..1]));
        Assert.Equal(1 + 2 + 1, s.Machine.Phys.Desc(head).RefCount);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At, Sim.M2));
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.Free));
        s.Mm.PutUserPages(s.Cpu, [head + 3, head + 4, head + 9]);
        Assert.True(s.Machine.Phys.Desc(head).Has(PageFlags.Free));
    }

    [Fact]
    public void MadvFreeOfAWholeHugePageMarksItLazyFreeAndReclaimDiscardsItWithItsDeposit()
    {
        using var s = HugeSim(ram: 64L << 20);
        ulong a = MapHuge(s, 2 * Sim.M2);
        s.TouchAll(a, 2 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Free));
        Assert.Equal(1, s.Machine.Phys.LruFilePages); // the head of the lazy-free huge page
        long discarded = s.Machine.Vmscan.Reclaim(0, 1024);
        Assert.True(discarded >= 512, $"reclaim freed {discarded} frames");
        Assert.Equal(0UL, PmdAt(s, a));
        Assert.True(Entry.IsHuge(PmdAt(s, a + Sim.M2))); // swap-backed: kept
        Assert.Equal(2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(1, s.Mm.DepositedTables);
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(0, v);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AHugePageWrittenAfterMadvFreeIsRedirtiedNotDiscarded()
    {
        using var s = HugeSim(ram: 64L << 20);
        ulong a = MapHuge(s, Sim.M2);
        s.TouchAll(a, Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Free));
        Assert.True(s.Cpu.Touch(a + 100, 9).Ok);
        s.Machine.Vmscan.Reclaim(0, 1024); // the young bit buys one pass
        s.Machine.Vmscan.Reclaim(0, 1024);
        Assert.True(Entry.IsHuge(PmdAt(s, a)));
        Assert.True(s.Cpu.ReadByte(a + 100, out byte v).Ok);
        Assert.Equal(9, v);
        Assert.True(s.Machine.ReclaimStats.Redirtied >= 1);
    }

    /// <summary>
    /// A droppable VMA's huge page is born lazy-free (never swap-backed), and reclaim drops it whole
    /// although it was written: unlike a page MADV_FREE made lazy-free, it is not redirtied.
    /// </summary>
    [Fact]
    public void AWrittenDroppableHugePageIsDroppedWholeByReclaim()
    {
        using var s = HugeSim(ram: 64L << 20);
        var r = s.Mm.Mmap(s.Cpu, At, Sim.M2, Sim.Rw, MapFlags.Droppable | MapFlags.Anonymous | MapFlags.Fixed);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.HugePage));
        Assert.True(s.Cpu.Touch(At + 100, 9).Ok);
        Assert.True(Entry.IsHuge(PmdAt(s, At)));
        long head = Entry.Pfn(PmdAt(s, At));
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.SwapBacked));
        s.Machine.Vmscan.Reclaim(0, 1024); // the young bit buys one pass
        s.Machine.Vmscan.Reclaim(0, 1024);
        Assert.Equal(0UL, PmdAt(s, At));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(0, s.Machine.ReclaimStats.Redirtied);
        Assert.True(s.Cpu.ReadByte(At + 100, out byte v).Ok);
        Assert.Equal(0, v);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void HugePagesFallBackToSmallOnesWhenNoAlignedBlockIsFreeAndSmallPagesCanUseFreedBlocks()
    {
        using var s = HugeSim(ram: 8L << 20);
        s.Map(8 * Sim.M2, addr: At, flags: Sim.Anon | MapFlags.Fixed | MapFlags.NoReserve);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 8 * Sim.M2, Advice.HugePage));
        int huge = 0;
        for (ulong off = 0; off < 8 * Sim.M2; off += Sim.M2)
        {
            if (!s.Cpu.Touch(At + off).Ok)
            {
                break;
            }

            huge += Entry.IsHuge(PmdAt(s, At + off)) ? 1 : 0;
        }

        Assert.True(huge is > 0 and < 8, $"{huge} huge pages in 8 MiB of RAM");
        Assert.True(s.Mm.ThpCounters().FaultFallback > 0);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At, 8 * Sim.M2));
        ulong small = s.Map(6 * Sim.M1, addr: At, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(small, 6 * Sim.M1); // needs frames from the freed huge blocks
        s.AssertAccountingConsistent();
    }
}
