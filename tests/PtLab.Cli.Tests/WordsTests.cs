using System.Text.Json;

namespace PtLab.Tests;

/// <summary>Errors in the user's words, checkpoints in every format, and the small things a reader trips over.</summary>
public class WordsTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CommandTests.Run(args);

    private static string UsageLine(params string[] args)
    {
        var (code, output, err) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
        Assert.DoesNotContain("System.", line);
        return line;
    }

    [Theory]
    [InlineData("a whole number", "run", "cover-letter", "--cpus", "abc")]
    [InlineData("a number", "soak", "--minutes", "abc")]
    [InlineData("a number", "bench", "designs", "--seconds", "x")]
    [InlineData("a whole number", "check", "gup-fast-free", "--schedules", "many")]
    public void AValueOfTheWrongKindIsNamedInWordsNotDotNetTypes(string expected, params string[] args)
    {
        string line = UsageLine(args);
        Assert.Contains(expected, line);
        Assert.Contains(args[^2], line);
    }

    [Theory]
    [InlineData("run")]
    [InlineData("compare")]
    [InlineData("run", "bogus")]
    [InlineData("compare", "bogus")]
    public void AMissingOrUnknownScenarioListsTheScenarios(params string[] args)
    {
        string line = UsageLine(args);
        foreach (var s in new[] { "cover-letter", "halves", "zeropage", "munmap-holes", "mixed" })
        {
            Assert.Contains(s, line);
        }
    }

    [Fact]
    public void AnUnknownCommandListsTheCommandsAndCheckWithoutAScenarioListsItsScenarios()
    {
        Assert.Contains("demo, run, compare, bench, check, soak", UsageLine("bogus"));
        Assert.Contains("gup-fast-free", UsageLine("check"));
    }

    [Theory]
    [InlineData("--designs", "compare", "cover-letter", "--design", "none")]
    [InlineData("--size", "run", "cover-letter", "--sise", "1G")]
    public void AMisspeltOptionGetsTheNearestOne(string near, params string[] args)
    {
        Assert.Contains($"did you mean {near}?", UsageLine(args));
    }

    [Fact]
    public void RunShowsEveryCheckpointInTheTableWhereTheDesignsDiffer()
    {
        static string LoopRow(string design)
        {
            var (code, output, err) = Run("run", "halves", "--calls", "2", "--size", "64M", "--page-data", "off", "--design", design);
            Assert.True(code == 0, err);
            Assert.Contains("before: right after the scenario's mapping", output);
            return output.Split('\n').Single(l => l.TrimStart().StartsWith("loop ", StringComparison.Ordinal));
        }

        // At the loop checkpoint pt-reclaim holds every table (two calls per 2 MiB), atomic none.
        Assert.EndsWith("32            1            1", LoopRow("pt-reclaim").TrimEnd());
        Assert.EndsWith(" 0            1            1", LoopRow("atomic").TrimEnd());
    }

    [Fact]
    public void CheckReplayNumbersOnlySchedulingPointsSoTheLastNumberIsTheStepCount()
    {
        var (code, output, err) = Run("check", "gup-fast-free", "--design", "pte-ref", "--seed", "1", "--last", "100000");
        Assert.True(code == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        long steps = long.Parse(lines[0].Split(": ")[1].Split(' ')[0].Replace(",", "", StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture);
        var numbered = lines.Skip(1).Where(l => l.Length > 6 && char.IsDigit(l[5])).ToList();
        Assert.Equal(steps, numbered.Count);
        Assert.Equal(steps.ToString(System.Globalization.CultureInfo.InvariantCulture), numbered[^1][..6].Trim());
        Assert.Contains(lines, l => l.Contains("-- madvise", StringComparison.Ordinal) && l[..6].Trim().Length == 0);
    }

    [Fact]
    public void CountsAgreeWithTheirNouns()
    {
        var (_, output, _) = Run("check", "gup-fast-free", "--design", "atomic", "--schedules", "1");
        Assert.Contains("1 schedule,", output);
        Assert.Contains("0 violations", output);
    }
}

/// <summary>compare --kernel compares what the kernel side measures exactly, and labels the rest.</summary>
[Collection(HostKernelCollection.Name)]
public class KernelWordsTests
{
    [Fact]
    public void CompareKernelComparesVmPteTablesAndTheSlotsRssAndShowsVmSizeAsInformational()
    {
        var (code, output, err) = CommandTests.Run("compare", "zeropage", "--size", "8M", "--kernel");
        Assert.True(code == 0, err);
        Assert.Contains("PMD tables (kernel: inferred)", output);
        Assert.Contains("PTE tables (kernel: VmPTE/4 kB less PMD, PUD)", output);
        string Line(string name) => output.Split('\n').Single(l => l.TrimStart().StartsWith(name, StringComparison.Ordinal));

        // The slot's RSS is compared: a zero-page read adds none on a zero-page host, 8 MiB of
        // RssAnon on one whose read faults take private pages, on both sides alike.
        string rss = Line("VmRSS kB");
        Assert.Contains("the slot's VMAs", rss);
        Assert.DoesNotContain("not compared", rss);
        Assert.Matches(@"\s0\s*$", rss);
        Assert.EndsWith("not compared", Line("VmSize kB").TrimEnd());

        var (code2, json, err2) = CommandTests.Run("compare", "zeropage", "--size", "8M", "--kernel", "--format", "json");
        Assert.True(code2 == 0, err2);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(
            ["vmPteKb", "pteTables", "pmdTables", "pudTables", "vmRssKb", "rssAnonKb", "rssFileKb", "rssShmemKb"],
            doc.RootElement.GetProperty("compared").EnumerateArray().Select(e => e.GetString()!));
        Assert.Contains("runtime", doc.RootElement.GetProperty("informational").GetString());
        var root = doc.RootElement;
        Assert.Equal(root.GetProperty("model").GetProperty("rssAnonKb").GetInt64(), root.GetProperty("kernel").GetProperty("rssAnonKb").GetInt64());
        long readAnonKb = PtLab.Kernel.KernelInfo.Probe().ModelZeroPage ? 0 : 8 * 1024;
        var read = root.GetProperty("checkpoints").EnumerateArray().Single(c => c.GetProperty("label").GetString() == "read");
        Assert.Equal(readAnonKb, read.GetProperty("kernel").GetProperty("rssAnonKb").GetInt64());
        Assert.Equal(readAnonKb, read.GetProperty("model").GetProperty("rssAnonKb").GetInt64());
    }
}
