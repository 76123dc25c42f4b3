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
    [InlineData("bench", "designs", "--cpus", "1", "--seconds", "0.03", "--designs", "pt-reclaim")]
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
        var (_, compare, _) = Run("compare", "zeropage", "--size", "4M", "--designs", "none", "--format", "csv");
        string status = "vmSizeKb,vmRssKb,rssAnonKb,rssFileKb,rssShmemKb,vmSwapKb,vmPteKb,pteTables,pmdTables,pudTables";
        Assert.StartsWith("scenario,design,phase," + status + ",faults,", run);
        Assert.StartsWith("scenario,design,phase," + status + ",faults,", compare);
    }

    [Fact]
    public void JsonParametersAreNumbersWithTheUnitInTheKey()
    {
        var (code, output, err) = Run("compare", "cover-letter", "--size", "4M", "--ram", "1GiB", "--designs", "none", "--page-data", "off", "--format", "json");
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
