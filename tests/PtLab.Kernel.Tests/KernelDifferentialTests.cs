using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.Differential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// The model (design <c>none</c>) against the host kernel, compared on VmPTE deltas only where
/// Linux's <c>none</c> and <c>pt-reclaim</c> agree: munmap, MADV_FREE, and madvise calls that never
/// cover a whole PTE table. Both sides place the region in an empty 512 GiB slot, so each allocates
/// one PUD table and its own PMD tables, and the deltas must match to the kB.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class KernelDifferentialTests(ITestOutputHelper output)
{
    [LinuxFact]
    public void HalvingEachTwoMebibytesKeepsEveryPteTableOnBothTheModelAndTheKernel()
    {
        // 256 PTE tables + 1 PMD + 1 PUD: no DONTNEED call covered a whole table.
        var (model, kernel) = Run(at => new HalvesScenario(2, 512 * MiB, at), [HalvesScenario.AfterLoop], output);
        Assert.Equal(258 * 4, PteDelta(model, HalvesScenario.AfterLoop));
        Assert.Equal(PteDelta(model, HalvesScenario.AfterLoop), PteDelta(kernel, HalvesScenario.AfterLoop));
    }

    [LinuxFact]
    public void FiveHundredTwelveCallsPerTwoMebibytesKeepEveryPteTableOnBothTheModelAndTheKernel()
    {
        var (model, kernel) = Run(at => new HalvesScenario(512, 256 * MiB, at), [HalvesScenario.AfterLoop], output);
        Assert.Equal(130 * 4, PteDelta(model, HalvesScenario.AfterLoop));
        Assert.Equal(PteDelta(model, HalvesScenario.AfterLoop), PteDelta(kernel, HalvesScenario.AfterLoop));
    }

    [LinuxFact]
    public void MadvFreeKeepsEveryPteTableOnBothTheModelAndTheKernel()
    {
        var (model, kernel) = Run(at => new CoverLetterScenario(256 * MiB, 2 * MiB, Advice.Free, at), [CoverLetterScenario.AfterLoop], output);
        Assert.Equal(130 * 4, PteDelta(model, CoverLetterScenario.AfterLoop));
        Assert.Equal(PteDelta(model, CoverLetterScenario.AfterLoop), PteDelta(kernel, CoverLetterScenario.AfterLoop));
    }

    [LinuxFact]
    public void ReadingFreshMemoryAllocatesTheSameZeroPageTablesOnBothTheModelAndTheKernel()
    {
        var (model, kernel) = Run(at => new ZeroPageScenario(128 * MiB, at), [ZeroPageScenario.AfterRead], output);
        Assert.Equal(66 * 4, PteDelta(model, ZeroPageScenario.AfterRead));
        Assert.Equal(PteDelta(model, ZeroPageScenario.AfterRead), PteDelta(kernel, ZeroPageScenario.AfterRead));

        // Zero-page entries are not RSS; on a host whose read faults take private pages, the
        // 128 MiB read is all RssAnon. The kernel's RSS is counted in the slot alone, so it matches.
        long readKb = MappingDifferential.HostZeroPage ? 0 : 128 * 1024;
        Assert.Equal(readKb, Checkpoint(model, ZeroPageScenario.AfterRead).RssAnonKb - model.Before.RssAnonKb);
        long kernelAnon = Checkpoint(kernel, ZeroPageScenario.AfterRead).RssAnonKb - kernel.Before.RssAnonKb;
        Assert.True(kernelAnon == readKb,
            $"reading 128 MiB of fresh memory added {kernelAnon} kB of RssAnon on the kernel (model {readKb} kB)");
    }

    [LinuxFact]
    public void MunmapFreesTheSameTablesOnTheModelAndTheKernelAtEveryStep()
    {
        // Placed 16 MiB below the slot's second GiB, 1 GiB + 18 MiB is enough for the whole-GiB step.
        const ulong size = (1UL << 30) + (18 * MiB);
        const ulong offset = (1UL << 30) - (16 * MiB);
        string[] labels = [MunmapHolesScenario.AfterTouch, .. MunmapHolesScenario.Plan(offset, size).Select(s => s.Label)];
        var (model, kernel) = Run(at => new MunmapHolesScenario(size, at), labels, output, offset);
        var plan = MunmapHolesScenario.Plan(At(model), size);
        Assert.Contains(plan, s => s.Label == "aligned-1g");
        var previous = Checkpoint(model, MunmapHolesScenario.AfterTouch);
        foreach (var step in plan)
        {
            var now = Checkpoint(model, step.Label);
            Assert.True(step.PteTablesFreed == previous.Tables.Pte - now.Tables.Pte, $"model, step {step.Label}: {step.Why}");
            if (step.PmdTablesFreed is { } pmds)
            {
                Assert.True(pmds == previous.Tables.Pmd - now.Tables.Pmd, $"model PMD tables, step {step.Label}: {step.Why}");
            }

            previous = now;
        }

        foreach (var (label, _) in model.Checkpoints)
        {
            Assert.True(PteDelta(model, label) == PteDelta(kernel, label),
                $"step {label}: model {PteDelta(model, label):+#;-#;0} kB, kernel {PteDelta(kernel, label):+#;-#;0} kB");
        }

        Assert.Equal(0, PteDelta(kernel, "everything-left"));
    }

    private static ulong At(ScenarioResult r) =>
        ulong.Parse(r.Parameters["at"].AsSpan(2), System.Globalization.NumberStyles.AllowHexSpecifier, provider: null);
}
