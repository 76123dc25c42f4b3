using System.Globalization;

namespace PtLab.Kernel;

/// <summary>One line of <c>/proc/PID/maps</c>: a VMA's range.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">First address past the end.</param>
public readonly record struct MapsRange(ulong Start, ulong End);

/// <summary>One whole line of <c>/proc/PID/maps</c> (<c>show_map_vma()</c> in <c>fs/proc/task_mmu.c</c>).</summary>
/// <param name="Start">First address.</param>
/// <param name="End">First address past the end.</param>
/// <param name="Perms">The four permission characters, e.g. "rw-p" (p private, s shared).</param>
/// <param name="Offset">File offset of the mapping.</param>
/// <param name="Device">"major:minor" of the file's device (00:00 for anonymous memory).</param>
/// <param name="Inode">The file's inode, 0 for anonymous memory and special mappings.</param>
/// <param name="Name">The path or the pseudo name ([heap], [stack], [anon:NAME], ...); empty when there is none.</param>
public readonly record struct MapsEntry(ulong Start, ulong End, string Perms, ulong Offset, string Device, ulong Inode, string Name)
{
    /// <summary>Private or shared anonymous memory with no file behind it (heap, stack, named anon included).</summary>
    public bool IsAnonymous => Inode == 0 && !Name.StartsWith('/');
}

/// <summary>Reads the VMAs of <c>/proc/PID/maps</c>.</summary>
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

    /// <summary>
    /// Parses maps text into whole entries, in the kernel's (address) order. On a malformed line,
    /// <paramref name="error"/> gives its line number and text, and the entries before it are kept in
    /// <paramref name="entries"/>.
    /// </summary>
    public static bool TryParseEntries(string text, out List<MapsEntry> entries, out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        entries = [];
        error = null;
        int lineNo = 0;
        foreach (var raw in text.Split('\n'))
        {
            lineNo++;
            if (raw.Length == 0)
            {
                continue;
            }

            if (!TryParseLine(raw, out var e))
            {
                error = $"line {lineNo} is not a maps line: \"{Shorten(raw)}\"";
                return false;
            }

            if (entries.Count > 0 && e.Start < entries[^1].End)
            {
                error = $"line {lineNo} overlaps or precedes the line before it: \"{Shorten(raw)}\"";
                return false;
            }

            entries.Add(e);
        }

        return true;
    }

    /// <summary>Parses one maps line: "start-end perms offset major:minor inode [name]".</summary>
    public static bool TryParseLine(string line, out MapsEntry entry)
    {
        ArgumentNullException.ThrowIfNull(line);
        entry = default;
        var rest = line.AsSpan();
        if (!NextField(ref rest, out var range) || !NextField(ref rest, out var perms) || !NextField(ref rest, out var offset) ||
            !NextField(ref rest, out var dev) || !NextField(ref rest, out var inode))
        {
            return false;
        }

        int dash = range.IndexOf('-');
        if (dash <= 0 ||
            !ulong.TryParse(range[..dash], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong start) ||
            !ulong.TryParse(range[(dash + 1)..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong end) ||
            end <= start || (start & 4095) != 0 || (end & 4095) != 0)
        {
            return false;
        }

        if (perms.Length != 4 || perms[0] is not ('r' or '-') || perms[1] is not ('w' or '-') || perms[2] is not ('x' or '-') || perms[3] is not ('p' or 's'))
        {
            return false;
        }

        int colon = dev.IndexOf(':');
        if (!ulong.TryParse(offset, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong off) ||
            colon <= 0 ||
            !uint.TryParse(dev[..colon], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out _) ||
            !uint.TryParse(dev[(colon + 1)..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out _) ||
            !ulong.TryParse(inode, NumberStyles.None, CultureInfo.InvariantCulture, out ulong ino))
        {
            return false;
        }

        // The name is padded to a column and may itself contain spaces (and " (deleted)").
        entry = new MapsEntry(start, end, perms.ToString(), off, dev.ToString(), ino, rest.TrimStart(' ').ToString());
        return true;
    }

    private static bool NextField(ref ReadOnlySpan<char> rest, out ReadOnlySpan<char> field)
    {
        rest = rest.TrimStart(' ');
        int space = rest.IndexOf(' ');
        field = space < 0 ? rest : rest[..space];
        rest = space < 0 ? [] : rest[space..];
        return field.Length > 0;
    }

    internal static string Shorten(string s) => s.Length <= 120 ? s : s[..117] + "...";

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
