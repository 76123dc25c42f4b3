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
    [Theory]
    [MemberData(nameof(ScenarioTests.AllDesigns), MemberType = typeof(ScenarioTests))]
    public void EveryScheduleOfAShmemCollapseKeepsTheInvariants(string design) =>
        ScheduleExploration.AssertNoViolation(output, SystematicScenarios.ShmemCollapseGupFastFault, design, randomSchedules: 200, pctSchedules: 150, baseSeed: 1000);
}
