namespace PtLab.Kernel.Scan;

/// <summary>How the counts were obtained.</summary>
public static class ScanMethods
{
    /// <summary>Exact: two read-only <c>PAGEMAP_SCAN</c> passes (Linux 6.7+).</summary>
    public const string PagemapScan = "pagemap-scan";

    /// <summary>An estimate with bounds: pagemap entries (which cannot tell an empty table from no table) and VmPTE.</summary>
    public const string PagemapEstimate = "pagemap-estimate";
}

/// <summary>A closed range [Low, High] for a figure that is only bounded.</summary>
/// <param name="Low">The smallest value consistent with what was read.</param>
/// <param name="High">The largest.</param>
public readonly record struct Bounds(long Low, long High)
{
    /// <summary>Whether <paramref name="v"/> lies in the range.</summary>
    public bool Contains(long v) => v >= Low && v <= High;
}

/// <summary>What one design would free of this process's tables now (see <c>PtLab.Reclaim.FreeNowRules</c>).</summary>
/// <param name="Design">The design.</param>
/// <param name="Tables">PTE tables it would free (or have freed already).</param>
/// <param name="Bytes">Those tables' memory: 4 KiB each.</param>
/// <param name="Rule">The rule applied, in one line.</param>
public sealed record DesignFreeNow(string Design, long Tables, long Bytes, string Rule);

/// <summary>One VMA's page tables.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">First address past the end.</param>
/// <param name="Perms">The maps permission column (rwxp/s).</param>
/// <param name="Name">Path or pseudo name; empty for plain anonymous memory.</param>
/// <param name="PteTables">PTE tables mapping any part of the VMA; a table shared with a neighbour counts here and there.</param>
/// <param name="EmptyPteTables">Of those, tables with every entry none; null when unknown (the estimate).</param>
/// <param name="ZeroPageTables">Tables whose populated entries all map the shared zero page; null when unknown.</param>
/// <param name="MarkerOnlyTables">Tables holding only guard markers.</param>
/// <param name="ThpDeposits">Anonymous PMD leaves (each with a deposited table).</param>
/// <param name="SharedTables">Tables this VMA shares with a neighbouring VMA (counted once per process).</param>
/// <param name="PopulatedEntries">Entries inside the VMA that are present, swapped or markers (PMD leaves excluded).</param>
public sealed record VmaScan(
    ulong Start, ulong End, string Perms, string Name, long PteTables, long? EmptyPteTables, long? ZeroPageTables,
    long MarkerOnlyTables, long ThpDeposits, long SharedTables, long PopulatedEntries)
{
    /// <summary>The kernel's VmFlags of the VMA (from smaps: rd wr mr mw me ac, ht hugetlb, pf PFN map, ...); empty when smaps was not readable.</summary>
    public IReadOnlyList<string> VmFlags { get; init; } = [];
}

/// <summary>
/// The page tables of one live process. Exact with <see cref="ScanMethods.PagemapScan"/>; with
/// <see cref="ScanMethods.PagemapEstimate"/> the PTE and empty-table figures are the lower bounds of
/// <see cref="PteTablesBounds"/> and <see cref="EmptyPteTablesBounds"/>.
/// </summary>
public sealed record ProcessScan
{
    /// <summary>The process id.</summary>
    public required int Pid { get; init; }

    /// <summary>The command name (<c>comm</c>).</summary>
    public required string Comm { get; init; }

    /// <summary><see cref="ScanMethods.PagemapScan"/> or <see cref="ScanMethods.PagemapEstimate"/>.</summary>
    public required string Method { get; init; }

    /// <summary>Whether the figures are exact counts (true for <see cref="ScanMethods.PagemapScan"/>).</summary>
    public required bool Exact { get; init; }

    /// <summary>Whether the process was stopped for the scan (<c>--freeze</c>).</summary>
    public required bool Frozen { get; init; }

    /// <summary><c>VmPTE</c> when the scan ended: PTE + PMD + PUD tables, 4 kB each.</summary>
    public required long VmPteKb { get; init; }

    /// <summary>PTE tables in use (mapped by a pmd entry); THP deposits not included.</summary>
    public required long PteTables { get; init; }

    /// <summary>Bounds of <see cref="PteTables"/> (equal ends when exact).</summary>
    public required Bounds PteTablesBounds { get; init; }

    /// <summary>PTE tables with no present, swap or marker entry.</summary>
    public required long EmptyPteTables { get; init; }

    /// <summary>Bounds of <see cref="EmptyPteTables"/> (equal ends when exact).</summary>
    public required Bounds EmptyPteTablesBounds { get; init; }

    /// <summary><see cref="EmptyPteTables"/> × 4 KiB.</summary>
    public long EmptyPteTableBytes => EmptyPteTables * 4096;

    /// <summary>Tables whose populated entries all map the shared zero page; null when the method cannot see it.</summary>
    public required long? ZeroPageTables { get; init; }

    /// <summary>Tables holding only guard markers.</summary>
    public required long MarkerOnlyTables { get; init; }

    /// <summary>Tables deposited beside anonymous PMD leaves (THPs, the huge zero page), counted in VmPTE; null when unknown.</summary>
    public required long? ThpDeposits { get; init; }

    /// <summary>PTE tables shared by two VMAs (each counted once here).</summary>
    public required long SharedTables { get; init; }

    /// <summary>Present, swap and marker entries in PTE tables.</summary>
    public required long PopulatedEntries { get; init; }

    /// <summary>PMD + PUD tables by subtraction: VmPTE / 4 kB − PTE tables − THP deposits.</summary>
    public required long UpperTables { get; init; }

    /// <summary>
    /// What <see cref="UpperTables"/> must lie in: at least one PMD table per 1 GiB and one PUD table
    /// per 512 GiB that holds a PTE table or a PMD leaf; at most one per 1 GiB and 512 GiB span any VMA overlaps.
    /// </summary>
    public required Bounds UpperTablesExpected { get; init; }

    /// <summary>What each design would free now.</summary>
    public required IReadOnlyList<DesignFreeNow> FreeNow { get; init; }

    /// <summary>Figures that do not add up, each in one line; empty when the scan is consistent.</summary>
    public required IReadOnlyList<string> Inconsistencies { get; init; }

    /// <summary>Per-VMA figures, when asked for.</summary>
    public IReadOnlyList<VmaScan>? Vmas { get; init; }

    /// <summary>Wall time of the scan.</summary>
    public required double ScanSeconds { get; init; }
}
