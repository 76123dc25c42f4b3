using System.Globalization;

namespace PtLab.Cli;

/// <summary>
/// How numbers read in human tables: thousands separators, sizes in binary units (50 GiB), kB
/// figures as /proc prints them, signed deltas, and nouns that agree with their count.
/// Machine formats (JSON, CSV) never use these: they carry raw numbers with the unit in the key.
/// </summary>
internal static class Human
{
    private static readonly string[] s_units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

    /// <summary>A whole number with thousands separators: 25,600.</summary>
    public static string Count(long v) => v.ToString("N0", CultureInfo.InvariantCulture);

    /// <summary>A count with a sign when it is not zero: +25,600, -3, 0.</summary>
    public static string Signed(long v) => (v > 0 ? "+" : "") + Count(v);

    /// <summary>A /proc-style kB figure: 102,608 kB.</summary>
    public static string Kb(long kb) => Count(kb) + " kB";

    /// <summary>A kB delta with its sign: +102,608 kB.</summary>
    public static string SignedKb(long kb) => Signed(kb) + " kB";

    /// <summary>A size in the largest binary unit that keeps it at least 1: 50 GiB, 1.5 GiB, 4 KiB, 100 B.</summary>
    public static string Bytes(double bytes)
    {
        double v = Math.Abs(bytes);
        int u = 0;
        while (u < s_units.Length - 1 && v >= 1024)
        {
            v /= 1024;
            u++;
        }

        string sign = bytes < 0 ? "-" : "";
        string number = v == Math.Floor(v) ? v.ToString("N0", CultureInfo.InvariantCulture)
            : v < 10 ? v.ToString("0.##", CultureInfo.InvariantCulture)
            : v.ToString("N1", CultureInfo.InvariantCulture);
        return $"{sign}{number} {s_units[u]}";
    }

    /// <summary>A size given in kB, in binary units: 102,608 kB reads 100.2 MiB.</summary>
    public static string BytesFromKb(long kb) => Bytes(kb * 1024.0);

    /// <summary>Seconds with three decimals: 4.631 s.</summary>
    public static string Seconds(double s) => s.ToString("0.000", CultureInfo.InvariantCulture) + " s";

    /// <summary>Nanoseconds as microseconds with one decimal: 22.7 µs.</summary>
    public static string Micros(double ns) => (ns / 1000.0).ToString("N1", CultureInfo.InvariantCulture) + " µs";

    /// <summary>A percentage with one decimal and its sign (a true minus sign): −99.8%, +3.0%.</summary>
    public static string Percent(double fraction) =>
        (fraction > 0 ? "+" : fraction < 0 ? "−" : "") + Math.Abs(fraction * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%";

    /// <summary>A count and a noun that agrees with it: 1 violation, 2 violations, 25,600 PTE tables.</summary>
    public static string Plural(long n, string singular, string? plural = null) =>
        $"{Count(n)} {(n == 1 ? singular : plural ?? singular + "s")}";

    /// <summary>A plain-text list: "a", "a and b", "a, b and c".</summary>
    public static string List(IReadOnlyList<string> items) => items.Count switch
    {
        0 => "",
        1 => items[0],
        _ => string.Join(", ", items.Take(items.Count - 1)) + " and " + items[^1],
    };
}
