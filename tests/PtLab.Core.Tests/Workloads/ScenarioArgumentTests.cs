using PtLab.Workloads.Scenarios;

namespace PtLab.Tests.Workloads;

/// <summary>The scenarios that free memory in pieces refuse a piece that would straddle a PTE table, naming it.</summary>
public class ScenarioArgumentTests
{
    [Theory]
    [InlineData(0UL)]
    [InlineData(3000UL)]
    [InlineData(12UL << 10)] // a multiple of 4 KiB that does not divide 2 MiB
    public void APieceThatIsNotA4KiBDivisorOf2MiBIsRefused(ulong piece)
    {
        var a = Assert.Throws<ArgumentException>(() => new ZeroPageFillScenario(piece: piece));
        var b = Assert.Throws<ArgumentException>(() => new MadvFreePressureScenario(piece: piece));
        Assert.Equal("piece", a.ParamName);
        Assert.Equal("piece", b.ParamName);
        Assert.Contains("divides 2 MiB", a.Message);
    }

    [Fact]
    public void APieceThatDivides2MiBIsTaken() => Assert.Equal(64UL << 10, new ZeroPageFillScenario(piece: 64UL << 10).Piece);
}
