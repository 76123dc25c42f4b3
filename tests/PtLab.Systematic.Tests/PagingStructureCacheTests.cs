using PtLab.Reclaim;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>
/// The paging-structure caches have teeth: a table freed without the flush that drops them is
/// caught in every design that frees tables, both by the check that every cached upper-level
/// entry still matches the tables and by the walk that follows a stale cached pmd entry into the
/// freed table.
/// </summary>
public class PagingStructureCacheTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("none", "munmap-dontneed")]
    [InlineData("pt-reclaim", "gup-fast-free")]
    [InlineData("atomic", "gup-fast-free")]
    [InlineData("pte-ref", "gup-fast-free")]
    [InlineData("pte-ref-batched", "gup-fast-free")]
    [InlineData("occupancy", "gup-fast-free")]
    [InlineData("scanner", "gup-fast-free")]
    public void ATableFreedWithoutTheTlbFlushIsCaught(string design, string scenario)
    {
        var r = SystematicTester.Explore(SystematicScenarios.Find(scenario)!, design, "random", 20, 0, Mutation.SkipTableFlush, stopAtFirst: true);
        output.WriteLine($"skip-table-flush on {design} in {scenario}: caught after {r.Schedules} schedules: {r.FirstViolation}");
        Assert.NotNull(r.FirstFailingSeed);
        Assert.Contains("paging-structure cache", r.FirstViolation);
    }

    [Theory]
    [InlineData("pt-reclaim", "pct")]
    [InlineData("atomic", "pct")]
    [InlineData("pte-ref-batched", "pct")]
    [InlineData("occupancy", "pct")]
    public void AWalkThroughAStaleCachedPmdEntryIsAUseAfterFree(string design, string strategy)
    {
        // The schedule must let the zap free the table without the flush and the grace period pass
        // before the reading CPU's next walk, which starts at its cached pmd entry.
        var s = SystematicScenarios.Find("table-reuse-walk")!;
        for (int seed = 0; seed < 400; seed++)
        {
            var r = SystematicTester.RunOne(s, design, strategy, seed, Mutation.SkipTableFlush);
            if (r.Violation is { } v && v.Contains("followed its paging-structure cache's PDE", StringComparison.Ordinal))
            {
                output.WriteLine($"skip-table-flush on {design}: a walk into the freed table after {seed + 1} {strategy} schedules: {v}");
                Assert.Contains("UseAfterFreeException", v);
                return;
            }
        }

        Assert.Fail($"no walk through a stale cached pmd entry on {design} in 400 {strategy} schedules");
    }

    /// <summary>
    /// pte-ref frees the table only after a synchronous switch to atomic mode, a wait during which
    /// the reading CPU runs and refaults the table full again, so its walks never reach the freed
    /// table in this scenario; the step invariant sees the stale cached entry the moment the table
    /// is freed.
    /// </summary>
    [Fact]
    public void PteRefsStaleCachedEntryIsCaughtAtTheStepTheTableIsFreed()
    {
        var r = SystematicTester.Explore(SystematicScenarios.Find("table-reuse-walk")!, "pte-ref", "random", 20, 0, Mutation.SkipTableFlush, stopAtFirst: true, everyStep: true);
        output.WriteLine($"skip-table-flush on pte-ref, every step: caught after {r.Schedules} schedules: {r.FirstViolation}");
        Assert.NotNull(r.FirstFailingSeed);
        Assert.Contains("which was freed", r.FirstViolation);
    }
}
