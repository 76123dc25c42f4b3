using System.Text.Json;

namespace PtLab.Tests;

/// <summary>The conventions every reporting command shares: --output, indented JSON, one vocabulary of keys.</summary>
public sealed class OutputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-output-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CommandTests.Run(args);

    [Theory]
    [InlineData("run", "cover-letter", "--size", "4M", "--page-data", "off")]
    [InlineData("compare", "zeropage", "--size", "4M", "--designs", "none,pt-reclaim")]
    [InlineData("bench", "designs", "--cpus", "1", "--seconds", "0.03", "--designs", "pt-reclaim", "--isolation", "shared")]
    [InlineData("check", "gup-fast-free", "--design", "atomic", "--schedules", "3")]
    [InlineData("soak", "--design", "atomic", "--cpus", "1", "--minutes", "0.002")]
    public void OutputWritesTheIndentedJsonReportWhileTheHumanFormatPrints(params string[] args)
    {
        string file = Path.Combine(_dir, "report.json");
        var (code, output, err) = Run([.. args, "--output", file]);
        Assert.True(code == 0, err);
        Assert.False(output.TrimStart().StartsWith('{'), "stdout keeps the human format");
        Assert.NotEmpty(output);
        string json = File.ReadAllText(file);
        Assert.Contains("\n  \"", json);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
    }

    [Theory]
    [InlineData("check", "gup-fast-free", "--design", "atomic", "--schedules", "3", "--format", "json")]
    [InlineData("soak", "--design", "none", "--cpus", "1", "--minutes", "0.002", "--format", "json")]
    public void EveryCommandsJsonIsIndented(params string[] args)
    {
        var (code, output, err) = Run(args);
        Assert.True(code == 0, err);
        Assert.Contains("\n  \"", output);
        using var _ = JsonDocument.Parse(output);
    }

    [Fact]
    public void OutputIntoAMissingDirectoryIsRefusedBeforeTheRun()
    {
        var (code, output, err) = Run("run", "cover-letter", "--size", "4M", "--output", Path.Combine(_dir, "no", "such", "r.json"));
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--output", line);
        Assert.Contains("does not exist", line);
    }

    [Fact]
    public void RunAndCompareCsvShareTheStatusColumnsThatSayWhatTheyCount()
    {
        var (_, run, _) = Run("run", "zeropage", "--size", "4M", "--format", "csv");
        var (_, compare, _) = Run("compare", "zeropage", "--size", "4M", "--designs", "none", "--isolation", "shared", "--format", "csv");
        string status = "vmSizeKb,vmRssKb,rssAnonKb,rssFileKb,rssShmemKb,vmSwapKb,vmPteKb,pteTables,pmdTables,pudTables";
        Assert.StartsWith("scenario,design,phase," + status + ",faults,", run);
        Assert.StartsWith("scenario,design,phase," + status + ",faults,", compare);
    }

    [Fact]
    public void JsonParametersAreNumbersWithTheUnitInTheKey()
    {
        var (code, output, err) = Run("compare", "cover-letter", "--size", "4M", "--ram", "1GiB", "--designs", "none", "--page-data", "off", "--isolation", "shared", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var p = doc.RootElement.GetProperty("parameters");
        Assert.Equal(4L << 20, p.GetProperty("sizeBytes").GetInt64());
        Assert.Equal(2L << 20, p.GetProperty("chunkBytes").GetInt64());
        Assert.Equal(1L << 30, p.GetProperty("ramBytes").GetInt64());
        Assert.Equal(0, p.GetProperty("swapBytes").GetInt64());
        Assert.Equal(1, p.GetProperty("cpus").GetInt32());
        Assert.Equal("dontneed", p.GetProperty("advice").GetString());
        Assert.Equal("off", p.GetProperty("pageData").GetString());
    }

    [Fact]
    public void TablesPrintSizesInBinaryUnitsAndCountsWithSeparators()
    {
        var (code, output, _) = Run("run", "cover-letter", "--size", "64M", "--chunk", "64M", "--advice", "none", "--ram", "1G", "--page-data", "off");
        Assert.Equal(0, code);
        Assert.Contains("size=64 MiB", output);
        Assert.Contains("ram=1 GiB", output);
        Assert.Contains("16,384", output); // faults
    }
}

/// <summary>Fair timings: a warm-up, repeated trials in rotated orders, medians with their range.</summary>
public class FairTimingTests
{
    [Fact]
    public void TheOrderRotatesSoEachDesignGoesFirstInTurn()
    {
        string[] names = ["none", "atomic", "pt-reclaim"];
        Assert.Equal(["none", "atomic", "pt-reclaim"], PtLab.Cli.FairTrials.Order(names, 0));
        Assert.Equal(["atomic", "pt-reclaim", "none"], PtLab.Cli.FairTrials.Order(names, 1));
        Assert.Equal(["pt-reclaim", "none", "atomic"], PtLab.Cli.FairTrials.Order(names, 2));
    }

    [Fact]
    public void ASpreadIsTheMedianAndTheRange()
    {
        Assert.Equal(new PtLab.Cli.Spread(3, 1, 9), PtLab.Cli.Spread.Of([9, 1, 3]));
        Assert.Equal(new PtLab.Cli.Spread(2.5, 1, 9), PtLab.Cli.Spread.Of([9, 1, 2, 3]));
        Assert.True(new PtLab.Cli.Spread(1, 0.9, 1.1).Separate(new PtLab.Cli.Spread(2, 1.2, 2.5)));
        Assert.False(new PtLab.Cli.Spread(1, 0.9, 1.3).Separate(new PtLab.Cli.Spread(2, 1.2, 2.5)));
    }

    [Fact]
    public void AVerdictSaysWhetherTheRangesOverlap()
    {
        Assert.Contains("ranges overlap", PtLab.Cli.Compare.Verdict("a", new(1, 0.8, 1.5), "none", new(1.2, 1.0, 1.4), 3));
        Assert.Contains("faster", PtLab.Cli.Compare.Verdict("a", new(0.5, 0.4, 0.6), "none", new(1.2, 1.0, 1.4), 3));
        Assert.Contains("slower", PtLab.Cli.Compare.Verdict("a", new(2, 1.8, 2.2), "none", new(1.2, 1.0, 1.4), 3));
        Assert.Contains("one trial", PtLab.Cli.Compare.Verdict("a", new(2, 2, 2), "none", new(1, 1, 1), 1));
    }

    [Fact]
    public void CompareRunsRepeatedTrialsInRotatedOrdersAndReportsMediansWithTheirRange()
    {
        var (code, output, err) = CommandTests.Run("compare", "zeropage", "--size", "4M", "--designs", "none,pt-reclaim", "--trials", "3", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal(3, root.GetProperty("trials").GetInt32());
        Assert.Equal(
            [["none", "pt-reclaim"], ["pt-reclaim", "none"], ["none", "pt-reclaim"]],
            root.GetProperty("orders").EnumerateArray().Select(o => o.EnumerateArray().Select(x => x.GetString()!).ToArray()).ToArray());
        Assert.Contains("size=4 MiB", root.GetProperty("warmUp").GetString());
        foreach (var d in root.GetProperty("designs").EnumerateArray())
        {
            var wall = d.GetProperty("wallSecondsSpread");
            Assert.True(wall.GetProperty("min").GetDouble() <= wall.GetProperty("median").GetDouble());
            Assert.True(wall.GetProperty("median").GetDouble() <= wall.GetProperty("max").GetDouble());
            Assert.Equal(wall.GetProperty("median").GetDouble(), d.GetProperty("wallSeconds").GetDouble());
            Assert.True(d.GetProperty("trialsAgree").GetBoolean());
        }

        Assert.StartsWith("pt-reclaim vs none: wall ", Assert.Single(root.GetProperty("timingVerdicts").EnumerateArray()).GetString());
    }

    [Fact]
    public void TheCompareTableSaysHowManyTrialsAndShowsNoLatencyWithoutCalls()
    {
        var (code, output, _) = CommandTests.Run("compare", "cover-letter", "--size", "4M", "--advice", "none", "--designs", "none,atomic", "--trials", "2");
        Assert.Equal(0, code);
        Assert.Contains("2 measured trials per design after a warm-up", output);
        var p50 = output.Split('\n').Single(l => l.TrimStart().StartsWith("madvise p50", StringComparison.Ordinal));
        Assert.DoesNotContain("µs", p50); // no madvise call: no latency to show
    }

    [Fact]
    public void BenchGivesTheSpreadOfThePerTrialRatios()
    {
        var (code, output, err) = CommandTests.Run("bench", "designs", "--cpus", "1", "--seconds", "0.06", "--trials", "2", "--designs", "pt-reclaim", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(2, doc.RootElement.GetProperty("trials").GetInt32());
        Assert.Equal("process", doc.RootElement.GetProperty("isolation").GetString()); // each run in a process of its own
        foreach (var r in doc.RootElement.GetProperty("results").EnumerateArray())
        {
            var s = r.GetProperty("ratioToNoneSpread").GetProperty("faultsPerSecond");
            Assert.True(s.GetProperty("min").GetDouble() <= s.GetProperty("max").GetDouble());
            Assert.Equal(2, r.GetProperty("trials").GetInt32());
            Assert.Equal(r.GetProperty("rounds").GetInt64(), r.GetProperty("loops").GetInt64());
        }
    }
}
