using System.Text.Json;
using PtLab.Cli;

namespace PtLab.Tests;

/// <summary>The host-memory guard, and the notes and errors that say what the model's memory did.</summary>
public class GuardTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CommandTests.Run(args);

    private static string OneErrorLine(int code, string output, string err, int expected = 2)
    {
        Assert.Equal(expected, code);
        Assert.Equal("", output);
        return Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Theory]
    [InlineData("run", "cover-letter", "--size", "2T", "--ram", "1T", "--advice", "none")]
    [InlineData("compare", "cover-letter", "--size", "2T", "--ram", "1T", "--advice", "free")]
    [InlineData("run", "munmap-holes", "--size", "2T", "--ram", "2T")]
    public void ARunThatWouldNotFitInTheHostsMemoryIsRefusedWithTheOptionsToChange(params string[] args)
    {
        var (code, output, err) = Run(args);
        string line = OneErrorLine(code, output, err);
        Assert.Contains("of host memory", line);
        Assert.Contains("available", line);
        Assert.Contains("--page-data off", line);
        Assert.Contains("--force", line);
    }

    [Fact]
    public void ForceRunsWhatTheGuardWouldRefuse()
    {
        var f = new ScenarioFootprint(1UL << 30, 1UL << 30);
        Assert.Throws<UsageException>(() => HostMemory.Check(f, 1L << 30, 0, pageData: true, available: 64L << 20, force: false));
        HostMemory.Check(f, 1L << 30, 0, pageData: true, available: 64L << 20, force: true);
        HostMemory.Check(f, 1L << 30, 0, pageData: true, available: 8L << 30, force: false);
    }

    [Fact]
    public void TheEstimateCountsPageBytesOnlyWithPageDataAndBoundsResidentPagesByRamAndSwap()
    {
        var f = new ScenarioFootprint(8UL << 30, 8UL << 30);
        long on = HostMemory.Estimate(f, 4L << 30, 0, pageData: true).Bytes;
        long off = HostMemory.Estimate(f, 4L << 30, 0, pageData: false).Bytes;
        long withSwap = HostMemory.Estimate(f, 4L << 30, 2L << 30, pageData: true).Bytes;
        Assert.InRange(on, 4L << 30, 5L << 30); // RAM bounds the resident pages
        Assert.True(off < on / 10);
        Assert.InRange(withSwap - on, 2L << 30, 3L << 30); // swapped pages keep their bytes too
    }

    [Fact]
    public void TheDefaultRunsFitAndSmallRunsAreNeverRefused()
    {
        var (code, _, err) = Run("run", "zeropage", "--size", "4M");
        Assert.True(code == 0, err);
        long defaults = HostMemory.Estimate(new ScenarioFootprint(50UL << 30, 2UL << 20), 24L << 30, 0, pageData: true).Bytes;
        Assert.True(defaults < 512L << 20, $"run cover-letter at its defaults needs about {defaults >> 20} MiB");
    }

    [Fact]
    public void AdviceFreesHelpSaysReclaimNeedsRamBelowTheWorkingSet()
    {
        var (code, output, _) = Run("run", "cover-letter", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--ram below --size", output.ReplaceLineEndings(" ").Replace("  ", " ", StringComparison.Ordinal));
        Assert.Contains("--force", output);
    }

    [Fact]
    public void AMadvFreeRunThatNeverReclaimedSaysSo()
    {
        var (code, output, err) = Run("run", "cover-letter", "--size", "8M", "--advice", "free", "--page-data", "off");
        Assert.True(code == 0, err);
        Assert.Contains("note: reclaim never ran", output);
        Assert.Contains("--ram below the working set", output);

        var (code2, json, err2) = Run("run", "cover-letter", "--size", "64M", "--advice", "free", "--ram", "16M", "--page-data", "off", "--format", "json");
        Assert.True(code2 == 0, err2);
        using var doc = JsonDocument.Parse(json);
        Assert.Empty(doc.RootElement.GetProperty("notes").EnumerateArray());
        Assert.True(doc.RootElement.GetProperty("after").GetProperty("vmRssKb").GetInt64() < 16 * 1024);
    }

    [Fact]
    public void ASizeBeyondTheUserAddressSpaceNamesIt()
    {
        var (code, output, err) = Run("run", "cover-letter", "--size", "200T");
        string line = OneErrorLine(code, output, err);
        Assert.Contains("--size 200T", line);
        Assert.Contains("128 TiB user address space", line);
    }
}
