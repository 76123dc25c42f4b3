using System.Diagnostics;
using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Workloads;

/// <summary>What one <see cref="DesignBenchmark"/> run measured.</summary>
/// <param name="Design">The design's name.</param>
/// <param name="Cpus">CPUs that ran the loop.</param>
/// <param name="Seconds">Wall time of the loop.</param>
/// <param name="Faults">Page faults taken.</param>
/// <param name="Loops">Touch + DONTNEED rounds completed, all CPUs together.</param>
/// <param name="DontNeedLatencyNs">Latency of the MADV_DONTNEED calls.</param>
public sealed record DesignBenchmarkResult(string Design, int Cpus, double Seconds, long Faults, long Loops, LatencySummary DontNeedLatencyNs)
{
    /// <summary>Faults per second of wall time.</summary>
    public double FaultsPerSecond => Seconds > 0 ? Faults / Seconds : 0;
}

/// <summary>
/// The fault-and-DONTNEED loop the designs are compared on: each CPU owns a 2 MiB-aligned 2 MiB
/// region (one PTE table of its own) and repeats "write one byte per page, MADV_DONTNEED the 2 MiB"
/// for a bounded time, on a fresh machine without page data. Under <c>pt-reclaim</c> every round
/// frees and reallocates the table; under <c>none</c> it stays.
/// </summary>
public static class DesignBenchmark
{
    private const ulong TwoMiB = 2UL << 20;

    /// <summary>Where the regions start: 1 GiB aligned, so CPU c's region is at Base + c * 2 MiB.</summary>
    public const ulong Base = 0x10_0000_0000UL;

    /// <summary>Runs the loop for <paramref name="duration"/> on <paramref name="cpus"/> CPUs with design <paramref name="design"/>.</summary>
    public static DesignBenchmarkResult Run(string design, int cpus, TimeSpan duration)
    {
        var factory = Designs.Factory(design) ?? throw new ArgumentException($"unknown design '{design}'", nameof(design));
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        using var target = new ModelTarget(new MachineOptions { Cpus = cpus, PageData = false, RamBytes = 1L << 30, Design = factory });
        var map = target.Mmap(Base, (ulong)cpus * TwoMiB, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace);
        if (!map.Ok)
        {
            throw new ScenarioException($"mmap of the benchmark regions failed: {map.Error}");
        }

        var latency = new LatencyRecorder();
        long loops = 0;
        long faultsBefore = target.Mm.Counters().Faults;
        var sw = new Stopwatch();
        MultiCpuRunner.Run(target.Machine.Cpus, cpu =>
        {
            var mm = target.Mm;
            ulong region = Base + ((ulong)cpu.Id * TwoMiB);
            if (cpu.Id == 0)
            {
                sw.Start();
            }

            long mine = 0;
            long deadline = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            do
            {
                for (ulong va = region; va < region + TwoMiB; va += 4096)
                {
                    var r = cpu.Touch(va);
                    if (!r.Ok)
                    {
                        throw new ScenarioException($"CPU {cpu.Id}: touching 0x{va:x} failed: {r}");
                    }
                }

                long t0 = Stopwatch.GetTimestamp();
                var e = mm.Madvise(cpu, region, TwoMiB, Advice.DontNeed);
                latency.RecordSince(t0);
                if (e != Errno.None)
                {
                    throw new ScenarioException($"CPU {cpu.Id}: MADV_DONTNEED of 0x{region:x} failed: {e}");
                }

                mine++;
            }
            while (Stopwatch.GetTimestamp() < deadline);

            Interlocked.Add(ref loops, mine);
        });
        sw.Stop();
        long faults = target.Mm.Counters().Faults - faultsBefore;
        return new DesignBenchmarkResult(design, cpus, sw.Elapsed.TotalSeconds, faults, loops, latency.Summary());
    }
}
