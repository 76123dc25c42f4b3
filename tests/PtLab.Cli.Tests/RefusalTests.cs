using System.Text.Json;

namespace PtLab.Tests;

/// <summary>Options that mean nothing in their context are refused, each with the reason, in one line and exit code 2.</summary>
public class RefusalTests
{
    private static string Refused(params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.True(code == 2, $"exit {code}: {output}{err}");
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
        return line;
    }

    [Theory]
    [InlineData("run", "cover-letter", "--size", "4M", "--switch-back", "off")]
    [InlineData("run", "cover-letter", "--size", "4M", "--switch-back", "on", "--design", "atomic")]
    [InlineData("compare", "zeropage", "--size", "4M", "--switch-back", "off", "--designs", "none,pt-reclaim")]
    public void SwitchBackIsRefusedWithoutADesignThatSwitchesBack(params string[] args)
    {
        string line = Refused(args);
        Assert.Contains("--switch-back", line);
        Assert.Contains("applies to pte-ref", line);
    }

    [Fact]
    public void SwitchBackIsTakenWhereADesignSwitchesBack()
    {
        var (code, output, err) = CommandTests.Run("compare", "zeropage", "--size", "4M", "--switch-back", "off", "--designs", "none,pte-ref", "--trials", "1", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal("off", doc.RootElement.GetProperty("parameters").GetProperty("switchBack").GetString());
    }

    [Fact]
    public void AtIsRefusedForAScenarioThatNeverRunsOnTheKernel()
    {
        Assert.Contains("runs on the model only", Refused("run", "mixed", "--at", "0x40000000"));
    }

    [Fact]
    public void SwapIsRefusedWhenTheWorkingSetFitsInRamAndTakenWhenItDoesNot()
    {
        string line = Refused("run", "mixed", "--swap", "16M");
        Assert.Contains("--swap is never used", line);
        Assert.Contains("--ram below the working set", line);
        var (code, _, err) = CommandTests.Run("run", "mixed", "--swap", "16M", "--ram", "8M", "--operations", "200", "--page-data", "off");
        Assert.True(code == 0, err);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pt-reclaim")]
    public void CheckRefusesADesignThatTheScenarioDoesNotTest(string design)
    {
        string line = Refused("check", "percpu-switch", "--design", design);
        Assert.Contains($"--design {design} tests nothing", line);
        Assert.Contains("use --design pte-ref", line);
    }

    [Theory]
    [InlineData("--base-seed", "check", "gup-fast-free", "--seed", "1", "--base-seed", "2")]
    [InlineData("--schedules", "check", "gup-fast-free", "--seed", "1", "--schedules", "5")]
    [InlineData("--last", "check", "gup-fast-free", "--last", "5")]
    [InlineData("--last", "check", "gup-fast-free", "--seed", "1", "--last", "-1")]
    [InlineData("--trials", "compare", "zeropage", "--trials", "0")]
    [InlineData("--trials", "bench", "designs", "--trials", "0")]
    public void CheckAndTimingOptionsThatMeanNothingAreRefused(string option, params string[] args)
    {
        Assert.Contains(option, Refused(args));
    }

    [Fact]
    public void CheckSaysWhichScenariosCatchAMutationTheChosenOneDoesNot()
    {
        var (code, output, err) = CommandTests.Run("check", "walker-dontneed-fault", "--design", "atomic", "--mutation", "skip-rcu-deferral", "--schedules", "2");
        Assert.True(code is 0 or 1, err);
        Assert.StartsWith("note: walker-dontneed-fault is not shown to catch skip-rcu-deferral; the scenarios that are: gup-fast-free", output);

        var (_, help, _) = CommandTests.Run("check", "--help");
        Assert.Contains("skip-pmd-recheck (caught by ptreclaim-trylock)", help.ReplaceLineEndings(" ").Replace("  ", " ", StringComparison.Ordinal));
    }

    [Fact]
    public void EveryMutationIsShownCaughtBySomeScenario()
    {
        foreach (var name in PtLab.Reclaim.Mutations.Names.Where(n => n != "none"))
        {
            var m = PtLab.Reclaim.Mutations.Parse(name)!.Value;
            Assert.Contains(PtLab.Systematic.SystematicScenarios.All, s => s.Catches.Contains(m));
        }
    }
}
