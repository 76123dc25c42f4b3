using System.Text.Json;
using PtLab.Cli;

namespace PtLab.Tests;

public class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PtLab.Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Theory]
    [InlineData("run", "cover-letter", "--size", "banana")]
    [InlineData("run", "cover-letter", "--size", "3M", "--chunk", "2M")]
    [InlineData("run", "cover-letter", "--chunk", "100")]
    [InlineData("run", "cover-letter", "--advice", "sometimes")]
    [InlineData("run", "cover-letter", "--design", "magic")]
    [InlineData("run", "cover-letter", "--format", "xml")]
    [InlineData("run", "cover-letter", "--ram", "12Q")]
    [InlineData("run", "cover-letter", "--page-data", "maybe")]
    [InlineData("run", "no-such-scenario")]
    [InlineData("run", "cover-letter", "--no-such-option")]
    public void BadArgumentsGetOneLineErrorAndExitCodeTwo(params string[] args)
    {
        var (code, output, err) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
    }

    [Fact]
    public void TheSizeErrorNamesTheOptionAndTheValue()
    {
        var (_, _, err) = Run("run", "cover-letter", "--size", "banana");
        Assert.Contains("--size", err);
        Assert.Contains("banana", err);
    }

    [Fact]
    public void HelpDescribesTheScenarioAndItsOptions()
    {
        var (code, output, _) = Run("run", "cover-letter", "--help");
        Assert.Equal(0, code);
        foreach (var word in new[] { "--size", "--chunk", "--advice", "--design", "--ram", "--page-data", "--format", "madvise" })
        {
            Assert.Contains(word, output);
        }
    }

    [Fact]
    public void JsonOutputHasTheStableKeys()
    {
        var (code, output, _) = Run("run", "cover-letter", "--size", "8M", "--format", "json", "--ram", "64M");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal("cover-letter", root.GetProperty("scenario").GetString());
        Assert.Equal("none", root.GetProperty("design").GetString());
        Assert.Equal(8388608, root.GetProperty("parameters").GetProperty("sizeBytes").GetInt64());
        Assert.Equal(64L << 20, root.GetProperty("parameters").GetProperty("ramBytes").GetInt64());
        Assert.Equal(1, root.GetProperty("parameters").GetProperty("cpus").GetInt32());
        foreach (var phase in new[] { "before", "after" })
        {
            var st = root.GetProperty(phase);
            foreach (var k in new[] { "vmSizeKb", "vmRssKb", "rssAnonKb", "vmSwapKb", "vmPteKb" })
            {
                Assert.Equal(JsonValueKind.Number, st.GetProperty(k).ValueKind);
            }

            foreach (var k in new[] { "pte", "pmd", "pud" })
            {
                Assert.Equal(st.GetProperty(k + "Tables").GetInt64(), st.GetProperty("tables").GetProperty(k).GetInt64());
            }
        }

        var after = root.GetProperty("after");
        Assert.Equal(4, after.GetProperty("tables").GetProperty("pte").GetInt32());
        Assert.Equal(8192, after.GetProperty("vmSizeKb").GetInt64());
        Assert.Equal(0, after.GetProperty("vmRssKb").GetInt64());
        var counters = root.GetProperty("counters");
        Assert.Equal(2048, counters.GetProperty("faults").GetInt64());
        Assert.True(counters.GetProperty("tablesAllocated").GetInt64() >= 6);
        Assert.Equal(0, counters.GetProperty("tablesFreed").GetInt64());
        Assert.True(root.GetProperty("wallSeconds").GetDouble() >= 0);
    }

    [Fact]
    public void CsvOutputHasAHeaderAndOneRowPerPhaseAndCheckpoint()
    {
        var (code, output, _) = Run("run", "cover-letter", "--size", "4M", "--format", "csv", "--ram", "64M", "--page-data", "off");
        Assert.Equal(0, code);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(4, lines.Length);
        Assert.StartsWith("scenario,design,phase,vmSizeKb", lines[0]);
        Assert.StartsWith("cover-letter,none,before,", lines[1]);
        Assert.StartsWith("cover-letter,none,loop,", lines[2]);
        Assert.StartsWith("cover-letter,none,after,", lines[3]);
        int pte = Array.IndexOf(lines[0].Split(','), "pteTables");
        Assert.Equal("2", lines[3].Split(',')[pte]);
    }

    [Fact]
    public void TheTableShowsBeforeAfterAndDelta()
    {
        var (code, output, _) = Run("run", "cover-letter", "--size", "4M", "--ram", "64M");
        Assert.Equal(0, code);
        Assert.Contains("VmPTE", output);
        Assert.Contains("before", output);
        Assert.Contains("delta", output);
        Assert.Contains("PTE tables", output);
    }

    [Fact]
    public void AScenarioThatRunsOutOfMemoryFailsWithAClearMessage()
    {
        var (code, _, err) = Run("run", "cover-letter", "--size", "8M", "--chunk", "8M", "--advice", "free", "--ram", "2M");
        Assert.Equal(1, code);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("simulated RAM ran out (--ram 2 MiB)", line);
        Assert.Contains("--swap", line);
    }

    [Theory]
    [InlineData("50G", 50UL << 30)]
    [InlineData("2M", 2UL << 20)]
    [InlineData("4096", 4096UL)]
    [InlineData("1k", 1024UL)]
    [InlineData("3GB", 3UL << 30)]
    [InlineData("1GiB", 1UL << 30)]
    [InlineData("512mib", 512UL << 20)]
    public void SizesParseWithBinaryUnits(string text, ulong expected)
    {
        Assert.True(Sizes.TryParse(text, out ulong v, out _));
        Assert.Equal(expected, v);
    }
}
