using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;

namespace PtLab.Kernel.Tests;

/// <summary>The new scenarios on the model alone: parameter checks, and the <c>none</c> design's outcomes.</summary>
public sealed class ScenarioTests
{
    private const ulong MiB = 1UL << 20;

    private static ModelTarget Model() => new(new MachineOptions { PageData = false, Design = PtLab.Reclaim.Designs.Factory(PtLab.Reclaim.Designs.Baseline)! });

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(1024)]
    [InlineData(-2)]
    public void HalvesRejectsACallCountThatDoesNotDivideFiveHundredTwelve(int calls)
    {
        var ex = Assert.Throws<ArgumentException>(() => new HalvesScenario(calls));
        Assert.Equal("callsPer2M", ex.ParamName);
        Assert.Contains("divide 512", ex.Message);
    }

    [Theory]
    [InlineData((256UL << 20) + 4096)]
    [InlineData(1UL << 20)]
    [InlineData(0UL)]
    public void HalvesRejectsASizeThatIsNotAPositiveWholeNumberOfTwoMebibytes(ulong size)
    {
        var ex = Assert.Throws<ArgumentException>(() => new HalvesScenario(2, size));
        Assert.Equal("size", ex.ParamName);
    }

    [Fact]
    public void APlacementAddressMustBeTwoMebibyteAligned()
    {
        Assert.Equal("at", Assert.Throws<ArgumentException>(() => new HalvesScenario(1, 128 * MiB, 0x1000_0000_1000UL)).ParamName);
        Assert.Equal("at", Assert.Throws<ArgumentException>(() => new ZeroPageScenario(2 * MiB, 0x7FFF_FFE0_0000UL)).ParamName);
        Assert.Equal("at", Assert.Throws<ArgumentException>(() => new MunmapHolesScenario(16 * MiB, 4096)).ParamName);
    }

    [Fact]
    public void ZeroPageAndMunmapHolesRejectSizesTheirStepsDoNotFit()
    {
        Assert.Equal("size", Assert.Throws<ArgumentException>(() => new ZeroPageScenario(MiB)).ParamName);
        Assert.Equal("size", Assert.Throws<ArgumentException>(() => new MunmapHolesScenario(14 * MiB)).ParamName);
    }

    [Fact]
    public void OnTheNoneDesignHalvesNeverFreesATable()
    {
        using var model = Model();
        var r = new HalvesScenario(1, 128 * MiB).Run(model);
        Assert.Equal(["loop", "full-dontneed", "zero-read", "zero-dontneed"], r.Checkpoints.Select(c => c.Label));
        Assert.All(r.Checkpoints, c => Assert.Equal(64, c.Status.Tables.Pte));
        Assert.Equal(0, r.After.RssAnonKb);
    }

    [Fact]
    public void ReadingFreshMemoryMapsTheZeroPageWithoutRss()
    {
        using var model = Model();
        var r = new ZeroPageScenario(8 * MiB).Run(model);
        var read = r.Checkpoints[0].Status;
        Assert.Equal(4, read.Tables.Pte);
        Assert.Equal(0, read.RssAnonKb);
    }

    [Fact]
    public void TheMunmapPlanFitsInsideTheRegionAndNamesEveryStepOnce()
    {
        const ulong b = 0x10_0000_0000UL - (16 * MiB);
        var plan = MunmapHolesScenario.Plan(b, (1UL << 30) + (18 * MiB));
        Assert.All(plan, s => Assert.True(s.Start >= b && s.Start + s.Length <= b + (1UL << 30) + (18 * MiB), s.Label));
        Assert.Equal(plan.Count, plan.Select(s => s.Label).Distinct().Count());
        Assert.Equal(0x10_0000_0000UL, plan.Single(s => s.Label == "aligned-1g").Start);
    }

    [Fact]
    public void TheWholeGibibyteStepIsLeftOutWhenTheRegionHoldsNoAlignedGibibyte()
    {
        Assert.DoesNotContain(MunmapHolesScenario.Plan(0x10_0000_0000UL, 512 * MiB), s => s.Label == "aligned-1g");
    }

    [Fact]
    public void OnTheModelEveryMunmapStepFreesTheTablesItsPlanPredicts()
    {
        using var model = Model();
        const ulong size = 64 * MiB, at = 0x10_0000_0000UL;
        var r = new MunmapHolesScenario(size, at).Run(model);
        var plan = MunmapHolesScenario.Plan(at, size);
        var previous = r.Checkpoints[0].Status.Tables;
        foreach (var step in plan)
        {
            var now = r.Checkpoints.Single(c => c.Label == step.Label).Status.Tables;
            Assert.True(step.PteTablesFreed == previous.Pte - now.Pte, $"{step.Label}: {step.Why}");
            previous = now;
        }

        Assert.Equal(default, r.After.Tables);
    }
}
