using PtLab.Systematic;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>
/// <c>split_folio</c> of a huge page whose pages lie in two PTE tables holds both tables' PTE
/// locks: under every design, whatever the order of the split, lockless GUP-fast pins across the
/// table boundary (a pin that lands first makes the split fail and the folio stay whole), a fault,
/// a second splitter and reclaim, no lock order deadlocks, no CPU uses a freed table and the
/// invariants hold.
/// </summary>
public class SplitTwoTablesScenarioTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(ScenarioTests.AllDesigns), MemberType = typeof(ScenarioTests))]
    public void EveryScheduleOfASplitInTwoTablesKeepsTheInvariants(string design) =>
        ScheduleExploration.AssertNoViolation(output, SystematicScenarios.SplitTwoTablesGupFastFault, design, randomSchedules: 60, pctSchedules: 60, baseSeed: 3000);
}

/// <summary>Random and PCT schedules of one scenario under one design, none of which may break an invariant.</summary>
internal static class ScheduleExploration
{
    public static void AssertNoViolation(ITestOutputHelper output, SystematicScenario s, string design, int randomSchedules, int pctSchedules, int baseSeed)
    {
        var random = SystematicTester.Explore(s, design, "random", randomSchedules, baseSeed: baseSeed);
        var pct = SystematicTester.Explore(s, design, "pct", pctSchedules, baseSeed: baseSeed + 1000);
        output.WriteLine($"{s.Name} on {design}: random {random.Schedules} in {random.Elapsed.TotalSeconds:F1} s, pct {pct.Schedules} in {pct.Elapsed.TotalSeconds:F1} s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation} ({random.Violations} of {random.Schedules})");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation} ({pct.Violations} of {pct.Schedules})");
    }
}
