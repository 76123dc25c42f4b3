using System.Globalization;
using System.Text;
using System.Text.Json;
using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Cli;

/// <summary>The JSON of <c>ptlab run</c> (camelCase). Keys may be added, never renamed without a note in the README.</summary>
internal sealed record RunReport
{
    public required string Scenario { get; init; }

    public required string Design { get; init; }

    /// <summary>Numbers where numeric; sizes in bytes with the unit in the key (see <see cref="ReportParameters"/>).</summary>
    public required IReadOnlyDictionary<string, object> Parameters { get; init; }

    /// <summary>Right after the scenario's mapping was made, before its first measured step.</summary>
    public required StatusReport Before { get; init; }

    /// <summary>At the end of the scenario.</summary>
    public required StatusReport After { get; init; }

    public required CountersReport Counters { get; init; }

    public required double WallSeconds { get; init; }

    public required HostReport Host { get; init; }

    /// <summary>Named intermediate figures of multi-phase scenarios, in order; empty for single-phase ones.</summary>
    public required IReadOnlyList<CheckpointReport> Checkpoints { get; init; }

    /// <summary>Remarks on how to read the figures (for example, that reclaim never ran); empty when there are none.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Per-operation counts, with --profile; absent otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public ProfileReport? Profile { get; init; }

    public static RunReport From(ScenarioResult r, string design, MmCounters c, ReportParameters parameters, HostReport host) => new()
    {
        Scenario = r.Scenario,
        Design = design,
        Parameters = parameters.AddScenario(r.Parameters).Values,
        Before = StatusReport.From(r.Before),
        After = StatusReport.From(r.After),
        Counters = CountersReport.From(c),
        WallSeconds = Math.Round(r.WallSeconds, 6),
        Host = host,
        Checkpoints = CheckpointReport.From(r),
    };

    /// <summary>The shared JSON options (kept here for callers that serialize with them).</summary>
    internal static JsonSerializerOptions Json => ReportJson.Options;

    public string ToJson() => ReportJson.Serialize(this);

    /// <summary>One header line and one row per phase: before, each checkpoint, after.</summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"scenario,design,phase,{CsvColumns.StatusHeader},{CsvColumns.CountersHeader},wallSeconds");
        var phases = new List<(string, StatusReport)> { ("before", Before) };
        phases.AddRange(Checkpoints.Select(c => (c.Label, c.Status)));
        phases.Add(("after", After));
        foreach (var (phase, s) in phases)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"{Scenario},{Design},{phase},{CsvColumns.Status(s)},{CsvColumns.Counters(Counters)},{CsvColumns.Number(WallSeconds)}");
        }

        return sb.ToString();
    }
}

/// <summary>The ptlab process itself, so a reader can judge the model's cost.</summary>
internal sealed record HostReport(long PeakWorkingSetBytes, long ModelHostBytes, double FaultsPerSecond)
{
    /// <summary>The run itself (machine built, run, torn down), measured as compare measures each design's run.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public PhaseUsage? Run { get; init; }
}
