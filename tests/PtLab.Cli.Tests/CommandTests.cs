using System.Text.Json;
using PtLab.Kernel;
using PtLab.Reclaim;

namespace PtLab.Tests;

/// <summary>The scenario subcommands of run and compare, and bench designs.</summary>
public class CommandTests
{
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PtLab.Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Theory]
    [InlineData("--calls", "run", "halves")]
    [InlineData("--calls", "run", "halves", "--calls", "3")]
    [InlineData("--calls", "run", "halves", "--calls", "two")]
    [InlineData("--size", "run", "halves", "--calls", "2", "--size", "3M")]
    [InlineData("--size", "run", "zeropage", "--size", "1M")]
    [InlineData("--size", "run", "munmap-holes", "--size", "8M")]
    [InlineData("--operations", "run", "mixed", "--operations", "0")]
    [InlineData("--cpus", "run", "mixed", "--cpus", "0")]
    [InlineData("--cpus", "run", "cover-letter", "--cpus", "65")]
    [InlineData("--at", "run", "cover-letter", "--size", "4M", "--at", "0x1001")]
    [InlineData("--at", "run", "zeropage", "--at", "banana")]
    [InlineData("--designs", "compare", "halves", "--calls", "2", "--designs", "none,magic")]
    [InlineData("--designs", "compare", "halves", "--calls", "2", "--designs", "none,none")]
    [InlineData("--designs", "compare", "halves", "--calls", "2", "--kernel", "--designs", "none")]
    [InlineData("--at", "compare", "zeropage", "--kernel", "--at", "0x200000")]
    [InlineData("--kernel", "compare", "mixed", "--kernel")]
    [InlineData("--format", "compare", "zeropage", "--format", "xml")]
    [InlineData("--cpus", "bench", "designs", "--cpus", "0")]
    [InlineData("--cpus", "bench", "designs", "--cpus", "1,x")]
    [InlineData("--seconds", "bench", "designs", "--seconds", "0")]
    [InlineData("--designs", "bench", "designs", "--designs", "bogus")]
    [InlineData("--format", "bench", "designs", "--format", "xml")]
    [InlineData("--rounds", "bench", "litmus", "--rounds", "0")]
    [InlineData("--runs", "bench", "litmus", "--runs", "1001")]
    [InlineData("--format", "bench", "litmus", "--format", "csv")]
    public void BadArgumentsGetOneLineNamingTheOptionAndExitCodeTwo(string option, params string[] args)
    {
        var (code, output, err) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
        Assert.Contains(option, line);
    }

    [Theory]
    [InlineData("run", "halves", "--calls", "--size")]
    [InlineData("run", "zeropage", "--size", "zero page")]
    [InlineData("run", "munmap-holes", "--size", "floor/ceiling")]
    [InlineData("run", "mixed", "--seed", "--operations")]
    [InlineData("compare", "halves", "--designs", "--kernel")]
    [InlineData("compare", "cover-letter", "--chunk", "--kernel")]
    public void HelpDescribesEachScenarioAndItsOptions(string command, string scenario, string word1, string word2)
    {
        var (code, output, _) = Run(command, scenario, "--help");
        Assert.Equal(0, code);
        foreach (var word in new[] { word1, word2, "--ram", "--page-data", "--format", "--cpus", "--at" })
        {
            Assert.Contains(word, output);
        }
    }

    [Fact]
    public void CompareHalvesWithTwoCallsShowsPtReclaimKeepingTheTablesThatAtomicFrees()
    {
        var (code, output, err) = Run("compare", "halves", "--calls", "2", "--size", "64M", "--page-data", "off", "--trials", "1", "--isolation", "shared", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal("halves", root.GetProperty("scenario").GetString());
        Assert.Equal(2, root.GetProperty("parameters").GetProperty("callsPer2M").GetInt32());
        var designs = root.GetProperty("designs").EnumerateArray().ToList();
        Assert.Equal(Designs.Names, designs.Select(d => d.GetProperty("design").GetString()!));
        long Loop(string design) => designs.Single(d => d.GetProperty("design").GetString() == design)
            .GetProperty("checkpoints").EnumerateArray().Single(c => c.GetProperty("label").GetString() == "loop")
            .GetProperty("status").GetProperty("tables").GetProperty("pte").GetInt64();
        Assert.Equal(32, Loop("pt-reclaim"));
        Assert.Equal(0, Loop("atomic"));
        Assert.Equal(32, Loop("none"));
        foreach (var d in designs)
        {
            foreach (var key in new[] { "before", "after", "counters", "checkpoints" })
            {
                Assert.True(d.TryGetProperty(key, out _), key);
            }

            var latency = d.GetProperty("madviseLatencyNs");
            Assert.Equal(66, latency.GetProperty("count").GetInt64()); // 32 x 2 in the loop, the full range, the zero range
            Assert.True(latency.GetProperty("p50").GetInt64() > 0);
            Assert.True(latency.GetProperty("p99").GetInt64() >= latency.GetProperty("p50").GetInt64());
            Assert.True(d.GetProperty("wallSeconds").GetDouble() > 0);
            Assert.Equal(2 * 32 * 512, d.GetProperty("counters").GetProperty("faults").GetInt64()); // the writes, then the zero-page reads
        }
    }

    [Fact]
    public void CompareRunsOnlyTheListedDesignsInTheirOrder()
    {
        var (code, output, _) = Run("compare", "zeropage", "--size", "8M", "--designs", "pt-reclaim,none", "--trials", "1", "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var designs = doc.RootElement.GetProperty("designs").EnumerateArray().ToList();
        Assert.Equal(["pt-reclaim", "none"], designs.Select(d => d.GetProperty("design").GetString()!));
        Assert.Equal(0, designs[0].GetProperty("after").GetProperty("tables").GetProperty("pte").GetInt64());
        Assert.Equal(4, designs[1].GetProperty("after").GetProperty("tables").GetProperty("pte").GetInt64());
    }

    [Fact]
    public void CompareTableAndCsvNameEveryDesign()
    {
        var (code, table, _) = Run("compare", "zeropage", "--size", "4M", "--trials", "1");
        Assert.Equal(0, code);
        var (code2, csv, _) = Run("compare", "zeropage", "--size", "4M", "--trials", "1", "--isolation", "shared", "--format", "csv");
        Assert.Equal(0, code2);
        Assert.StartsWith("scenario,design,phase,", csv);
        foreach (var d in Designs.Names)
        {
            Assert.Contains(d, table);
            Assert.Contains($"zero-page,{d},after,", csv);
        }

        foreach (var row in new[] { "PTE tables", "VmPTE", "VmRSS", "faults", "madvise p50", "madvise p99", "grace periods", "TLB flushes", "wall" })
        {
            Assert.Contains(row, table);
        }
    }

    [Fact]
    public void RunReportsCheckpointsForMultiPhaseScenarios()
    {
        var (code, output, _) = Run("run", "halves", "--calls", "1", "--size", "16M", "--design", "pt-reclaim", "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var cps = doc.RootElement.GetProperty("checkpoints").EnumerateArray().ToList();
        Assert.Equal(["loop", "full-dontneed", "zero-read", "zero-dontneed"], cps.Select(c => c.GetProperty("label").GetString()!));
        Assert.Equal(0, cps[0].GetProperty("status").GetProperty("tables").GetProperty("pte").GetInt64());
        Assert.Equal(8, cps[2].GetProperty("status").GetProperty("tables").GetProperty("pte").GetInt64());
        Assert.Equal("pt-reclaim", doc.RootElement.GetProperty("design").GetString());
    }

    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pt-reclaim")]
    public void TheMixedScenarioRunsOnSeveralCpusAndEachCpuFindsItsOwnData(string design)
    {
        var (code, output, err) = Run("run", "mixed", "--cpus", "3", "--operations", "3000", "--size", "4M", "--design", design, "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal(3, root.GetProperty("parameters").GetProperty("cpus").GetInt32());
        Assert.Equal(3000, root.GetProperty("parameters").GetProperty("operations").GetInt32());
        Assert.True(root.GetProperty("counters").GetProperty("faults").GetInt64() > 0);
        Assert.True(root.GetProperty("after").GetProperty("tables").GetProperty("pte").GetInt64() <= 2);
        Assert.Single(root.GetProperty("checkpoints").EnumerateArray());
    }

    [Fact]
    public void TheMixedScenarioChecksDataWithoutPageBytesToo()
    {
        var (code, _, err) = Run("run", "mixed", "--cpus", "2", "--operations", "2000", "--size", "2M", "--page-data", "off", "--design", "pt-reclaim");
        Assert.True(code == 0, err);
    }

    [Fact]
    public void BenchDesignsSmokeRunGivesEveryDesignAndItsRatioToNone()
    {
        var (code, output, err) = Run("bench", "designs", "--cpus", "1", "--seconds", "0.05", "--isolation", "shared", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var rows = doc.RootElement.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(Designs.Names.Order(), rows.Select(r => r.GetProperty("design").GetString()!).Order());
        foreach (var r in rows)
        {
            Assert.Equal(1, r.GetProperty("cpus").GetInt32());
            Assert.True(r.GetProperty("faults").GetInt64() >= 512);
            Assert.True(r.GetProperty("faultsPerSecond").GetDouble() > 0);
            Assert.True(r.GetProperty("dontneedLatencyNs").GetProperty("count").GetInt64() >= 1);
            Assert.True(r.GetProperty("ratioToNone").GetProperty("faultsPerSecond").GetDouble() > 0);
        }

        var none = rows.Single(r => r.GetProperty("design").GetString() == "none");
        Assert.Equal(1.0, none.GetProperty("ratioToNone").GetProperty("faultsPerSecond").GetDouble());
    }

    [Fact]
    public void BenchLitmusKeepsTheOwnerAndAnotherCpuApartWithEveryBarrier()
    {
        var (code, output, err) = Run("bench", "litmus", "--rounds", "5000", "--runs", "2", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.True(doc.RootElement.GetProperty("safe").GetBoolean());
        var rows = doc.RootElement.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(
            ["mmap_lock False", "mmap_lock True", "tlb False", "tlb True"],
            rows.Select(r => $"{r.GetProperty("lock").GetString()} {r.GetProperty("barrier").GetBoolean()}").Order());
        foreach (var r in rows)
        {
            Assert.Equal(2, r.GetProperty("bothInPerRun").GetArrayLength());
            if (r.GetProperty("barrier").GetBoolean())
            {
                Assert.Equal(0, r.GetProperty("bothIn").GetInt64());
            }
        }
    }
}

/// <summary>compare --kernel reads this process's VmPTE, so it runs alone, after the parallel tests.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HostKernelCollection
{
    public const string Name = "host kernel";
}

[Collection(HostKernelCollection.Name)]
public class KernelCompareTests
{
    [Fact]
    public void CompareWithTheKernelGivesBothDeltasAndTheTableDifference()
    {
        var (code, output, err) = CommandTests.Run("compare", "zeropage", "--size", "8M", "--kernel", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        var info = KernelInfo.Probe();
        Assert.Equal(info.MatchingDesign, root.GetProperty("modelDesign").GetString());
        var model = root.GetProperty("model");
        foreach (var k in new[] { "vmSizeKb", "vmRssKb", "rssAnonKb", "vmSwapKb", "vmPteKb" })
        {
            Assert.Equal(JsonValueKind.Number, model.GetProperty(k).ValueKind);
        }

        Assert.Contains("512 GiB", root.GetProperty("method").GetString());
        if (!KernelTarget.IsSupported)
        {
            Assert.Equal(JsonValueKind.Null, root.GetProperty("kernel").ValueKind);
            Assert.Contains("running the model alone", err);
            return;
        }

        var diff = root.GetProperty("tableDifference");
        var kernel = root.GetProperty("kernel");
        Assert.Equal(JsonValueKind.Number, kernel.GetProperty("tables").GetProperty("pte").ValueKind);
        var read = root.GetProperty("checkpoints").EnumerateArray().Single(c => c.GetProperty("label").GetString() == "read");
        Assert.Equal(4 + 1 + 1, read.GetProperty("model").GetProperty("tables").EnumerateObject().Sum(p => p.Value.GetInt64()));
        foreach (var level in new[] { "pte", "pmd", "pud" })
        {
            Assert.Equal(0, diff.GetProperty(level).GetInt64());
            Assert.Equal(0, read.GetProperty("tableDifference").GetProperty(level).GetInt64());
        }
    }
}
