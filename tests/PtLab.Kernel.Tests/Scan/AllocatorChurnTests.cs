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
    public static TheoryData<string, string> Allocators => new()
    {
        { "glibc", "" },
        { "jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" },
        { "tcmalloc", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4" },
    };

    [PagemapScanTheory]
    [MemberData(nameof(Allocators))]
    public void AChurningAllocatorScannedFrozenAddsUp(string allocator, string library)
    {
        if (library.Length > 0 && !File.Exists(library))
        {
            output.WriteLine($"SKIP {allocator}: {library} is missing (apt-get install -y libjemalloc2 libtcmalloc-minimal4)");
            return;
        }

        var env = library.Length > 0 ? new Dictionary<string, string> { ["LD_PRELOAD"] = library } : [];
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
