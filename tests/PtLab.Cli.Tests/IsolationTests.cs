using System.Text.Json;
using PtLab.Cli;
using PtLab.Workloads;

namespace PtLab.Tests;

/// <summary>
/// compare's runs in processes of their own (<c>--isolation process</c>, the default): the same
/// figures as runs that share this process, and each measured run in a process no other run used.
/// </summary>
public class IsolationTests
{
    private static JsonElement Json(params string[] args) => ScoreboardTests.Json(args);

    private static Dictionary<string, JsonElement> ByDesign(JsonElement compare) =>
        compare.GetProperty("designs").EnumerateArray().ToDictionary(d => d.GetProperty("design").GetString()!, d => d);

    /// <summary>Every figure that does not depend on timing, as text: what must not depend on where a run ran.</summary>
    private static string Figures(JsonElement design) => string.Join(
        "\n",
        new[] { "before", "after", "counters", "checkpoints", "profile", "trialsAgree" }.Select(k => k + "=" + design.GetProperty(k).GetRawText()));

    private static int[] ProcessIds(JsonElement design) =>
        [.. design.GetProperty("hostPerTrial").EnumerateArray().Select(h => h.GetProperty("processId").GetInt32())];

    [Fact]
    public void ProcessIsolationGivesTheFiguresOfSharedRunsWithEachRunInAProcessOfItsOwn()
    {
        string[] args = ["compare", "zeropage", "--size", "8M", "--designs", "none,pte-ref,pt-reclaim", "--trials", "2", "--profile", "--format", "json"];
        var isolated = Json([.. args]);
        var shared = Json([.. args, "--isolation", "shared"]);
        Assert.Equal("process", isolated.GetProperty("isolation").GetString());
        Assert.Equal("shared", shared.GetProperty("isolation").GetString());
        Assert.Equal(shared.GetProperty("orders").GetRawText(), isolated.GetProperty("orders").GetRawText());

        var a = ByDesign(isolated);
        var b = ByDesign(shared);
        Assert.Equal(b.Keys, a.Keys);
        foreach (var design in a.Keys)
        {
            Assert.Equal(Figures(b[design]), Figures(a[design]));
            Assert.True(a[design].GetProperty("host").GetProperty("peakRssBytes").GetInt64() > 0, design);
        }

        // Six runs, six processes, none of them this one; shared runs all ran here.
        var isolatedIds = a.Values.SelectMany(ProcessIds).ToList();
        Assert.Equal(6, isolatedIds.Count);
        Assert.Equal(6, isolatedIds.Distinct().Count());
        Assert.DoesNotContain(Environment.ProcessId, isolatedIds);
        Assert.All(b.Values.SelectMany(ProcessIds), id => Assert.Equal(Environment.ProcessId, id));
    }

    [Fact]
    public void TheTableSaysWhereTheRunsRan()
    {
        var (code, isolated, err) = CommandTests.Run("compare", "zeropage", "--size", "4M", "--designs", "none,pt-reclaim", "--trials", "1");
        Assert.True(code == 0, err);
        Assert.Contains("every run in a process of its own", isolated);
        var (code2, shared, err2) = CommandTests.Run("compare", "zeropage", "--size", "4M", "--designs", "none,pt-reclaim", "--trials", "1", "--isolation", "shared");
        Assert.True(code2 == 0, err2);
        Assert.Contains("the compiled code shared", shared);
    }

    [Fact]
    public void TheScoreboardRunsEachDesignInAProcessOfItsOwnWithTheSameTables()
    {
        string[] args = ["compare", "--scenarios", "zeropage-fill", "--designs", "none,occupancy", "--format", "json"];
        var isolated = Assert.Single(Json([.. args]).GetProperty("scenarios").EnumerateArray()).GetProperty("compare");
        var shared = Assert.Single(Json([.. args, "--isolation", "shared"]).GetProperty("scenarios").EnumerateArray()).GetProperty("compare");
        Assert.Equal("process", isolated.GetProperty("isolation").GetString());
        var a = ByDesign(isolated);
        var b = ByDesign(shared);
        foreach (var design in b.Keys)
        {
            Assert.Equal(b[design].GetProperty("after").GetRawText(), a[design].GetProperty("after").GetRawText());
            Assert.Equal(b[design].GetProperty("counters").GetRawText(), a[design].GetProperty("counters").GetRawText());
        }

        var ids = a.Values.SelectMany(ProcessIds).ToList();
        Assert.Equal(2, ids.Distinct().Count());
        Assert.DoesNotContain(Environment.ProcessId, ids);
    }

    [Fact]
    public void ARunWhoseProcessFailsIsAnErrorNamingTheDesignAndWhatItPrinted()
    {
        var e = Assert.Throws<ScenarioException>(() => IsolatedRuns.Run(["compare", "zeropage", "--size", "4M"], "bogus"));
        Assert.Contains("bogus's run (a process of its own) exited with 2", e.Message);
        Assert.Contains("--isolated-run: unknown design 'bogus'", e.Message);
    }

    [Theory]
    [InlineData("--isolation", "compare", "zeropage", "--isolation", "threads")]
    [InlineData("--isolation", "compare", "--scenarios", "reuse", "--isolation", "none")]
    [InlineData("--isolation", "compare", "zeropage", "--kernel", "--isolation", "shared")]
    [InlineData("--isolation", "bench", "designs", "--isolation", "both")]
    [InlineData("--isolated-scenario", "compare", "--scenarios", "reuse", "--isolated-run", "none", "--isolated-report", "r.json", "--isolated-scenario", "bogus")]
    public void BadIsolationArgumentsAreUsageErrors(string option, params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(option, err);
    }
}
