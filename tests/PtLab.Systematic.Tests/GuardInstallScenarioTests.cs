using PtLab.Systematic;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>
/// <c>MADV_GUARD_INSTALL</c> against faults, GUP-fast pins, a whole-table DONTNEED and a partial
/// unmap of its range: under every design, whatever the order, no CPU uses a freed table, the
/// counters match the entries and the invariants hold (a marker keeps its table under every design,
/// so a table freed under one would show as a use after free or a lost marker's count).
/// </summary>
public class GuardInstallScenarioTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(ScenarioTests.AllDesigns), MemberType = typeof(ScenarioTests))]
    public void EveryScheduleOfAGuardInstallRaceKeepsTheInvariants(string design) =>
        ScheduleExploration.AssertNoViolation(output, SystematicScenarios.GuardInstallRace, design, randomSchedules: 300, pctSchedules: 300, baseSeed: 4000);
}
