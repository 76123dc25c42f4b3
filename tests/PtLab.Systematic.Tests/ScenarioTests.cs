using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>The real protocols of every design survive every scenario of the catalogue.</summary>
public class ScenarioTests(ITestOutputHelper output)
{
    // 2,500 schedules per scenario and design for the kernel's designs on their scenarios. The
    // designs no kernel ships, and the scenarios written for them, get 1,000 per pair here to keep
    // the default run's time; `ptlab check ... --schedules N` explores further.
    private const int RandomSchedules = 1500;
    private const int PctSchedules = 1000;
    private const int BeyondRandomSchedules = 600;
    private const int BeyondPctSchedules = 400;

    private static readonly string[] s_beyondDesigns = ["occupancy", "pte-ref-batched"];
    private static readonly string[] s_beyondScenarios = ["occupancy-partial-zap", "table-reuse-walk", SystematicScenarios.PmdFreeGupFast];

    private static bool Beyond(string scenario, string design) => s_beyondDesigns.Contains(design) || s_beyondScenarios.Contains(scenario);

    // The scanner design (with its thread on a CPU of its own in every scenario) and the scenarios
    // written for the races of the designs no kernel ships get a smaller share again, to keep the
    // default run's time; `ptlab check ... --schedules N` explores further.
    private const int ScannerRandomSchedules = 200;
    private const int ScannerPctSchedules = 100;
    private const int ScannerStepSchedules = 20;
    private static readonly string[] s_scannerTierScenarios = ["scanner-fault-zap", "occupancy-count-set-clear", "batched-switch-tryget"];

    // The MADV_COLLAPSE race has long schedules (three CPUs, two GUP-fast rounds, a collapse that
    // reads 512 entries twice, reclaim): the smallest share of the default run.
    private const int CollapseRandomSchedules = 100;
    private const int CollapsePctSchedules = 60;
    private const int CollapseStepSchedules = 10;

    private static bool ScannerTier(string scenario, string design) => design == PtLab.Reclaim.Designs.Scanner || s_scannerTierScenarios.Contains(scenario);

    // fork-reclaim's schedules are long (a fork copies a table under two PTE locks): it gets a
    // smaller share of the default run below.
    private const string ForkReclaim = "fork-reclaim";

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var s in SystematicScenarios.Names.Where(n => n != ForkReclaim))
        {
            // A scenario written for the PMD-table free runs (in the default run) on the designs that do it.
            bool freePmd = SystematicScenarios.Find(s)!.FreePmd;
            foreach (var d in PtLab.Reclaim.Designs.Names.Where(d => !freePmd || PtLab.Reclaim.Designs.TakesFreePmd(d)))
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
        bool beyond = Beyond(scenario, design), scanner = ScannerTier(scenario, design);
        bool collapse = scenario == SystematicScenarios.CollapseGupFastFault;
        var random = SystematicTester.Explore(s, design, "random", collapse ? CollapseRandomSchedules : scanner ? ScannerRandomSchedules : beyond ? BeyondRandomSchedules : RandomSchedules, baseSeed: 1000);
        var pct = SystematicTester.Explore(s, design, "pct", collapse ? CollapsePctSchedules : scanner ? ScannerPctSchedules : beyond ? BeyondPctSchedules : PctSchedules, baseSeed: 2000);
        output.WriteLine($"{scenario} on {design}: random {random.SchedulesPerSecond:F0}/s, pct {pct.SchedulesPerSecond:F0}/s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation}");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheStepInvariantsHoldAtEverySchedulingPoint(string scenario, string design)
    {
        // 120 schedules a pair: the scan at every point is the largest share of the default run.
        int schedules = scenario == SystematicScenarios.CollapseGupFastFault ? CollapseStepSchedules : ScannerTier(scenario, design) ? ScannerStepSchedules : 120;
        var r = SystematicTester.Explore(SystematicScenarios.Find(scenario)!, design, "random", schedules, baseSeed: 3000, everyStep: true);
        output.WriteLine($"{scenario} on {design}, invariants at every step: {r.SchedulesPerSecond:F0} schedules/s");
        Assert.True(r.Violations == 0, $"seed {r.FirstFailingSeed}: {r.FirstViolation}");
    }

    public static TheoryData<string> AllDesigns()
    {
        var data = new TheoryData<string>();
        foreach (var d in PtLab.Reclaim.Designs.Names)
        {
            data.Add(d);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(AllDesigns))]
    public void ForkAgainstReclaimThroughTheReverseMapKeepsTheInvariantsInBothAddressSpaces(string design)
    {
        var s = SystematicScenarios.Find(ForkReclaim)!;
        bool scanner = ScannerTier(ForkReclaim, design);
        var random = SystematicTester.Explore(s, design, "random", scanner ? 100 : 300, baseSeed: 4000);
        var pct = SystematicTester.Explore(s, design, "pct", scanner ? 50 : 150, baseSeed: 5000);
        var step = SystematicTester.Explore(s, design, "random", scanner ? 10 : 30, baseSeed: 6000, everyStep: true);
        output.WriteLine($"{ForkReclaim} on {design}: random {random.SchedulesPerSecond:F0}/s, {random.TotalSteps / random.Schedules} steps each");
        Assert.True(random.Violations == 0, $"random seed {random.FirstFailingSeed}: {random.FirstViolation}");
        Assert.True(pct.Violations == 0, $"pct seed {pct.FirstFailingSeed}: {pct.FirstViolation}");
        Assert.True(step.Violations == 0, $"every-step seed {step.FirstFailingSeed}: {step.FirstViolation}");
    }
}
