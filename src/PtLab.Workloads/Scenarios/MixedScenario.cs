using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// Several CPUs run a seeded random mix of writes, reads, MADV_DONTNEED, MADV_FREE, read-touches
/// (zero page) and munmap + mmap over one shared region. CPU c owns every page whose index is c
/// modulo the CPU count, so every PTE table is shared by all CPUs while each CPU can check its
/// own data: a read must return what that CPU last wrote, zero after DONTNEED or a remap, and
/// either of the two after MADV_FREE (reclaim may or may not have discarded the page).
/// </summary>
/// <remarks>
/// Needs an <see cref="IMultiCpuTarget"/> with <see cref="Cpus"/> CPUs that is also an
/// <see cref="IDataTarget"/> (the model). The operations per CPU are bounded, and the run is
/// reproducible up to the CPUs' interleaving.
/// </remarks>
public sealed class MixedScenario : IScenario
{
    /// <summary>Checkpoint after every CPU finished its operations and final check.</summary>
    public const string AfterOperations = "operations";

    /// <summary>Creates the scenario.</summary>
    /// <param name="cpus">CPUs that run the mix, at least 1.</param>
    /// <param name="operations">Operations per CPU, at least 1.</param>
    /// <param name="seed">Seed of each CPU's random choices (CPU c uses seed + c).</param>
    /// <param name="size">Bytes of the shared region: a multiple of 2 MiB holding at least one page per CPU.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public MixedScenario(int cpus = 2, int operations = 20_000, int seed = 1, ulong size = 16UL << 20, ulong at = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(operations, 1);
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        if (size / Page < (ulong)cpus)
        {
            throw new ArgumentException($"size must hold at least one page per CPU, got {size} for {cpus} CPUs", nameof(size));
        }

        Cpus = cpus;
        Operations = operations;
        Seed = seed;
        Size = size;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "mixed";

    /// <summary>CPUs running the mix.</summary>
    public int Cpus { get; }

    /// <summary>Operations per CPU.</summary>
    public int Operations { get; }

    /// <summary>The random seed.</summary>
    public int Seed { get; }

    /// <summary>Bytes of the shared region.</summary>
    public ulong Size { get; }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["cpus"] = Cpus.ToString(CultureInfo.InvariantCulture),
        ["operations"] = Operations.ToString(CultureInfo.InvariantCulture),
        ["seed"] = Seed.ToString(CultureInfo.InvariantCulture),
        ["size"] = Size.ToString(CultureInfo.InvariantCulture),
        ["at"] = Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target is not IMultiCpuTarget multi || multi.CpuCount < Cpus)
        {
            throw new ScenarioException(
                $"mixed needs a target with {Cpus} CPUs; {target.Name} has {(target as IMultiCpuTarget)?.CpuCount ?? 1}");
        }

        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        var views = Enumerable.Range(0, Cpus).Select(multi.OnCpu).ToArray();
        if (views.Any(v => v is not IDataTarget))
        {
            throw new ScenarioException($"mixed checks page data, which {target.Name} cannot do");
        }

        long done = 0;
        long total = (long)Cpus * Operations;
        var sw = Stopwatch.StartNew();
        try
        {
            MultiCpuRunner.Run(Enumerable.Range(0, Cpus).ToArray(), c =>
                RunCpu((IDataTarget)views[c], c, p, () =>
                {
                    long n = Interlocked.Increment(ref done);
                    if (c == 0 && progress is not null && n % 1024 == 0)
                    {
                        progress(Math.Min(1.0, (double)n / total));
                    }
                }));
        }
        catch (AggregateException e) when (e.InnerException is ScenarioException inner)
        {
            throw new ScenarioException($"{e.Message.Split(':')[0]}: {inner.Message}");
        }

        sw.Stop();
        progress?.Invoke(1);
        var after = target.Status();
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = after,
            Checkpoints = [(AfterOperations, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }

    private void RunCpu(IDataTarget t, int cpu, ulong region, Action step)
    {
        int pages = (int)(Size / Page);
        int mine = ((pages - cpu - 1) / Cpus) + 1; // pages cpu, cpu + Cpus, ... below pages
        // Two candidate fingerprints per owned page: they differ only after MADV_FREE, until a reset.
        var expected = new ulong[mine];
        var alternative = new ulong[mine];
        var rng = new Random(Seed + cpu);
        ulong Va(int i) => region + ((ulong)((i * Cpus) + cpu) * Page);

        void Check(int i)
        {
            var r = t.Fingerprint(Va(i), out ulong f);
            if (!r.Ok)
            {
                throw new ScenarioException($"reading 0x{Va(i):x} failed: {r}");
            }

            if (f != expected[i] && f != alternative[i])
            {
                throw new ScenarioException(
                    $"page 0x{Va(i):x} reads 0x{f:x}, expected 0x{expected[i]:x}{(alternative[i] != expected[i] ? $" or 0x{alternative[i]:x}" : "")}");
            }
        }

        for (int op = 0; op < Operations; op++)
        {
            int i = rng.Next(mine);
            ulong va = Va(i);
            switch (rng.Next(20))
            {
                case < 8:
                    byte v = (byte)rng.Next(1, 256);
                    var w = t.WriteByte(va, v);
                    if (!w.Ok)
                    {
                        throw new ScenarioException($"writing 0x{va:x} failed: {w}");
                    }

                    expected[i] = t.FingerprintAfterWrite(expected[i], va, v);
                    alternative[i] = t.FingerprintAfterWrite(alternative[i], va, v);
                    break;
                case < 12:
                    Check(i);
                    break;
                case < 15:
                    Advise(t, va, Page, Advice.DontNeed);
                    expected[i] = alternative[i] = 0;
                    break;
                case < 17:
                    Advise(t, va, Page, Advice.Free);
                    alternative[i] = 0;
                    break;
                case < 18:
                    Touch(t, va, Page, write: false);
                    break;
                default:
                    Unmap(t, va, Page);
                    var m = t.Mmap(va, Page, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve | MapFlags.FixedNoReplace);
                    if (!m.Ok || m.Address != va)
                    {
                        throw new ScenarioException($"remapping 0x{va:x} failed: {m}");
                    }

                    expected[i] = alternative[i] = 0;
                    break;
            }

            step();
        }

        for (int i = 0; i < mine; i++)
        {
            Check(i);
        }
    }
}
