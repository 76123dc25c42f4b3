using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>A short soak per design on real threads: progress, and no broken invariant.</summary>
public class SoakTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    public void ABoundedSoakMakesProgressAndBreaksNoInvariant(string design)
    {
        var r = Soak.Run(design, cpus: 2, TimeSpan.FromSeconds(60), seed: 3);
        output.WriteLine($"soak {design}: {r.Operations} ops, {r.OperationsPerSecond:F0} ops/s, {r.Rounds} rounds");
        Assert.Empty(r.Violations);
        Assert.True(r.Operations > 1000, $"only {r.Operations} operations in {r.Elapsed}");
        Assert.True(r.Rounds >= 4);
    }

    [Fact]
    public void AShortSoakOfTheScannerWithItsThreadAndPressureScansBreaksNoInvariant()
    {
        // Shorter than the kernel designs' minute: `ptlab soak --design scanner` runs longer.
        var r = Soak.Run(PtLab.Reclaim.Designs.Scanner, cpus: 2, TimeSpan.FromSeconds(5), seed: 5);
        output.WriteLine($"soak scanner: {r.Operations} ops, {r.OperationsPerSecond:F0} ops/s, {r.Rounds} rounds");
        Assert.Empty(r.Violations);
        Assert.True(r.Operations > 1000, $"only {r.Operations} operations in {r.Elapsed}");
        Assert.True(r.Rounds >= 4);
    }
}
