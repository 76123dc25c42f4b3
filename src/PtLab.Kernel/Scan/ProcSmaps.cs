using System.Globalization;

namespace PtLab.Kernel.Scan;

/// <summary>One VMA of <c>/proc/PID/smaps</c> (<c>show_smap()</c> in <c>fs/proc/task_mmu.c</c>): its maps line and its fields.</summary>
/// <param name="Vma">The maps line that heads the block.</param>
/// <param name="FieldsKb">Every "Name: N kB" field (Rss, AnonHugePages, Swap, ...).</param>
/// <param name="VmFlags">The two-letter flags of the VmFlags line (rd, wr, mr, ht for hugetlb, pf for PFN maps, ...).</param>
public sealed record SmapsVma(MapsEntry Vma, IReadOnlyDictionary<string, long> FieldsKb, IReadOnlyList<string> VmFlags)
{
    /// <summary>A hugetlb VMA (its leaves have no deposited table).</summary>
    public bool IsHugetlb => VmFlags.Contains("ht");

    /// <summary>A VM_PFNMAP VMA, which PAGEMAP_SCAN does not walk.</summary>
    public bool IsPfnMap => VmFlags.Contains("pf");
}

/// <summary>Parses <c>/proc/PID/smaps</c> text.</summary>
public static class ProcSmaps
{
    /// <summary>
    /// Parses smaps text into one entry per VMA; on a malformed line, <paramref name="error"/> gives its
    /// number and text, and the VMAs before it are kept in <paramref name="vmas"/>.
    /// </summary>
    public static bool TryParse(string text, out List<SmapsVma> vmas, out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        vmas = [];
        error = null;
        MapsEntry? head = null;
        Dictionary<string, long> fields = [];
        List<string> flags = [];
        int lineNo = 0;
        foreach (var raw in text.Split('\n'))
        {
            lineNo++;
            if (raw.Length == 0)
            {
                continue;
            }

            int colon = raw.IndexOf(':', StringComparison.Ordinal);
            int space = raw.IndexOf(' ', StringComparison.Ordinal);
            bool isField = colon > 0 && (space < 0 || colon < space) && raw.AsSpan(0, colon).IndexOfAny('-', ' ') < 0;
            if (!isField)
            {
                if (!ProcMaps.TryParseLine(raw, out var e))
                {
                    error = $"line {lineNo} is neither a smaps field nor a maps line: \"{ProcMaps.Shorten(raw)}\"";
                    return false;
                }

                if (head is { } h)
                {
                    vmas.Add(new SmapsVma(h, fields, flags));
                }

                head = e;
                fields = [];
                flags = [];
                continue;
            }

            if (head is null)
            {
                error = $"line {lineNo}: a field before any maps line: \"{ProcMaps.Shorten(raw)}\"";
                return false;
            }

            string key = raw[..colon];
            var value = raw.AsSpan(colon + 1).Trim();
            if (key == "VmFlags")
            {
                flags = [.. value.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries)];
            }
            else if (value.EndsWith(" kB", StringComparison.Ordinal))
            {
                if (!long.TryParse(value[..^3].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                {
                    error = $"line {lineNo}: {key} is not a kB figure: \"{ProcMaps.Shorten(raw)}\"";
                    return false;
                }

                fields[key] = kb;
            }
        }

        if (head is { } last)
        {
            vmas.Add(new SmapsVma(last, fields, flags));
        }

        return true;
    }
}
