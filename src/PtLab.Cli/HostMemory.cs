using System.Globalization;
using System.Runtime.CompilerServices;
using PtLab.Phys;

namespace PtLab.Cli;

/// <summary>What a scenario asks of memory: the bytes it maps and the most it writes and keeps resident at once.</summary>
/// <param name="MappedBytes">Bytes mapped (bounds the page tables).</param>
/// <param name="ResidentBytes">Bytes written and not yet given back at the peak, if RAM were unlimited (the working set).</param>
/// <param name="TableBytes">The scenario's own bound on its page tables' host memory, when it knows better than "every table full".</param>
internal readonly record struct ScenarioFootprint(ulong MappedBytes, ulong ResidentBytes, long? TableBytes = null);

/// <summary>An estimate of the host memory a model run holds at its peak, and what it is made of.</summary>
/// <param name="Bytes">The whole estimate.</param>
/// <param name="Parts">Its parts, for the message.</param>
internal sealed record HostMemoryEstimate(long Bytes, string Parts);

/// <summary>
/// Keeps a run from taking the host down: the model holds its simulated memory in the host's
/// (a page's bytes with page data on, a token without; a descriptor per frame; every live page
/// table), so a run is estimated before it starts and refused, with the option to change, when
/// it would not fit in the memory the host has available. <c>--force</c> runs it anyway.
/// </summary>
internal static class HostMemory
{
    private const long Page = PhysMemory.PageSize;

    /// <summary>The process itself (runtime, JIT, the CLI) before any simulated memory.</summary>
    private const long Runtime = 128L << 20;

    /// <summary>
    /// The peak host memory of a run: resident pages are bounded by simulated RAM, and beyond it by
    /// swap (whose slots also hold page bytes or tokens); the page tables are counted as if none was
    /// ever freed (the <c>none</c> design), which bounds every design.
    /// </summary>
    public static HostMemoryEstimate Estimate(ScenarioFootprint f, long ramBytes, long swapBytes, bool pageData)
    {
        long resident = (long)Math.Min(f.ResidentBytes, (ulong)ramBytes) / Page;
        long swapped = (long)Math.Min(f.ResidentBytes - (ulong)(resident * Page), (ulong)swapBytes) / Page;
        // A descriptor and, as a bound, its extension words (only pages on a linked LRU list and
        // tables have them; an anonymous page of a machine without swap has none).
        long descriptor = Unsafe.SizeOf<PageDescriptor>() + Unsafe.SizeOf<PageExt>();
        long content = pageData ? Page + sizeof(ulong) : 0; // without page data the token is in the descriptor
        long tables = (long)(f.MappedBytes / (2UL << 20) + (f.MappedBytes / (1UL << 30)) + (f.MappedBytes / (512UL << 30))) + 3;
        long pages = resident * (descriptor + content);
        long swap = swapped * (content + sizeof(int));
        long tableBytes = f.TableBytes ?? tables * (Page + descriptor);
        long total = Runtime + pages + swap + tableBytes;
        var parts = new List<string>
        {
            pageData
                ? $"{Human.Bytes(pages)} for up to {Human.Bytes(resident * Page)} of simulated RSS with page data"
                : $"{Human.Bytes(pages)} of page descriptors and tokens for up to {Human.Bytes(resident * Page)} of simulated RSS",
        };
        if (swapped > 0)
        {
            parts.Add($"{Human.Bytes(swap)} for {Human.Bytes(swapped * Page)} of swapped pages");
        }

        parts.Add($"{Human.Bytes(tableBytes)} for up to {Human.Count(tables)} page tables");
        return new HostMemoryEstimate(total, string.Join(", ", parts));
    }

    /// <summary>Memory the host can give without swapping: MemAvailable, or what the runtime sees where there is no /proc.</summary>
    public static long Available()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line["MemAvailable:".Length..].Trim().Split(' ')[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                {
                    return Math.Min(kb * 1024, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }

    /// <summary>Refuses, with the estimate and the options to change, a run that would not fit in <paramref name="available"/>.</summary>
    public static void Check(ScenarioFootprint f, long ramBytes, long swapBytes, bool pageData, long available, bool force)
    {
        var e = Estimate(f, ramBytes, swapBytes, pageData);
        if (force || e.Bytes <= available)
        {
            return;
        }

        var ways = new List<string>();
        if (pageData)
        {
            var off = Estimate(f, ramBytes, swapBytes, pageData: false);
            ways.Add($"--page-data off (about {Human.Bytes(off.Bytes)})");
        }

        if (f.ResidentBytes > 0)
        {
            ways.Add("a smaller --ram or --size");
        }
        else
        {
            ways.Add("a smaller --size");
        }

        throw new UsageException(
            $"this run would hold about {Human.Bytes(e.Bytes)} of host memory ({e.Parts}) and the host has " +
            $"{Human.Bytes(available)} available; use {string.Join(", ", ways)}, or --force to run anyway");
    }
}
