using System.Globalization;
using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Cli;

// The records every report is made of, and the CSV columns they print as. One vocabulary in every
// command: sizes are numbers with the unit in the key (vmPteKb, ramBytes), table counts say they
// count tables (pteTables), latencies say their unit (p50 inside madviseLatencyNs).

/// <summary>Page-table pages per level. Kept as the <c>tables</c> object of a status; a status also carries the flat <c>pteTables</c>, <c>pmdTables</c>, <c>pudTables</c>.</summary>
internal sealed record TablesReport(long Pte, long Pmd, long Pud)
{
    public static TablesReport operator -(TablesReport a, TablesReport b) => new(a.Pte - b.Pte, a.Pmd - b.Pmd, a.Pud - b.Pud);
}

/// <summary>What <c>/proc/PID/status</c> shows (kB), and the page-table pages per level.</summary>
internal sealed record StatusReport(long VmSizeKb, long VmRssKb, long RssAnonKb, long RssFileKb, long RssShmemKb, long VmSwapKb, long VmPteKb, TablesReport Tables)
{
    /// <summary>PTE tables (level 1).</summary>
    public long PteTables => Tables.Pte;

    /// <summary>PMD tables (level 2).</summary>
    public long PmdTables => Tables.Pmd;

    /// <summary>PUD tables (level 3).</summary>
    public long PudTables => Tables.Pud;

    public static StatusReport From(MmStatus s) =>
        new(s.VmSizeKb, s.VmRssKb, s.RssAnonKb, s.RssFileKb, s.RssShmemKb, s.VmSwapKb, s.VmPteKb, new TablesReport(s.Tables.Pte, s.Tables.Pmd, s.Tables.Pud));

    /// <summary>Field by field <paramref name="a"/> minus <paramref name="b"/> (a delta has the same shape as a status).</summary>
    public static StatusReport operator -(StatusReport a, StatusReport b) => new(
        a.VmSizeKb - b.VmSizeKb, a.VmRssKb - b.VmRssKb, a.RssAnonKb - b.RssAnonKb, a.RssFileKb - b.RssFileKb,
        a.RssShmemKb - b.RssShmemKb, a.VmSwapKb - b.VmSwapKb, a.VmPteKb - b.VmPteKb, a.Tables - b.Tables);
}

/// <summary>A scenario's named intermediate status.</summary>
internal sealed record CheckpointReport(string Label, StatusReport Status)
{
    public static IReadOnlyList<CheckpointReport> From(ScenarioResult r) =>
        [.. r.Checkpoints.Select(c => new CheckpointReport(c.Label, StatusReport.From(c.Status)))];
}

/// <summary>Event counters of one address space over a run.</summary>
internal sealed record CountersReport(
    long Faults, long TablesAllocated, long TablesFreed, long PteTablesAllocated, long PteTablesFreed,
    long PmdTablesAllocated, long PmdTablesFreed, long PudTablesAllocated, long PudTablesFreed,
    long TlbFlushes, long GracePeriods, long PagesAllocated, long PagesFreed)
{
    public static CountersReport From(MmCounters c) => new(
        c.Faults,
        c.PteTablesAllocated + c.PmdTablesAllocated + c.PudTablesAllocated,
        c.PteTablesFreed + c.PmdTablesFreed + c.PudTablesFreed,
        c.PteTablesAllocated, c.PteTablesFreed, c.PmdTablesAllocated, c.PmdTablesFreed, c.PudTablesAllocated, c.PudTablesFreed,
        c.TlbFlushes, c.GracePeriods, c.PagesAllocated, c.PagesFreed);
}

/// <summary>p50, p99 and count of a latency histogram, in nanoseconds.</summary>
internal sealed record LatencyReport(long P50, long P99, long Count)
{
    public static LatencyReport From(LatencySummary s) => new(s.P50, s.P99, s.Count);
}

/// <summary>The CSV columns of the shared records, named as their JSON keys, so every command's CSV reads the same.</summary>
internal static class CsvColumns
{
    /// <summary>The columns of a <see cref="StatusReport"/>.</summary>
    public const string StatusHeader = "vmSizeKb,vmRssKb,rssAnonKb,rssFileKb,rssShmemKb,vmSwapKb,vmPteKb,pteTables,pmdTables,pudTables";

    /// <summary>The columns of the <see cref="CountersReport"/> figures a table shows.</summary>
    public const string CountersHeader = "faults,tablesAllocated,tablesFreed,tlbFlushes,gracePeriods";

    /// <summary>The columns of a <see cref="LatencyReport"/> of madvise calls.</summary>
    public const string MadviseLatencyHeader = "madviseP50Ns,madviseP99Ns,madviseCount";

    public static string Status(StatusReport s) => string.Create(CultureInfo.InvariantCulture,
        $"{s.VmSizeKb},{s.VmRssKb},{s.RssAnonKb},{s.RssFileKb},{s.RssShmemKb},{s.VmSwapKb},{s.VmPteKb},{s.Tables.Pte},{s.Tables.Pmd},{s.Tables.Pud}");

    public static string Counters(CountersReport c) => string.Create(CultureInfo.InvariantCulture,
        $"{c.Faults},{c.TablesAllocated},{c.TablesFreed},{c.TlbFlushes},{c.GracePeriods}");

    public static string Latency(LatencyReport l) => string.Create(CultureInfo.InvariantCulture, $"{l.P50},{l.P99},{l.Count}");

    /// <summary>A number as CSV writes it: invariant culture, no separators, at most six decimals.</summary>
    public static string Number(double v) => v.ToString("0.######", CultureInfo.InvariantCulture);
}
