using PtLab.Kernel.Scan;
using PtLab.Reclaim;

namespace PtLab.Kernel.Tests.Scan;

/// <summary>The census over synthetic scan results: no kernel needed.</summary>
public sealed class TableCensusTests
{
    private const ulong M2 = 2UL << 20;

    private static MapsEntry Vma(ulong start, ulong end, string name = "") => new(start, end, "rw-p", 0, "00:00", name.StartsWith('/') ? 7UL : 0, name);

    [Fact]
    public void WindowsCoverEveryVmaOnceAndNeverCrossAnAlignedWindow()
    {
        ulong w = TableCensus.WindowBytes;
        var vmas = new[] { Vma(0x1000, 0x3000), Vma(0x5000, 0x9000), Vma(w - M2, (3 * w) + M2), Vma((5 * w) + 0x1000, (5 * w) + 0x2000) };
        var windows = TableCensus.Windows(vmas).ToList();
        // One call per aligned window whatever the VMAs inside; a VMA running on is cut at each window end.
        Assert.Equal([(0x1000UL, w), (w, 2 * w), (2 * w, 3 * w), (3 * w, (3 * w) + M2), ((5 * w) + 0x1000, (5 * w) + 0x2000)], windows);
    }

    [Fact]
    public void ATableSharedByTwoVmasIsClassifiedOnceAndCreditedToBoth()
    {
        // [0, 1M) and [1M, 4M): slot 0 is shared; slot 1 holds one present page; slot 0 holds nothing (empty).
        ulong b = 512 * M2;
        var vmas = new[] { Vma(b, b + (M2 / 2)), Vma(b + (M2 / 2), b + (2 * M2)) };
        var c = new TableCensus(vmas, FreeNowRules.All);
        c.BeginWindow(b, b + (2 * M2));
        c.AddTableRange(b, b + (2 * M2));
        c.AddPopulated(new PageRegion(b + M2, b + M2 + 4096, PagemapScanIoctl.PageIsPresent));
        c.EndWindow();
        Assert.Equal((2L, 1L, 1L, 1L), (c.PteTables, c.EmptyPteTables, c.SharedTables, c.PopulatedEntries));
        Assert.Equal((1L, 1L, 1L), (c.PerVma[0].PteTables, c.PerVma[0].EmptyPteTables, c.PerVma[0].SharedTables));
        Assert.Equal((2L, 1L, 1L, 1L), (c.PerVma[1].PteTables, c.PerVma[1].EmptyPteTables, c.PerVma[1].SharedTables, c.PerVma[1].PopulatedEntries));
        Assert.Equal(1L, c.Frees[FreeNowRules.All.ToList().FindIndex(r => r.Design == "pte-ref")]);
        Assert.Equal((1L, 1L), (c.PmdTablesNeeded, c.PudTablesNeeded));
    }

    [Fact]
    public void AnonymousLeavesAreDepositsAndFileLeavesAreNot()
    {
        ulong b = 512 * M2;
        var vmas = new[] { Vma(b, b + M2), Vma(b + M2, b + (2 * M2), "/dev/shm/x") };
        var c = new TableCensus(vmas, FreeNowRules.All);
        c.BeginWindow(b, b + (2 * M2));
        c.AddTableRange(b, b + (2 * M2));
        c.AddPopulated(new PageRegion(b, b + M2, PagemapScanIoctl.PageIsPresent | PagemapScanIoctl.PageIsHuge));
        c.AddPopulated(new PageRegion(b + M2, b + (2 * M2), PagemapScanIoctl.PageIsPresent | PagemapScanIoctl.PageIsHuge));
        Assert.Equal([b, b + M2], c.LeafSlots());
        c.AddLeafFile(new PageRegion(b, b + M2, PagemapScanIoctl.PageIsHuge));
        c.AddLeafFile(new PageRegion(b + M2, b + (2 * M2), PagemapScanIoctl.PageIsHuge | PagemapScanIoctl.PageIsFile));
        c.EndWindow();
        Assert.Equal((0L, 1L, 1L, 0L), (c.PteTables, c.ThpDeposits, c.OtherLeaves, c.EmptyPteTables));
    }
}
