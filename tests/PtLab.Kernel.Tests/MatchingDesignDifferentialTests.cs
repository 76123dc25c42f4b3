using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.Differential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// Every scenario, at 256-512 MiB, on the host kernel and on the model design that matches it
/// (<see cref="KernelInfo.MatchingDesign"/>: pt-reclaim on Linux 6.14+ with CONFIG_PT_RECLAIM=y),
/// both placed at the same address in an empty 512 GiB slot: the VmPTE deltas must be equal at every
/// checkpoint, including those where DONTNEED frees tables.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class MatchingDesignDifferentialTests(ITestOutputHelper output)
{
    private static readonly string s_design = KernelInfo.Probe().MatchingDesign;

    public static TheoryData<int> Calls => new() { 1, 2, 512 };

    [LinuxTheory]
    [MemberData(nameof(Calls))]
    public void HalvesFreesTheSameTablesOnTheKernelAndTheMatchingDesignAtEveryPhase(int calls)
    {
        string[] labels = [HalvesScenario.AfterLoop, HalvesScenario.AfterFullDontNeed, HalvesScenario.AfterZeroPageRead, HalvesScenario.AfterZeroPageDontNeed];
        AssertSame(Run(at => new HalvesScenario(calls, 256 * MiB, at), labels, output, design: s_design), labels);
    }

    [LinuxFact]
    public void TheCoverLetterLoopWithDontNeedLeavesTheSameTablesOnTheKernelAndTheMatchingDesign()
    {
        var r = Run(at => new CoverLetterScenario(512 * MiB, 2 * MiB, Advice.DontNeed, at), [CoverLetterScenario.AfterLoop], output, design: s_design);
        AssertSame(r, [CoverLetterScenario.AfterLoop]);
        if (s_design == "pt-reclaim")
        {
            Assert.Equal(8, PteDelta(r.Kernel, CoverLetterScenario.AfterLoop)); // one PMD and one PUD table
        }
    }

    [LinuxFact]
    public void ZeroPageTablesGoTheSameWayOnTheKernelAndTheMatchingDesign()
    {
        string[] labels = [ZeroPageScenario.AfterRead, ZeroPageScenario.AfterDontNeed];
        AssertSame(Run(at => new ZeroPageScenario(256 * MiB, at), labels, output, design: s_design), labels);
    }

    [LinuxFact]
    public void MunmapHolesFreeTheSameTablesOnTheKernelAndTheMatchingDesign()
    {
        const ulong size = 256 * MiB;
        string[] labels = [MunmapHolesScenario.AfterTouch, .. MunmapHolesScenario.Plan(0, size).Select(s => s.Label)];
        AssertSame(Run(at => new MunmapHolesScenario(size, at), labels, output, design: s_design), labels);
    }

    private static void AssertSame((ScenarioResult Model, ScenarioResult Kernel) r, IReadOnlyList<string> labels)
    {
        foreach (var label in labels)
        {
            Assert.True(PteDelta(r.Model, label) == PteDelta(r.Kernel, label),
                $"{r.Model.Scenario} at {label}: model ({r.Model.Target}) {PteDelta(r.Model, label):+#;-#;0} kB, kernel {PteDelta(r.Kernel, label):+#;-#;0} kB");
        }
    }
}
