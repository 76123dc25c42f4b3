using PtLab.Systematic;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>
/// MADV_COLLAPSE of shmem frees the PTE table it unhooks (no deposit): under every design, whatever
/// the order of the collapse, lockless GUP-fast pins of the pages, a fault and reclaim, no CPU
/// uses the freed table and the invariants hold (a pin that lands first makes the collapse fail
/// with EAGAIN and the table go back).
/// </summary>
public class ShmemCollapseScenarioTests(ITestOutputHelper output)
{
    private const int RandomSchedules = 200;
    private const int PctSchedules = 150;

    [Theory]
    [MemberData(nameof(ScenarioTests.AllDesigns), MemberType = typeof(ScenarioTests))]
    public void EveryScheduleOfAShmemCollapseKeepsTheInvariants(string design)
    {
        var s = SystematicScenarios.ShmemCollapseGupFastFault;
        var random = SystematicTester.Explore(s, design, "random", RandomSchedules, baseSeed: 1000);
        var pct = SystematicTester.Explore(s, design, "pct", PctSchedules, baseSeed: 2000);
        output.WriteLine($"{s.Name} on {design}: random {random.Schedules} in {random.Elapsed.TotalSeconds:F1} s, pct {pct.Schedules} in {pct.Elapsed.TotalSeconds:F1} s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation} ({random.Violations} of {random.Schedules})");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation} ({pct.Violations} of {pct.Schedules})");
    }
}
