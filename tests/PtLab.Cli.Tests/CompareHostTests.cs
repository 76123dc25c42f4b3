using System.Runtime.CompilerServices;
using System.Text.Json;
using PtLab.Cli;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Workloads.Scenarios;

namespace PtLab.Tests;

/// <summary>A fact that needs the kernel to reset this process's peak RSS (Linux 4.0+, /proc/self/clear_refs).</summary>
public sealed class PeakResetFactAttribute : FactAttribute
{
    public PeakResetFactAttribute()
    {
        if (!ProcessPhase.ResetPeak())
        {
            Skip = "needs Linux with /proc/self/clear_refs (4.0+) to reset this process's peak RSS";
        }
    }
}

/// <summary>compare runs each design as run does, one machine at a time, and says what each cost the host.</summary>
public class CompareHostTests
{
    private static readonly string[] Scale = ["--scale", "0.0005", "--arenas", "8", "--page-data", "off", "--format", "json"];

    private static JsonElement Json(params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.True(code == 0, err);
        return JsonDocument.Parse(output).RootElement;
    }

    [Fact]
    public void CompareProductionReportsWhatRunReportsForEachDesign()
    {
        var designs = Designs.Names;
        var compared = Json(["compare", "production", "--isolation", "shared", .. Scale])
            .GetProperty("designs").EnumerateArray().ToDictionary(d => d.GetProperty("design").GetString()!);
        Assert.Equal(designs.Order(), compared.Keys.Order());
        foreach (var design in designs)
        {
            var run = Json(["run", "production", "--design", design, .. Scale]);
            var c = compared[design];
            // The /proc figures before, at every checkpoint and after, and the counters, are the run's.
            foreach (var field in new[] { "before", "after", "checkpoints", "counters" })
            {
                Assert.True(
                    JsonElement.DeepEquals(run.GetProperty(field), c.GetProperty(field)),
                    $"{design}: compare's {field} {c.GetProperty(field)} differs from run's {run.GetProperty(field)}");
            }

            // Both say what the run cost the host, measured the same way.
            foreach (var host in new[] { run.GetProperty("host").GetProperty("run"), c.GetProperty("host") })
            {
                Assert.True(host.GetProperty("wallSeconds").GetDouble() > 0, $"{design}: {host}");
                Assert.True(host.GetProperty("cpuSeconds").GetDouble() > 0, $"{design}: {host}");
                Assert.True(host.GetProperty("peakRssBytes").GetInt64() > 0, $"{design}: {host}");
            }
        }

        // The default for production is one measured trial per design: compare costs what the runs cost.
        Assert.All(compared.Values, d => Assert.Equal(1, d.GetProperty("hostPerTrial").GetArrayLength()));
    }

    [Fact]
    public void EachRunsMachineIsUnreachableOnceTheRunReturns()
    {
        var designs = new List<WeakReference>();
        var machine = new MachineOptions
        {
            RamBytes = 2L << 30,
            PageData = false,
            Design = () =>
            {
                var d = Designs.Factory("pte-ref")!();
                designs.Add(new WeakReference(d));
                return d;
            },
        };
        var report = RunAndForget(machine);
        Assert.Equal("pte-ref", report.Design);
        Assert.NotNull(report.Host);
        FairTrials.Quiesce();
        Assert.NotEmpty(designs);
        // The design object lives as long as its machine: collected, so the machine was released.
        Assert.All(designs, w => Assert.False(w.IsAlive, "a run's machine is still reachable after the run returned"));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static DesignRunReport RunAndForget(MachineOptions machine) =>
        Compare.Measured(() => Compare.RunOnce(new ProductionScenario(0.0002, 4, 1, Advice.DontNeed, 2, 1), machine, null));

    [PeakResetFact]
    public void APhasesPeakRssIsItsOwn()
    {
        // Raise the peak well above the resident set, give the memory back, then reset: the peak
        // falls back to about the resident set.
        const int Size = 256 << 20;
        var block = GC.AllocateUninitializedArray<byte>(Size);
        for (int i = 0; i < Size; i += 4096)
        {
            block[i] = 1;
        }

        long raised = ProcessPhase.PeakRss()!.Value;
        GC.KeepAlive(block);
        block = null;
        FairTrials.Quiesce();
        Assert.True(ProcessPhase.ResetPeak());
        long reset = ProcessPhase.PeakRss()!.Value;
        Assert.True(reset < raised - (Size / 2), $"peak RSS {reset} B after the reset, {raised} B with the block");
        var usage = ProcessPhase.Start().Stop();
        Assert.Equal("phase", usage.PeakScope);
        Assert.True(usage.PeakRssBytes < raised - (Size / 2), $"the phase's peak {usage.PeakRssBytes} B includes the earlier {raised} B");
    }
}
