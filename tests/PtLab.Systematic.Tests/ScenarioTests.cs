using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>The real protocols of every design survive every scenario of the catalogue.</summary>
public class ScenarioTests(ITestOutputHelper output)
{
    // 2,500 schedules per scenario and design, so 10,000 per scenario over the four designs.
    private const int RandomSchedules = 1500;
    private const int PctSchedules = 1000;

    // fork-reclaim's schedules are long (a fork copies a table under two PTE locks): it gets a
    // smaller share of the default run below.
    private const string ForkReclaim = "fork-reclaim";

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var s in SystematicScenarios.Names.Where(n => n != ForkReclaim))
        {
            foreach (var d in new[] { "none", "atomic", "pte-ref", "pt-reclaim" })
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

    public static TheoryData<string> AllDesigns => new() { "none", "atomic", "pte-ref", "pt-reclaim" };

    [Theory]
    [MemberData(nameof(AllDesigns))]
    public void ForkAgainstReclaimThroughTheReverseMapKeepsTheInvariantsInBothAddressSpaces(string design)
    {
        var s = SystematicScenarios.Find(ForkReclaim)!;
        var random = SystematicTester.Explore(s, design, "random", 300, baseSeed: 4000);
        var pct = SystematicTester.Explore(s, design, "pct", 150, baseSeed: 5000);
        var step = SystematicTester.Explore(s, design, "random", 30, baseSeed: 6000, everyStep: true);
        output.WriteLine($"{ForkReclaim} on {design}: random {random.SchedulesPerSecond:F0}/s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation}");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation}");
        Assert.True(step.Violations == 0, $"every-step seed {step.FirstFailingSeed}: {step.FirstViolation}");
    }
}
