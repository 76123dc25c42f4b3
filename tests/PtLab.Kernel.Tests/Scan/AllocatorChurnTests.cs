using PtLab.Kernel.Scan;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests.Scan;

/// <summary>
/// Real allocators under churn, scanned frozen: the counts must add up (upper tables within their
/// bounds, VmPTE unchanged during the scan) whatever the allocator did. jemalloc and tcmalloc come
/// from Debian's libjemalloc2 and libtcmalloc-minimal4; without them those cases skip.
/// </summary>
public sealed class AllocatorChurnTests(ITestOutputHelper output)
{
    private const string Jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    private const string Tcmalloc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";

    [PagemapScanFact]
    public void GlibcUnderChurnScannedFrozenAddsUp() => ChurnAddsUp("glibc", []);

    [PagemapScanFact(NeedsFile = Jemalloc)]
    public void JemallocUnderChurnScannedFrozenAddsUp() => ChurnAddsUp("jemalloc", new() { ["LD_PRELOAD"] = Jemalloc });

    [PagemapScanFact(NeedsFile = Tcmalloc)]
    public void TcmallocUnderChurnScannedFrozenAddsUp() => ChurnAddsUp("tcmalloc", new() { ["LD_PRELOAD"] = Tcmalloc });

    private void ChurnAddsUp(string allocator, Dictionary<string, string> env)
    {
        using var child = LayoutChild.Churn(env);
        Thread.Sleep(300);
        for (int i = 0; i < 3; i++)
        {
            ProcessScan scan;
            using (Freezer.Freeze(child.Pid, TimeSpan.FromSeconds(5)))
            {
                scan = ProcessScanner.Scan(child.Pid, new ScanOptions { Frozen = true });
            }

            output.WriteLine($"{allocator}: VmPTE {scan.VmPteKb} kB, PTE {scan.PteTables}, empty {scan.EmptyPteTables}, zero-page {scan.ZeroPageTables}, deposits {scan.ThpDeposits}, upper {scan.UpperTables} in [{scan.UpperTablesExpected.Low}, {scan.UpperTablesExpected.High}]");
            Assert.Empty(scan.Inconsistencies);
            Assert.Equal(scan.VmPteKb / 4, scan.PteTables + scan.ThpDeposits + scan.UpperTables);
            Assert.True(scan.PteTables > 0);
            Thread.Sleep(100);
        }
    }
}
