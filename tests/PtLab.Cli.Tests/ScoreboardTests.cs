using System.Text.Json;

namespace PtLab.Tests;

/// <summary>The scenarios that separate the designs no kernel ships, and the scoreboard that runs them all.</summary>
public class ScoreboardTests
{
    internal static JsonElement Json(params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.True(code == 0, err);
        return JsonDocument.Parse(output).RootElement;
    }

    private static Dictionary<string, long> PteTablesAfter(JsonElement compare) =>
        compare.GetProperty("designs").EnumerateArray().ToDictionary(
            d => d.GetProperty("design").GetString()!, d => d.GetProperty("after").GetProperty("tables").GetProperty("pte").GetInt64());

    [Fact]
    public void PerPageFreesEmptyEveryTableOnlyUnderTheDesignsThatFreeAtTheLastEntry()
    {
        var tables = PteTablesAfter(Json("compare", "per-page-dontneed", "--size", "8M", "--designs", "none,pt-reclaim,atomic,occupancy", "--trials", "1", "--page-data", "off", "--isolation", "shared", "--format", "json"));
        Assert.Equal(4, tables["none"]);
        Assert.Equal(4, tables["pt-reclaim"]); // no call covers a whole 2 MiB
        Assert.Equal(0, tables["atomic"]);
        Assert.Equal(0, tables["occupancy"]);
    }

    [Fact]
    public void ZeroPageTablesGivenBackInPiecesAreFreedByOccupancyButNotByUpstream()
    {
        var j = Json("compare", "zeropage-fill", "--size", "8M", "--designs", "pt-reclaim,occupancy", "--trials", "1", "--isolation", "shared", "--format", "json");
        var tables = PteTablesAfter(j);
        Assert.Equal(4, tables["pt-reclaim"]);
        Assert.Equal(0, tables["occupancy"]);
        var read = j.GetProperty("designs")[1].GetProperty("checkpoints").EnumerateArray().First(c => c.GetProperty("label").GetString() == "read");
        Assert.Equal(4, read.GetProperty("status").GetProperty("tables").GetProperty("pte").GetInt64());
    }

    [Fact]
    public void MadvFreePressureRunsUnderItsOwnRamAndReclaimEmptiesTablesThatOccupancyFrees()
    {
        var tables = PteTablesAfter(Json("compare", "madvfree-pressure", "--size", "64M", "--designs", "none,occupancy", "--trials", "1", "--page-data", "off", "--isolation", "shared", "--format", "json"));
        Assert.Equal(32, tables["none"]);
        Assert.InRange(tables["occupancy"], 0, 31);
    }

    [Fact]
    public void TheScannersIdlePassFreesWhatPartialZapsLeftAndTheRunSaysSo()
    {
        var j = Json("compare", "per-page-dontneed", "--size", "8M", "--designs", "pt-reclaim,scanner", "--trials", "1", "--page-data", "off", "--isolation", "shared", "--format", "json");
        var tables = PteTablesAfter(j);
        Assert.Equal(4, tables["pt-reclaim"]);
        Assert.Equal(0, tables["scanner"]);
        var scanner = j.GetProperty("designs")[1];
        string note = Assert.Single(scanner.GetProperty("notes").EnumerateArray(), n => n.GetString()!.Contains("table scanner", StringComparison.Ordinal)).GetString()!;
        Assert.Contains("freed 4", note);
    }

    [Fact]
    public void UnderMemoryPressureTheScannerFreesTablesDuringTheRun()
    {
        var j = Json("compare", "madvfree-pressure", "--size", "64M", "--designs", "none,scanner", "--trials", "1", "--page-data", "off", "--isolation", "shared", "--format", "json");
        var tables = PteTablesAfter(j);
        Assert.Equal(32, tables["none"]);
        var loop = j.GetProperty("designs")[1].GetProperty("checkpoints").EnumerateArray().First(c => c.GetProperty("label").GetString() == "loop");
        Assert.InRange(loop.GetProperty("status").GetProperty("tables").GetProperty("pte").GetInt64(), 0, 31); // before the idle pass
    }

    [Fact]
    public void TheScoreboardRunsEachScenarioUnderEachDesignAndMarksTheBest()
    {
        var j = Json("compare", "--scenarios", "zeropage-fill,reuse", "--designs", "none,occupancy", "--isolation", "shared", "--format", "json");
        var scenarios = j.GetProperty("scenarios").EnumerateArray().ToList();
        Assert.Equal(["zeropage-fill", "reuse"], scenarios.Select(s => s.GetProperty("label").GetString()));
        foreach (var s in scenarios)
        {
            var compare = s.GetProperty("compare");
            Assert.Equal(["none", "occupancy"], compare.GetProperty("designs").EnumerateArray().Select(d => d.GetProperty("design").GetString()));
            var tables = PteTablesAfter(compare);
            Assert.Equal(tables.Values.Min(), tables[s.GetProperty("best").GetString()!]);
            Assert.False(string.IsNullOrEmpty(s.GetProperty("verdict").GetString()));
        }

        Assert.Equal("occupancy", scenarios[0].GetProperty("best").GetString()); // 0 tables against none's 64
        Assert.Equal(["occupancy"], j.GetProperty("fewestTablesEverywhere").EnumerateArray().Select(e => e.GetString()));
    }

    private static Dictionary<string, long> PmdTablesAfter(JsonElement compare) =>
        compare.GetProperty("designs").EnumerateArray().ToDictionary(
            d => d.GetProperty("design").GetString()!, d => d.GetProperty("after").GetProperty("tables").GetProperty("pmd").GetInt64());

    [Fact]
    public void SparseReleaseLeavesThePmdTablesUnlessTheDesignFreesThem()
    {
        string[] args = ["compare", "sparse-release", "--size", "2G", "--designs", "none,pt-reclaim,occupancy", "--trials", "1", "--page-data", "off", "--isolation", "shared", "--format", "json"];
        var kept = Json(args);
        var freed = Json([.. args, "--free-pmd"]);
        long gibs = PmdTablesAfter(kept)["none"];
        Assert.InRange(gibs, 2, 3); // 2 GiB, placed 2 MiB-aligned: two or three GiBs
        Assert.Equal(gibs, PmdTablesAfter(freed)["none"]);
        foreach (var d in new[] { "pt-reclaim", "occupancy" })
        {
            Assert.Equal(0, PteTablesAfter(kept)[d]);
            Assert.Equal(gibs, PmdTablesAfter(kept)[d]);
            Assert.Equal(0, PmdTablesAfter(freed)[d]);
        }

        // VmPTE counts the PMD tables: only the PUD table is left where they went.
        var occupancy = freed.GetProperty("designs").EnumerateArray().First(d => d.GetProperty("design").GetString() == "occupancy");
        Assert.Equal(4, occupancy.GetProperty("after").GetProperty("vmPteKb").GetInt64());
    }

    [Fact]
    public void TheScoreboardPassesFreePmdToTheDesignsThatTakeIt()
    {
        var j = Json("compare", "--scenarios", "sparse-release", "--designs", "none,occupancy", "--free-pmd", "--isolation", "shared", "--format", "json");
        var compare = Assert.Single(j.GetProperty("scenarios").EnumerateArray()).GetProperty("compare");
        var pmds = PmdTablesAfter(compare);
        Assert.Equal(0, pmds["occupancy"]);
        Assert.InRange(pmds["none"], 4, 5);
    }

    [Theory]
    [InlineData("--free-pmd", "run", "sparse-release", "--design", "none", "--free-pmd")]
    [InlineData("--free-pmd", "check", "gup-fast-free", "--design", "pte-ref", "--free-pmd")]
    [InlineData("--free-pmd", "check", "gup-fast-free", "--design", "occupancy", "--mutation", "skip-pmd-rcu")]
    [InlineData("--scenarios", "compare", "--scenarios", "bogus")]
    [InlineData("--trials", "compare", "--scenarios", "reuse", "--trials", "0")]
    [InlineData("--designs", "compare", "--scenarios", "reuse", "--designs", "magic")]
    [InlineData("--reuse", "run", "per-page-dontneed", "--reuse", "101")]
    [InlineData("--piece", "run", "zeropage-fill", "--piece", "3K")]
    [InlineData("--rounds", "run", "reuse", "--rounds", "0")]
    [InlineData("--kernel", "compare", "madvfree-pressure", "--kernel")]
    public void BadScoreboardAndScenarioArgumentsGetOneLineNamingTheOption(string option, params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(option, Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }
}
