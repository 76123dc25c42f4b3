using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using PtLab.Workloads.Allocators;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// The seed's production process, reproduced by a jemalloc-like allocator: VIRT 55 TiB, RES
/// 590 GiB and VmPTE 110 GiB under a design that never frees tables, times <see cref="Scale"/>.
/// </summary>
/// <remarks>
/// <para>
/// Each of <see cref="Arenas"/> arenas (<see cref="ExtentArena"/>) serves bursts of requests: in
/// burst <c>v</c> of <see cref="Visits"/> an arena allocates extents (size classes of 4 per doubling,
/// 16 KiB to 64 MiB, log-uniform) until its live bytes reach <c>(v + 1) / Visits</c> of its share of
/// the target VIRT, then frees them all. A short-lived extent is written sparsely: its first pages
/// (headers) and the first page of each 2 MiB it spans. Freed extents are dirty and reused first;
/// after <see cref="Decay"/> bursts they are purged with <see cref="Purge"/> and become clean.
/// Address space is mapped in chunks growing geometrically per arena and never unmapped, so VIRT is
/// the sum of the arenas' peaks, and every 2 MiB of it saw a write: under <c>none</c> each keeps its
/// PTE table. Long-lived extents, written in full and never freed, are allocated whenever the
/// live long-lived bytes fall below the RES target's share of the VIRT reached so far, so RES ends
/// near its target.
/// </para>
/// </remarks>
public sealed class ProductionScenario : IScenario
{
    /// <summary>The seed's VIRT: 55 TiB.</summary>
    public const ulong SeedVirt = 55UL << 40;

    /// <summary>The seed's RES: 590 GiB.</summary>
    public const ulong SeedRes = 590UL << 30;

    /// <summary>Checkpoint after the last burst.</summary>
    public const string AfterBursts = "bursts";

    private const ulong Page = 4096;
    private const ulong TwoMiB = 2UL << 20;
    private const int HeaderPages = 4;

    /// <summary>Creates the scenario.</summary>
    /// <param name="scale">Fraction of the seed's sizes (0 &lt; scale &lt;= 2).</param>
    /// <param name="arenas">Arenas (1-4096).</param>
    /// <param name="visits">Bursts per arena (1-64).</param>
    /// <param name="purge">MADV_DONTNEED or MADV_FREE.</param>
    /// <param name="decay">Bursts a freed extent stays dirty before it is purged (0-1000).</param>
    /// <param name="seed">Seed of the size and order choices.</param>
    public ProductionScenario(double scale = 1.0, int arenas = 64, int visits = 2, Advice purge = Advice.DontNeed, int decay = 2, int seed = 1)
    {
        if (!(scale > 0 && scale <= 2))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, "scale must be above 0 and at most 2");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(arenas, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(arenas, 4096);
        ArgumentOutOfRangeException.ThrowIfLessThan(visits, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(visits, 64);
        ArgumentOutOfRangeException.ThrowIfLessThan(decay, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(decay, 1000);
        if (purge is not (Advice.DontNeed or Advice.Free))
        {
            throw new ArgumentException($"purge must be dontneed or free, got {purge}", nameof(purge));
        }

        Scale = scale;
        Arenas = arenas;
        Visits = visits;
        Purge = purge;
        Decay = decay;
        Seed = seed;
        VirtTarget = Math.Max(TwoMiB * (ulong)arenas, (ulong)(SeedVirt * scale) & ~(TwoMiB - 1));
        ResTarget = (ulong)(SeedRes * scale) & ~(Page - 1);
        ulong perArena = VirtTarget / (ulong)arenas;
        MaxExtent = Math.Clamp(PowerOfTwoBelow(perArena / 8), 64UL << 10, 64UL << 20);
        MaxGrow = Math.Clamp(PowerOfTwoBelow(perArena / 8), TwoMiB, 64UL << 30);
    }

    /// <inheritdoc/>
    public string Name => "production";

    /// <summary>Fraction of the seed's sizes.</summary>
    public double Scale { get; }

    /// <summary>Arenas.</summary>
    public int Arenas { get; }

    /// <summary>Bursts per arena.</summary>
    public int Visits { get; }

    /// <summary>How dirty extents are purged.</summary>
    public Advice Purge { get; }

    /// <summary>Bursts a freed extent stays dirty.</summary>
    public int Decay { get; }

    /// <summary>Seed of the random choices.</summary>
    public int Seed { get; }

    /// <summary>The VIRT the arenas' peaks add up to.</summary>
    public ulong VirtTarget { get; }

    /// <summary>The RES the long-lived extents add up to.</summary>
    public ulong ResTarget { get; }

    /// <summary>The largest extent size class used.</summary>
    public ulong MaxExtent { get; }

    /// <summary>The largest chunk an arena maps at once.</summary>
    public ulong MaxGrow { get; }

    /// <summary>
    /// Bytes of the pages written sparsely (headers and one page per 2 MiB) by the bursts whose
    /// extents are not purged yet: the current one and the <see cref="Decay"/> before it.
    /// </summary>
    public ulong ScatteredBytes
    {
        get
        {
            ulong perArena = VirtTarget / (ulong)Arenas;
            var classes = SizeClasses(MaxExtent);
            double mean = (classes[^1] - classes[0]) / Math.Log((double)classes[^1] / classes[0]);
            ulong perBurst = (perArena / 512) + (ulong)(perArena / Math.Max(mean, 1) * HeaderPages * Page);
            return perBurst * (ulong)(Decay + 2);
        }
    }

    /// <summary>Written pages live at once at most, short of reclaim: the long-lived set and the scattered pages not purged yet (all of them with MADV_FREE).</summary>
    public ulong PeakPopulatedBytes => ResTarget + (Purge == Advice.Free ? (VirtTarget / 512 * (ulong)(Visits + 1)) + ScatteredBytes : ScatteredBytes);

    /// <summary>
    /// A bound on the page tables' host memory: every PTE table's descriptor (a table per 2 MiB of
    /// VIRT), the long-lived set's entries in dense tables, and a group of 32 entries (and a slot)
    /// per scattered page.
    /// </summary>
    public long TableHostBytes
    {
        get
        {
            long tables = (long)(VirtTarget / TwoMiB) + (long)(VirtTarget >> 30) + 2;
            long dense = (long)(ResTarget / Page) * 8 * 11 / 10;
            long scattered = (long)((PeakPopulatedBytes - ResTarget) / Page) * (256 + 72);
            return (tables * 24) + dense + scattered + (tables / 512 * 4200);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["scale"] = Scale.ToString(CultureInfo.InvariantCulture),
        ["arenas"] = Arenas.ToString(CultureInfo.InvariantCulture),
        ["visits"] = Visits.ToString(CultureInfo.InvariantCulture),
        ["purge"] = Purge == Advice.Free ? "free" : "dontneed",
        ["decay"] = Decay.ToString(CultureInfo.InvariantCulture),
        ["seed"] = Seed.ToString(CultureInfo.InvariantCulture),
        ["virtTarget"] = VirtTarget.ToString(CultureInfo.InvariantCulture),
        ["resTarget"] = ResTarget.ToString(CultureInfo.InvariantCulture),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        var before = target.Status();
        var rng = new Random(Seed);
        var classes = SizeClasses(MaxExtent);
        double logMin = Math.Log(classes[0]), logMax = Math.Log(classes[^1]);
        ulong retained = 0;
        ulong longLived = 0;
        ulong Map(ulong length)
        {
            var m = target.Mmap(0, length, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve);
            if (!m.Ok)
            {
                throw new ScenarioException($"production: mmap of {length} bytes failed after {retained} bytes of arenas: {m.Error}");
            }

            retained += length;
            return m.Address;
        }

        var arenas = new ExtentArena[Arenas];
        for (int i = 0; i < arenas.Length; i++)
        {
            arenas[i] = new ExtentArena(Map, TwoMiB, MaxGrow);
        }

        void Purged(ulong addr, ulong length) => ScenarioSteps.Advise(target, addr, length, Purge);

        ulong perArena = VirtTarget / (ulong)Arenas;
        var burst = new List<(ulong Addr, ulong Length)>();
        var sw = Stopwatch.StartNew();
        long epoch = 0;
        int bursts = Visits * Arenas;
        for (int v = 0; v < Visits; v++)
        {
            ulong peak = perArena / (ulong)Visits * (ulong)(v + 1);
            for (int a = 0; a < Arenas; a++)
            {
                epoch++;
                var arena = arenas[a];
                while (arena.Live < peak)
                {
                    ulong len = classes[Array.BinarySearch(classes, Quantize(Math.Exp(logMin + (rng.NextDouble() * (logMax - logMin))), classes))];
                    ulong addr = arena.Alloc(len);
                    WriteSparse(target, addr, len);
                    burst.Add((addr, len));
                    // Steer the long-lived set to the RES target's share of the VIRT so far.
                    while ((double)longLived < (double)ResTarget * Math.Min(1.0, (double)retained / VirtTarget))
                    {
                        ulong l = classes[rng.Next(classes.Length)];
                        ulong at = arena.Alloc(l);
                        Write(target, at, l);
                        longLived += l;
                    }
                }

                foreach (var (addr, len) in burst)
                {
                    arena.Free(addr, len, epoch);
                }

                burst.Clear();
                foreach (var other in arenas)
                {
                    other.Decay(epoch - Decay, Purged);
                }

                progress?.Invoke((double)epoch / bursts);
            }
        }

        sw.Stop();
        var after = target.Status();
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = after,
            Checkpoints = [(AfterBursts, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }

    /// <summary>Size classes from 16 KiB to <paramref name="max"/>, four per doubling (jemalloc's large classes), page multiples.</summary>
    internal static ulong[] SizeClasses(ulong max)
    {
        var list = new List<ulong>();
        for (ulong group = 16UL << 10; group <= max; group *= 2)
        {
            for (ulong k = 0; k < 4; k++)
            {
                ulong c = group + (group / 4 * k);
                if (c <= max)
                {
                    list.Add(c);
                }
            }
        }

        return [.. list];
    }

    private static ulong Quantize(double bytes, ulong[] classes)
    {
        foreach (ulong c in classes)
        {
            if (c >= bytes)
            {
                return c;
            }
        }

        return classes[^1];
    }

    private static ulong PowerOfTwoBelow(ulong v) => v < 2 ? 1 : 1UL << (63 - System.Numerics.BitOperations.LeadingZeroCount(v));

    private static void WriteSparse(IMemoryTarget target, ulong addr, ulong len)
    {
        Write(target, addr, Math.Min(len, HeaderPages * Page));
        for (ulong b = (addr + TwoMiB) & ~(TwoMiB - 1); b < addr + len; b += TwoMiB)
        {
            Write(target, b, Page);
        }
    }

    private static void Write(IMemoryTarget target, ulong addr, ulong len) => ScenarioSteps.Touch(target, addr, len, write: true);
}
