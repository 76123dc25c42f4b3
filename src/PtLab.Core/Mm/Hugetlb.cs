namespace PtLab.Mm;

/// <summary>
/// One hugetlb page size of the host (an <c>hstate</c>, <c>/sys/kernel/mm/hugepages/hugepages-NkB</c>)
/// and how many of its pages a reservation may still take.
/// </summary>
/// <param name="PageShift">log2 of the page size: 21 for 2 MiB, 30 for 1 GiB.</param>
/// <param name="Available">
/// Pages a reservation may still take: free pages not already reserved (<c>free_hugepages</c>
/// less <c>resv_hugepages</c>), plus the surplus pages overcommit may still allocate
/// (<c>nr_overcommit_hugepages</c> less <c>surplus_hugepages</c>). Null where it is not known:
/// a reservation is then not checked.
/// </param>
public readonly record struct HugetlbPool(int PageShift, long? Available)
{
    /// <summary>x86-64's default hugetlb size, 2 MiB (<c>MAP_HUGETLB</c> without a size asks for it).</summary>
    public const int PmdShift = 21;

    /// <summary>x86-64's gigantic size, 1 GiB, where the CPU has <c>pdpe1gb</c>.</summary>
    public const int PudShift = 30;

    /// <summary>The page size in bytes.</summary>
    public ulong Size => 1UL << PageShift;

    /// <summary>
    /// An x86-64 host that boots with no huge page reserved, as most do (<c>HugePages_Total: 0</c>,
    /// no overcommit): 2 MiB, the default size, and 1 GiB, both empty.
    /// </summary>
    public static IReadOnlyList<HugetlbPool> Empty { get; } = [new(PmdShift, 0), new(PudShift, 0)];

    /// <summary>
    /// Parses the form <see cref="Format"/> writes: <c>SHIFT:AVAILABLE</c> per size, comma-separated,
    /// the default size first, AVAILABLE <c>?</c> where unknown ("21:0,30:0"). Null when malformed.
    /// </summary>
    public static IReadOnlyList<HugetlbPool>? Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var pools = new List<HugetlbPool>();
        foreach (var part in text.Split(','))
        {
            var fields = part.Split(':');
            if (fields.Length != 2 || !int.TryParse(fields[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int shift)
                || shift is < 13 or > 40 || pools.Any(p => p.PageShift == shift))
            {
                return null;
            }

            long? available = null;
            if (fields[1] != "?")
            {
                if (!long.TryParse(fields[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long n))
                {
                    return null;
                }

                available = n;
            }

            pools.Add(new HugetlbPool(shift, available));
        }

        return pools;
    }

    /// <summary>The form <see cref="Parse"/> reads.</summary>
    public static string Format(IEnumerable<HugetlbPool> pools) =>
        string.Join(',', pools.Select(p => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{p.PageShift}:{(p.Available is { } n ? n.ToString(System.Globalization.CultureInfo.InvariantCulture) : "?")}")));
}
