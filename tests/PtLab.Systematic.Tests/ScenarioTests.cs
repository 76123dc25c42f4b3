using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>The real protocols of every design survive every scenario of the catalogue.</summary>
public class ScenarioTests(ITestOutputHelper output)
{
    // 2,500 schedules per scenario and design.
    private const int RandomSchedules = 1500;
    private const int PctSchedules = 1000;

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var s in SystematicScenarios.Names)
        {
            foreach (var d in PtLab.Reclaim.Designs.Names)
            {
                data.Add(s, d);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryScheduleOfTheScenarioKeepsTheInvariants(string scenario, string design)
    {
        var s = SystematicScenarios.Find(scenario)!;
        var random = SystematicTester.Explore(s, design, "random", RandomSchedules, baseSeed: 1000);
        var pct = SystematicTester.Explore(s, design, "pct", PctSchedules, baseSeed: 2000);
        output.WriteLine($"{scenario} on {design}: random {random.SchedulesPerSecond:F0}/s, pct {pct.SchedulesPerSecond:F0}/s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation}");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheStepInvariantsHoldAtEverySchedulingPoint(string scenario, string design)
    {
        var r = SystematicTester.Explore(SystematicScenarios.Find(scenario)!, design, "random", 150, baseSeed: 3000, everyStep: true);
        output.WriteLine($"{scenario} on {design}, invariants at every step: {r.SchedulesPerSecond:F0} schedules/s");
        Assert.True(r.Violations == 0, $"seed {r.FirstFailingSeed}: {r.FirstViolation}");
    }
}
