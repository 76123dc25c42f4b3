using System.Globalization;
using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Kernel;

/// <summary>
/// Reads the VMA ranges and <c>VmFlags</c> lines of <c>/proc/PID/smaps</c>
/// (<c>show_smap</c>/<c>show_smap_vma_flags</c> in <c>fs/proc/task_mmu.c</c>).
/// </summary>
public static class ProcSmaps
{
    /// <summary>The VMAs of this process that meet [start, end), with their modelled flags.</summary>
    public static IReadOnlyList<VmaView> ReadSelf(ulong start, ulong end) => Parse(File.ReadAllText("/proc/self/smaps"), start, end);

    /// <summary>
    /// Parses smaps text, keeping the VMAs that meet [start, end). A VMA's header is the maps line
    /// ("start-end perms ..."); its flags come from the "VmFlags:" line that follows it.
    /// </summary>
    public static IReadOnlyList<VmaView> Parse(string text, ulong start, ulong end)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<VmaView>();
        ulong vs = 0, ve = 0;
        bool open = false;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                if (!open)
                {
                    throw new FormatException("a /proc smaps VmFlags line comes before any VMA header");
                }

                if (vs < end && ve > start)
                {
                    var flags = VmFlags.None;
                    foreach (var word in line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    {
                        flags |= VmaView.Mnemonics.GetValueOrDefault(word);
                    }

                    result.Add(new VmaView(vs, ve, flags));
                }

                open = false;
                continue;
            }

            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash &&
                ulong.TryParse(line.AsSpan(0, dash), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong s) &&
                ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong e))
            {
                (vs, ve, open) = (s, e, true);
            }
        }

        return result;
    }
}
