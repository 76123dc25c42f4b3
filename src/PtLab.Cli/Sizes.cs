using System.Globalization;

namespace PtLab.Cli;

/// <summary>Parses sizes such as <c>50G</c>, <c>2M</c>, <c>1GiB</c>, <c>4096</c> (binary units, as the kernel's memparse).</summary>
internal static class Sizes
{
    public static bool TryParse(string? text, out ulong bytes, out string error)
    {
        bytes = 0;
        error = "";
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "a size is required (for example 50G, 2M, 4096)";
            return false;
        }

        string t = text.Trim();
        int shift = 0;
        char last = char.ToUpperInvariant(t[^1]);
        // 1G, 1GB and 1GiB all mean 2^30 bytes, as memparse's K/M/G/T do.
        if (last == 'B' && t.Length > 1 && char.IsLetter(t[^2]))
        {
            t = t[..^1];
            if (t.Length > 1 && char.ToUpperInvariant(t[^1]) == 'I' && char.IsLetter(t[^2]))
            {
                t = t[..^1];
            }

            last = char.ToUpperInvariant(t[^1]);
        }

        switch (last)
        {
            case 'K': shift = 10; break;
            case 'M': shift = 20; break;
            case 'G': shift = 30; break;
            case 'T': shift = 40; break;
        }

        if (shift != 0)
        {
            t = t[..^1];
        }

        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n))
        {
            error = $"'{text}' is not a size (use a whole number with an optional K, M, G or T suffix, such as 512M or 1GiB)";
            return false;
        }

        if (shift > 0 && n > (ulong.MaxValue >> shift))
        {
            error = $"'{text}' is too large";
            return false;
        }

        bytes = n << shift;
        return true;
    }

    public static string Format(ulong bytes)
    {
        string[] units = ["B", "K", "M", "G", "T"];
        int u = 0;
        while (u < units.Length - 1 && bytes >= 1024 && bytes % 1024 == 0)
        {
            bytes /= 1024;
            u++;
        }

        return bytes.ToString(CultureInfo.InvariantCulture) + units[u];
    }
}
