using System.Text.Json;

namespace PtLab.Tests;

/// <summary><c>check --exhaustive</c>: counts every schedule within the preemption bound, replays one by its choices, and refuses options that sample.</summary>
public class CheckExhaustiveTests
{
    [Fact]
    public void AnExhaustiveCheckCountsTheSchedulesAndTheViolations()
    {
        var (code, output, err) = CommandTests.Run("check", "ptreclaim-trylock", "--design", "pt-reclaim", "--exhaustive", "--preemptions", "0", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        // Three CPUs that never preempt one another: one schedule per order of the three programs.
        Assert.Equal(6, root.GetProperty("schedules").GetInt64());
        Assert.Equal(0, root.GetProperty("violations").GetInt64());
        Assert.True(root.GetProperty("complete").GetBoolean());
    }

    [Fact]
    public void AFailingScheduleReplaysFromTheChoicesItPrints()
    {
        var (code, output, _) = CommandTests.Run(
            "check", "ptreclaim-trylock", "--design", "pt-reclaim", "--mutation", "skip-pmd-recheck", "--exhaustive", "--preemptions", "1", "--format", "json");
        Assert.Equal(1, code);
        using var doc = JsonDocument.Parse(output);
        string choices = doc.RootElement.GetProperty("firstFailingChoices").GetString()!;
        string violation = doc.RootElement.GetProperty("firstViolation").GetString()!;

        var (replayCode, replay, err) = CommandTests.Run(
            "check", "ptreclaim-trylock", "--design", "pt-reclaim", "--mutation", "skip-pmd-recheck", "--exhaustive", "--preemptions", "1", "--choices", choices);
        Assert.True(replayCode == 1, err);
        Assert.Contains($"violation: {violation}", replay);
    }

    [Theory]
    [InlineData("--preemptions", "check", "gup-fast-free", "--preemptions", "1")]
    [InlineData("--all", "check", "--all")]
    [InlineData("--schedules", "check", "gup-fast-free", "--exhaustive", "--schedules", "5")]
    [InlineData("--strategy", "check", "gup-fast-free", "--exhaustive", "--strategy", "pct")]
    [InlineData("--preemptions", "check", "gup-fast-free", "--exhaustive", "--preemptions", "9")]
    [InlineData("--all", "check", "gup-fast-free", "--exhaustive", "--all")]
    [InlineData("--choices", "check", "gup-fast-free", "--exhaustive", "--choices", "0,x")]
    public void OptionsThatMeanNothingWithOrWithoutExhaustiveAreRefused(string option, params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.True(code == 2, $"exit {code}: {output}{err}");
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
        Assert.Contains(option, line);
    }
}
