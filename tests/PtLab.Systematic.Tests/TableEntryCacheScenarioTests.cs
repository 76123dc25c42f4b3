using PtLab.Systematic;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>
/// The per-CPU table-entry cache on the fault path, explored with the table store's steps as
/// scheduling points: whatever the order of a cache fill and a give-back of the group it finds,
/// the fault path never reads or writes through a group another table took.
/// </summary>
public class TableEntryCacheScenarioTests(ITestOutputHelper output)
{
    private const int RandomSchedules = 300;
    private const int PctSchedules = 300;

    [Theory]
    [InlineData("none")]
    [InlineData("pte-ref")]
    public void EveryScheduleOfAFillAgainstAGiveBackKeepsTheInvariants(string design)
    {
        var s = SystematicScenarios.TableCacheGiveBack;
        var random = SystematicTester.Explore(s, design, "random", RandomSchedules, baseSeed: 1000);
        var pct = SystematicTester.Explore(s, design, "pct", PctSchedules, baseSeed: 2000);
        output.WriteLine($"{s.Name} on {design}: random {random.Schedules} in {random.Elapsed.TotalSeconds:F1} s, pct {pct.Schedules} in {pct.Elapsed.TotalSeconds:F1} s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation} ({random.Violations} of {random.Schedules})");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation} ({pct.Violations} of {pct.Schedules})");
    }
}
