using System.Text.Json;

namespace PtLab.Tests;

/// <summary>The production scenario and --profile.</summary>
public class ScaleTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CommandTests.Run(args);

    private static JsonElement Json(params string[] args)
    {
        var (code, output, err) = Run(args);
        Assert.True(code == 0, err);
        return JsonDocument.Parse(output).RootElement;
    }

    [Fact]
    public void ProductionAtAScaleHasTheSeedsShapeUnderNone()
    {
        var r = Json("run", "production", "--scale", "0.0005", "--arenas", "8", "--page-data", "off", "--format", "json");
        var after = r.GetProperty("after");
        double virtTarget = r.GetProperty("parameters").GetProperty("virtTarget").GetDouble();
        double resTarget = r.GetProperty("parameters").GetProperty("resTarget").GetDouble();
        double vmSize = after.GetProperty("vmSizeKb").GetDouble() * 1024;
        double vmRss = after.GetProperty("vmRssKb").GetDouble() * 1024;
        long pte = after.GetProperty("tables").GetProperty("pte").GetInt64();
        Assert.InRange(vmSize / virtTarget, 0.95, 1.15);
        Assert.InRange(vmRss / resTarget, 0.9, 1.2);
        // Every 2 MiB of VIRT saw a write, and none frees no table: a PTE table per 2 MiB.
        Assert.InRange(pte / (vmSize / (2 << 20)), 0.95, 1.0);
    }

    [Fact]
    public void ComparedProductionKeepsTheTablesOnlyWhereNoDesignFreesThem()
    {
        var r = Json("compare", "production", "--scale", "0.0005", "--arenas", "8", "--page-data", "off", "--designs", "none,pt-reclaim", "--trials", "1", "--isolation", "shared", "--format", "json");
        var designs = r.GetProperty("designs").EnumerateArray().ToDictionary(d => d.GetProperty("design").GetString()!, d => d.GetProperty("after"));
        long none = designs["none"].GetProperty("tables").GetProperty("pte").GetInt64();
        long reclaim = designs["pt-reclaim"].GetProperty("tables").GetProperty("pte").GetInt64();
        Assert.True(reclaim * 3 < none, $"pt-reclaim kept {reclaim} PTE tables, none {none}");
        Assert.Equal(designs["none"].GetProperty("vmSizeKb").GetInt64(), designs["pt-reclaim"].GetProperty("vmSizeKb").GetInt64());
    }

    [Fact]
    public void ProfileCountsTheFaultsAndWhatEachCost()
    {
        var none = Json("run", "cover-letter", "--size", "8M", "--page-data", "off", "--design", "none", "--profile", "--format", "json");
        var pteRef = Json("run", "cover-letter", "--size", "8M", "--page-data", "off", "--design", "pte-ref", "--profile", "--format", "json");
        foreach (var r in new[] { none, pteRef })
        {
            var profile = r.GetProperty("profile");
            long faults = r.GetProperty("counters").GetProperty("faults").GetInt64();
            Assert.Equal(faults, profile.GetProperty("faults").GetInt64());
            // Each fault takes mmap_lock and the PTE lock at least.
            Assert.True(profile.GetProperty("lockAcquisitions").GetInt64() >= 2 * faults);
            Assert.True(profile.GetProperty("sharedAtomics").GetInt64() >= 2 * faults);
            Assert.Equal(r.GetProperty("counters").GetProperty("gracePeriods").GetInt64(), profile.GetProperty("gracePeriods").GetInt64());
            Assert.True(profile.GetProperty("tablesZeroed").GetInt64() >= 4 + 3); // four PTE tables, the upper levels and the PGD
        }

        // pte-ref's percpu_ref gets and puts are per-CPU ops: at least two per fault more than none's page-list ones.
        long faultsRef = pteRef.GetProperty("profile").GetProperty("faults").GetInt64();
        Assert.True(pteRef.GetProperty("profile").GetProperty("percpuOps").GetInt64() >= none.GetProperty("profile").GetProperty("percpuOps").GetInt64() + (2 * faultsRef));
        Assert.Equal(0, none.GetProperty("counters").GetProperty("gracePeriods").GetInt64());
    }

    [Fact]
    public void WithoutProfileTheReportHasNoProfile()
    {
        var r = Json("run", "cover-letter", "--size", "4M", "--page-data", "off", "--format", "json");
        Assert.False(r.TryGetProperty("profile", out _));
    }

    [Theory]
    [InlineData("--scale", "0")]
    [InlineData("--scale", "3")]
    [InlineData("--scale", "x")]
    [InlineData("--arenas", "0")]
    [InlineData("--visits", "65")]
    [InlineData("--decay", "-1")]
    public void BadProductionArgumentsGetOneLineNamingTheOption(string option, string value)
    {
        var (code, output, err) = Run("run", "production", option, value);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(option, Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }
}
