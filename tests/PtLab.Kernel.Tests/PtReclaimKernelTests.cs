using PtLab.Workloads.Scenarios;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.Differential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// The host kernel's own figures where it has upstream page-table reclaim (KERNEL-FACTS.md, "Measured
/// on this project's machine kind"), at test sizes. Each region sits alone in an empty 512 GiB slot,
/// so its upper tables are exactly one PUD table and one PMD table per GiB touched: +8 kB below
/// 1 GiB. The model has no <c>pt-reclaim</c> design yet, so these compare the kernel with the facts.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class PtReclaimKernelTests(ITestOutputHelper output)
{
    private const long Upper = 8;

    [PtReclaimFact]
    public void OneDontNeedPerTwoMebibytesFreesEveryPteTable()
    {
        var expected = new Dictionary<string, long>
        {
            [HalvesScenario.AfterLoop] = Upper,
            [HalvesScenario.AfterFullDontNeed] = Upper,
        };
        var kernel = RunOnKernelExpecting(at => new HalvesScenario(1, 512 * MiB, at), expected, output);
        AssertDeltas(expected, kernel);
    }

    [PtReclaimFact]
    public void TwoDontNeedCallsPerTwoMebibytesFreeNoTableUntilOneCallCoversEverything()
    {
        var expected = new Dictionary<string, long>
        {
            [HalvesScenario.AfterLoop] = (256 * 4) + Upper,
            [HalvesScenario.AfterFullDontNeed] = Upper,
        };
        var kernel = RunOnKernelExpecting(at => new HalvesScenario(2, 512 * MiB, at), expected, output);
        AssertDeltas(expected, kernel);
    }

    [PtReclaimFact]
    public void FiveHundredTwelveDontNeedCallsPerTwoMebibytesFreeNoTable()
    {
        var expected = new Dictionary<string, long> { [HalvesScenario.AfterLoop] = (128 * 4) + Upper };
        var kernel = RunOnKernelExpecting(at => new HalvesScenario(512, 256 * MiB, at), expected, output);
        AssertDeltas(expected, kernel);
    }

    [PtReclaimFact]
    public void ZeroPageTablesAreFreedByTheDontNeedZap()
    {
        // 128 MiB read: 64 PTE tables of zero-page entries (+256 kB), no RSS; the zap frees them all.
        var expected = new Dictionary<string, long>
        {
            [ZeroPageScenario.AfterRead] = 256 + Upper,
            [ZeroPageScenario.AfterDontNeed] = Upper,
        };
        var kernel = RunOnKernelExpecting(at => new ZeroPageScenario(128 * MiB, at), expected, output);
        AssertDeltas(expected, kernel);
    }

    [PtReclaimFact]
    public void TheHalvesZeroPagePhaseAllocatesAndFreesSixtyFourTables()
    {
        var expected = new Dictionary<string, long>
        {
            [HalvesScenario.AfterZeroPageRead] = 256 + Upper,
            [HalvesScenario.AfterZeroPageDontNeed] = Upper,
        };
        var kernel = RunOnKernelExpecting(at => new HalvesScenario(1, 256 * MiB, at), expected, output);
        AssertDeltas(expected, kernel);
    }

    private static void AssertDeltas(IReadOnlyDictionary<string, long> expected, Workloads.ScenarioResult kernel)
    {
        foreach (var (label, kb) in expected)
        {
            Assert.True(kb == PteDelta(kernel, label), $"{label}: expected {kb:+#;-#;0} kB, kernel {PteDelta(kernel, label):+#;-#;0} kB");
        }
    }
}
