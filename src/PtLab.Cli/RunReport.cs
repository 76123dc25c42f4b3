using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Cli;

/// <summary>The JSON shape every ptlab command shares (camelCase). Keys may be added, never renamed.</summary>
internal sealed record RunReport
{
    public required string Scenario { get; init; }

    public required string Design { get; init; }

    public required IReadOnlyDictionary<string, string> Parameters { get; init; }

    public required StatusReport Before { get; init; }

    public required StatusReport After { get; init; }

    public required CountersReport Counters { get; init; }

    public required double WallSeconds { get; init; }

    public required HostReport Host { get; init; }

    /// <summary>Named intermediate figures of multi-phase scenarios, in order; empty for single-phase ones.</summary>
    public required IReadOnlyList<CheckpointReport> Checkpoints { get; init; }

    public static RunReport From(ScenarioResult r, string design, MmCounters c, IReadOnlyDictionary<string, string> machineParameters, HostReport host)
    {
        return new RunReport
        {
            Scenario = r.Scenario,
            Design = design,
            Parameters = MergeParameters(r.Parameters, machineParameters),
            Before = StatusReport.From(r.Before),
            After = StatusReport.From(r.After),
            Counters = CountersReport.From(c),
            WallSeconds = Math.Round(r.WallSeconds, 6),
            Host = host,
            Checkpoints = CheckpointReport.From(r),
        };
    }

    /// <summary>The parameters a report prints: the pairs of every source in key order, a later source's value winning.</summary>
    public static SortedDictionary<string, string> MergeParameters(params IEnumerable<KeyValuePair<string, string>>[] sources)
    {
        var parameters = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var source in sources)
        {
            foreach (var (k, v) in source)
            {
                parameters[k] = v;
            }
        }

        return parameters;
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>One header line and one data row per phase (before, after), flat columns.</summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine("scenario,design,phase,vmSizeKb,vmRssKb,rssAnonKb,rssFileKb,rssShmemKb,vmSwapKb,vmPteKb,ptes,pmds,puds,faults,tablesAllocated,tablesFreed,tlbFlushes,gracePeriods,wallSeconds");
        foreach (var (phase, s) in new[] { ("before", Before), ("after", After) })
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"{Scenario},{Design},{phase},{s.VmSizeKb},{s.VmRssKb},{s.RssAnonKb},{s.RssFileKb},{s.RssShmemKb},{s.VmSwapKb},{s.VmPteKb},{s.Tables.Pte},{s.Tables.Pmd},{s.Tables.Pud},");
            sb.Append(CultureInfo.InvariantCulture,
                $"{Counters.Faults},{Counters.TablesAllocated},{Counters.TablesFreed},{Counters.TlbFlushes},{Counters.GracePeriods},{WallSeconds.ToString("0.######", CultureInfo.InvariantCulture)}");
            sb.AppendLine();
        }

        return sb.ToString();
    }
}

internal sealed record TablesReport(long Pte, long Pmd, long Pud)
{
    public static TablesReport operator -(TablesReport a, TablesReport b) => new(a.Pte - b.Pte, a.Pmd - b.Pmd, a.Pud - b.Pud);
}

internal sealed record StatusReport(long VmSizeKb, long VmRssKb, long RssAnonKb, long RssFileKb, long RssShmemKb, long VmSwapKb, long VmPteKb, TablesReport Tables)
{
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

/// <summary>The ptlab process itself, so a reader can judge the model's cost.</summary>
internal sealed record HostReport(long PeakWorkingSetBytes, long ModelHostBytes, double FaultsPerSecond);
