using PtLab.Kernel.Scan;
using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests.Scan;

/// <summary>
/// Child processes build layouts whose page tables are known (see Programs/layouts.c); the scan of
/// each must equal the truth exactly, inside the layout's region, and the whole process's upper
/// tables must agree with VmPTE.
/// </summary>
public sealed class ScanTruthTests(ITestOutputHelper output)
{
    /// <summary>The truth of a layout's region.</summary>
    public sealed record Truth(long Tables, long Empty, long ZeroPage, long Markers, long Deposits, long Populated);

    private static readonly bool s_ptReclaim = KernelInfo.Probe().MatchingDesign == "pt-reclaim";

    /// <summary>
    /// What each layout leaves, by KERNEL-FACTS.md: a DONTNEED frees a table only when it covers the
    /// whole 2 MiB and only under CONFIG_PT_RECLAIM; a THP maps 2 MiB with a deposited table; a read
    /// fault maps the zero page (a private page on a host that forbids it); a guard marker is
    /// populated but maps nothing.
    /// </summary>
    public static Truth Expected(string layout) => layout switch
    {
        "halves" => new(32, 32, 0, 0, 0, 0),
        "whole" => s_ptReclaim ? new(0, 0, 0, 0, 0, 0) : new(32, 32, 0, 0, 0, 0),
        "guard" => new(4, 0, 0, 4, 0, 4),
        "thp" => new(0, 0, 0, 0, 32, 0),
        "zero" => new(32, 0, MappingDifferential.HostZeroPage ? 32 : 0, 0, 0, 32 * 512),
        "tmpfs" => new(16, 8, 0, 0, 0, 8 * 512),
        "sparse" => new(8192, 4096, 0, 0, 0, 4096),
        "split" => new(2, 0, 0, 0, 0, 1024),
        _ => throw new ArgumentException(layout),
    };

    public static TheoryData<string> Layouts => ["halves", "whole", "thp", "zero", "tmpfs", "sparse", "split"];

    private Truth ScanRegion(string layout, out ProcessScan scan)
    {
        using var child = LayoutChild.Run(layout);
        scan = ProcessScanner.Scan(child.Pid, new ScanOptions { Vmas = true });
        var region = child.RegionVmas(scan).ToList();
        var got = new Truth(
            region.Sum(v => v.PteTables) - (region.Sum(v => v.SharedTables) / 2),
            region.Sum(v => v.EmptyPteTables ?? 0),
            region.Sum(v => v.ZeroPageTables ?? 0),
            region.Sum(v => v.MarkerOnlyTables),
            region.Sum(v => v.ThpDeposits),
            region.Sum(v => v.PopulatedEntries));
        output.WriteLine($"{layout,-7} expected {Expected(layout)}");
        output.WriteLine($"{layout,-7} scanned  {got}  (process: VmPTE {scan.VmPteKb} kB, PTE {scan.PteTables}, deposits {scan.ThpDeposits}, upper {scan.UpperTables} in [{scan.UpperTablesExpected.Low}, {scan.UpperTablesExpected.High}], {scan.ScanSeconds * 1000:0.0} ms)");
        return got;
    }

    [PagemapScanTheory]
    [MemberData(nameof(Layouts))]
    public void TheScanOfEachLayoutEqualsItsTruthAndTheUpperTablesAgreeWithVmPte(string layout)
    {
        var got = ScanRegion(layout, out var scan);
        Assert.Equal(Expected(layout), got);
        Assert.True(scan.Exact);
        Assert.Equal(ScanMethods.PagemapScan, scan.Method);
        Assert.Empty(scan.Inconsistencies);
        Assert.Equal(scan.VmPteKb / 4, scan.PteTables + scan.ThpDeposits + scan.UpperTables);
        Assert.InRange(scan.UpperTables, scan.UpperTablesExpected.Low, scan.UpperTablesExpected.High);
    }

    [PagemapScanFact(MinKernel = "6.13")]
    public void GuardMarkersKeepTheirTablesNotEmptyAndNoDesignFreesThem()
    {
        var got = ScanRegion("guard", out var scan);
        Assert.Equal(Expected("guard"), got);
        Assert.Empty(scan.Inconsistencies);
    }

    [PagemapScanFact]
    public void ATableSharedByTwoVmasCountsOnceAndIsMarkedInBoth()
    {
        using var child = LayoutChild.Run("split");
        var scan = ProcessScanner.Scan(child.Pid, new ScanOptions { Vmas = true });
        var region = child.RegionVmas(scan).ToList();
        Assert.Equal(3, region.Count);
        Assert.Equal([1L, 1L, 1L], region.Select(v => v.PteTables));
        Assert.Equal([1L, 1L, 0L], region.Select(v => v.SharedTables));
        Assert.Equal(["rw-p", "r--p", "rw-p"], region.Select(v => v.Perms));
    }

    [PagemapScanFact]
    public void PteRefAndAtomicWouldFreeEveryEmptyTableAndPtReclaimNoneOfThem()
    {
        using var child = LayoutChild.Run("halves");
        var scan = ProcessScanner.Scan(child.Pid);
        var frees = scan.FreeNow.ToDictionary(f => f.Design);
        Assert.Equal(scan.EmptyPteTables, frees["pte-ref"].Tables);
        Assert.Equal(scan.EmptyPteTables, frees["atomic"].Tables);
        Assert.Equal(scan.EmptyPteTables * 4096, frees["atomic"].Bytes);
        Assert.Equal(0, frees["pt-reclaim"].Tables);
        Assert.Equal(0, frees["none"].Tables);
        Assert.True(scan.EmptyPteTables >= 32);
    }

    [PagemapScanFact]
    public void ZeroPageAndThpDepositTablesAreNotFreedByTheRefcountDesigns()
    {
        using var zero = LayoutChild.Run("zero");
        using var thp = LayoutChild.Run("thp");
        foreach (var scan in new[] { ProcessScanner.Scan(zero.Pid), ProcessScanner.Scan(thp.Pid) })
        {
            Assert.Equal(scan.EmptyPteTables, scan.FreeNow.Single(f => f.Design == "pte-ref").Tables);
        }
    }

    [PagemapScanFact]
    public void TheEstimateBracketsTheExactCountAndSaysItIsAnEstimate()
    {
        using var child = LayoutChild.Run("halves");
        var exact = ProcessScanner.Scan(child.Pid);
        var est = ProcessScanner.Scan(child.Pid, new ScanOptions { Method = ScanMethods.PagemapEstimate, Vmas = true });
        output.WriteLine($"exact empty {exact.EmptyPteTables}, estimate [{est.EmptyPteTablesBounds.Low}, {est.EmptyPteTablesBounds.High}]; PTE tables exact {exact.PteTables}, estimate [{est.PteTablesBounds.Low}, {est.PteTablesBounds.High}]");
        Assert.False(est.Exact);
        Assert.Equal(ScanMethods.PagemapEstimate, est.Method);
        Assert.InRange(exact.EmptyPteTables, est.EmptyPteTablesBounds.Low, est.EmptyPteTablesBounds.High);
        Assert.InRange(exact.PteTables, est.PteTablesBounds.Low, est.PteTablesBounds.High);
        Assert.Null(est.ThpDeposits);
        Assert.Null(child.RegionVmas(est).First().EmptyPteTables);
    }

    [PagemapScanFact]
    public void TheModelAgreesWithTheScanOfTheSameLayouts()
    {
        // halves: 64 MiB, each 2 MiB written then DONTNEEDed in two halves; zeropage: 64 MiB read.
        string design = KernelInfo.Probe().MatchingDesign;
        var options = new MachineOptions { RamBytes = 1L << 30, PageData = false, ZeroPage = MappingDifferential.HostZeroPage, Design = PtLab.Reclaim.Designs.Factory(design)! };
        long modelHalves, modelZero;
        using (var model = new ModelTarget(options))
        {
            var r = new HalvesScenario(callsPer2M: 2, size: 64UL << 20).Run(model);
            modelHalves = r.Checkpoints.Single(c => c.Label == HalvesScenario.AfterLoop).Status.Tables.Pte;
        }

        using (var model = new ModelTarget(options))
        {
            var r = new ZeroPageScenario(size: 64UL << 20).Run(model);
            modelZero = r.Checkpoints.Single(c => c.Label == ZeroPageScenario.AfterRead).Status.Tables.Pte;
        }

        var halves = ScanRegion("halves", out _);
        var zero = ScanRegion("zero", out _);
        output.WriteLine($"model ({design}): halves {modelHalves} PTE tables, zeropage {modelZero}; scan: halves {halves.Tables} ({halves.Empty} empty), zeropage {zero.Tables} ({zero.ZeroPage} zero-page only)");
        Assert.Equal(modelHalves, halves.Tables);
        Assert.Equal(modelHalves, halves.Empty);
        Assert.Equal(modelZero, zero.Tables);
        Assert.Equal(MappingDifferential.HostZeroPage ? modelZero : 0, zero.ZeroPage);
    }
}
