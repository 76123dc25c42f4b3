using System.Globalization;

namespace PtLab.Kernel;

/// <summary>One line of <c>/proc/PID/maps</c>: a VMA's range.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">First address past the end.</param>
public readonly record struct MapsRange(ulong Start, ulong End);

/// <summary>Reads the VMA ranges of <c>/proc/self/maps</c>.</summary>
public static class ProcMaps
{
    /// <summary>The lowest address <see cref="FindFreeRegion"/> considers (above the executable and the heap).</summary>
    public const ulong SearchFloor = 1UL << 40;

    /// <summary>The ranges of every VMA of this process now, in address order.</summary>
    public static IReadOnlyList<MapsRange> ReadSelf() => Parse(File.ReadAllText("/proc/self/maps"));

    /// <summary>Parses maps text ("start-end perms offset dev inode path" per line).</summary>
    public static IReadOnlyList<MapsRange> Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ranges = new List<MapsRange>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash <= 0 || space <= dash ||
                !ulong.TryParse(line.AsSpan(0, dash), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong start) ||
                !ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong end))
            {
                throw new FormatException($"not a /proc maps line: \"{line}\"");
            }

            ranges.Add(new MapsRange(start, end));
        }

        ranges.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        return ranges;
    }

    /// <summary>Whether any range overlaps [start, end).</summary>
    public static bool AnyIn(IReadOnlyList<MapsRange> ranges, ulong start, ulong end)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        foreach (var r in ranges)
        {
            if (r.Start < end && start < r.End)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The lowest <paramref name="alignment"/>-aligned address at or above <see cref="SearchFloor"/>
    /// where [address, address + <paramref name="length"/>) meets no VMA, or 0 when there is none
    /// below the top of the 47-bit user address space. With a 512 GiB alignment and length, the
    /// region has a PGD slot of its own, so no page table of any level is shared with other mappings.
    /// </summary>
    public static ulong FindFreeRegion(IReadOnlyList<MapsRange> ranges, ulong length, ulong alignment)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        if (length == 0)
        {
            throw new ArgumentException("length must be positive", nameof(length));
        }

        if (alignment == 0 || (alignment & (alignment - 1)) != 0 || (alignment & 4095) != 0)
        {
            throw new ArgumentException($"alignment must be a power of two and a multiple of 4 KiB, got {alignment}", nameof(alignment));
        }

        const ulong userTop = 0x7FFF_FFFF_F000UL;
        for (ulong a = SearchFloor; a < userTop && length <= userTop - a; a += alignment)
        {
            if (!AnyIn(ranges, a, a + length))
            {
                return a;
            }
        }

        return 0;
    }
}
