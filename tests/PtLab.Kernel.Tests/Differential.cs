using PtLab.Mm;
using PtLab.Workloads;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>Runs one scenario on the model and on the host kernel at the same address.</summary>
internal static class Differential
{
    /// <summary>A 512 GiB slot is one PGD entry: a region alone in it shares no table of any level.</summary>
    public const ulong PgdSlot = 1UL << 39;

    public const ulong MiB = 1UL << 20;

    /// <summary>
    /// Runs the scenario on the model, then on the kernel, each placed <paramref name="offset"/>
    /// bytes into an empty 512 GiB slot of this process. A region alone in a PGD slot shares no
    /// table of any level, so the kernel allocates the same PUD and PMD tables as a fresh model
    /// address space does, and deltas match at every level, not only in PTE-table-sized amounts.
    /// </summary>
    /// <remarks>
    /// The runtime shares the address space: JIT code, tiered recompilation and GC growth can add a
    /// PTE table of their own mid-run, which shows as +4 kB on the kernel side. A first kernel run
    /// is a warm-up that compiles the paths; then up to <see cref="Attempts"/> runs are made, and the
    /// first whose <paramref name="compared"/> checkpoints all match the model is returned (else the
    /// last). The runtime can only add tables, so a match is never produced by noise hiding a real
    /// difference unless the kernel freed exactly what the runtime added in the same window.
    /// </remarks>
    public static (ScenarioResult Model, ScenarioResult Kernel) Run(
        Func<ulong, IScenario> scenario, IReadOnlyList<string> compared, ITestOutputHelper? log = null, ulong offset = 0, string design = "none") =>
        Run(scenario, (m, k) => compared.All(l => PteDelta(k, l) == PteDelta(m, l)), log, offset, design);

    /// <summary>
    /// <see cref="Run(Func{ulong, IScenario}, IReadOnlyList{string}, ITestOutputHelper?, ulong, string)"/>
    /// with the test of a matching kernel run given: the first of up to <see cref="Attempts"/> kernel
    /// runs for which <paramref name="matches"/>(model, kernel) holds is returned, else the last.
    /// </summary>
    public static (ScenarioResult Model, ScenarioResult Kernel) Run(
        Func<ulong, IScenario> scenario, Func<ScenarioResult, ScenarioResult, bool> matches, ITestOutputHelper? log, ulong offset, string design,
        int readAheadKb = 128)
    {
        ScenarioResult model;
        var factory = PtLab.Reclaim.Designs.Factory(design) ?? throw new ArgumentException($"unknown design {design}", nameof(design));
        using (var m = new ModelTarget(new MachineOptions { PageData = false, ZeroPage = MappingDifferential.HostZeroPage, Design = factory, ReadAheadKb = readAheadKb }))
        {
            model = scenario(FreeSlot() + offset).Run(m);
        }

        log?.WriteLine(Describe(model));
        RunOnKernel(scenario, offset); // warm-up
        ScenarioResult kernel = model;
        for (int attempt = 1; attempt <= Attempts; attempt++)
        {
            kernel = RunOnKernel(scenario, offset);
            log?.WriteLine($"attempt {attempt}: {Describe(kernel)}");
            if (matches(model, kernel))
            {
                break;
            }
        }

        return (model, kernel);
    }

    /// <summary>
    /// Runs the scenario on the kernel alone (a warm-up, then up to <see cref="Attempts"/> runs, as
    /// in <see cref="Run"/>) and returns the first run whose VmPTE deltas equal
    /// <paramref name="expectedKb"/> at those checkpoints, else the last.
    /// </summary>
    public static ScenarioResult RunOnKernelExpecting(
        Func<ulong, IScenario> scenario, IReadOnlyDictionary<string, long> expectedKb, ITestOutputHelper? log = null)
    {
        RunOnKernel(scenario, 0);
        ScenarioResult kernel = null!;
        for (int attempt = 1; attempt <= Attempts; attempt++)
        {
            kernel = RunOnKernel(scenario, 0);
            log?.WriteLine($"attempt {attempt}: {Describe(kernel)}");
            if (expectedKb.All(e => PteDelta(kernel, e.Key) == e.Value))
            {
                break;
            }
        }

        return kernel;
    }

    /// <summary>Kernel runs after the warm-up before a mismatch is reported.</summary>
    public const int Attempts = 3;

    private static ScenarioResult RunOnKernel(Func<ulong, IScenario> scenario, ulong offset)
    {
        // Settle the runtime's own memory first, so its tables stay put during the run.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        // RSS is counted in the slot alone: the runtime's heap and stacks move the process's own
        // counters while the scenario runs. VmPTE stays process-wide (see Run's remarks).
        ulong slot = FreeSlot();
        using var kernel = new KernelTarget { RssScope = (slot, slot + PgdSlot) };
        return scenario(slot + offset).Run(kernel);
    }

    private static ulong FreeSlot()
    {
        ulong slot = KernelTarget.FindFreeRegion(PgdSlot, PgdSlot);
        Assert.True(slot != 0, "no empty 512 GiB slot in this process's address space");
        return slot;
    }

    /// <summary>VmPTE at a checkpoint less VmPTE before the scenario's first step, in kB.</summary>
    public static long PteDelta(ScenarioResult r, string label) => Checkpoint(r, label).VmPteKb - r.Before.VmPteKb;

    public static MmStatus Checkpoint(ScenarioResult r, string label)
    {
        foreach (var (l, s) in r.Checkpoints)
        {
            if (l == label)
            {
                return s;
            }
        }

        throw new ArgumentException($"{r.Scenario} on {r.Target} has no checkpoint {label}", nameof(label));
    }

    public static string Describe(ScenarioResult r) =>
        $"{r.Target}: before VmPTE {r.Before.VmPteKb} kB; " +
        string.Join("; ", r.Checkpoints.Select(c => $"{c.Label} {c.Status.VmPteKb - r.Before.VmPteKb:+#;-#;0} kB"));
}
