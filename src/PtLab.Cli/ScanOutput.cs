using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using PtLab.Kernel.Scan;
using PtLab.Reclaim;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>A process that could not be scanned, in reports.</summary>
internal sealed record ScanFailureReport(int Pid, string? Comm, string Kind, string Message)
{
    public static ScanFailureReport From(ScanSkip s) => new(s.Pid, s.Comm, KindName(s.Kind), s.Message);

    public static ScanFailureReport From(ScanException e) => new(e.Pid, null, KindName(e.Kind), e.Message);

    public static string KindName(ScanFailure k) => k switch
    {
        ScanFailure.NoSuchProcess => "no-such-process",
        ScanFailure.KernelThread => "kernel-thread",
        ScanFailure.NoAddressSpace => "no-address-space",
        ScanFailure.PermissionDenied => "permission-denied",
        ScanFailure.Vanished => "vanished",
        ScanFailure.Malformed => "malformed",
        _ => "failed",
    };
}

/// <summary>The JSON of <c>ptlab scan</c> (camelCase; numbers are numbers; sizes in bytes or with the unit in the key).</summary>
internal sealed record ScanReport(
    string Kernel,
    IReadOnlyList<ProcessScan> Processes,
    IReadOnlyList<ScanFailureReport> Failures,
    int KernelThreadsSkipped,
    int BelowMinVmPte,
    IReadOnlyList<RuleReport> Rules,
    double WallSeconds)
{
    public string ToJson() => JsonSerializer.Serialize(this, ScanJson.Default.ScanReport);
}

/// <summary>One design's free-now rule, as reported.</summary>
internal sealed record RuleReport(string Design, string Rule)
{
    public static IReadOnlyList<RuleReport> All() => [.. FreeNowRules.All.Select(r => new RuleReport(r.Design, r.Rule))];
}

/// <summary>One sample of <c>ptlab scan --watch</c>.</summary>
internal sealed record WatchSample(double Seconds, int Pid, long VmPteKb, long Tables, long PteTables, long EmptyPteTables, long? ZeroPageTables, long ThpDeposits, bool Exact);

/// <summary>Source-generated JSON for the scan and exporter types (no reflection, so the single binary can be trimmed).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(ScanReport))]
[JsonSerializable(typeof(WatchSample))]
[JsonSerializable(typeof(List<WatchSample>))]
internal sealed partial class ScanJson : JsonSerializerContext
{
    /// <summary>One JSON object per line, for --watch.</summary>
    public static readonly ScanJson Lines = new(new JsonSerializerOptions
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = false,
    });
}

/// <summary>Table and CSV output of <c>ptlab scan</c>.</summary>
internal static class ScanOutput
{
    private static string N(long v) => v.ToString("N0", CultureInfo.InvariantCulture);

    private static string N(long? v) => v is { } x ? N(x) : "unknown";

    private static string Mib(long bytes) => (bytes / 1048576.0).ToString("N1", CultureInfo.InvariantCulture) + " MiB";

    private static IAnsiConsole Console(TextWriter w) => PlainConsole.Create(w, 160);

    /// <summary>One block per process: its figures, what each design would free, and (with --vmas) its VMAs.</summary>
    public static void WriteDetail(ScanReport report, TextWriter w)
    {
        var console = Console(w);
        foreach (var p in report.Processes)
        {
            string how = p.Exact ? "exact, PAGEMAP_SCAN" : "ESTIMATE from pagemap and VmPTE";
            console.WriteLine($"pid {p.Pid} ({p.Comm}): {how}{(p.Frozen ? ", stopped while scanned" : ", running while scanned")}, {p.ScanSeconds * 1000:0.0} ms");
            var t = new Table().Border(TableBorder.Simple);
            t.AddColumn("");
            t.AddColumn(new TableColumn("value").RightAligned());
            t.AddRow("VmPTE", N(p.VmPteKb) + " kB");
            t.AddRow("PTE tables", p.Exact ? N(p.PteTables) : $"{N(p.PteTablesBounds.Low)} .. {N(p.PteTablesBounds.High)}");
            t.AddRow("  empty", p.Exact ? $"{N(p.EmptyPteTables)} ({Mib(p.EmptyPteTableBytes)})" : $"{N(p.EmptyPteTablesBounds.Low)} .. {N(p.EmptyPteTablesBounds.High)}");
            t.AddRow("  zero-page only", N(p.ZeroPageTables));
            t.AddRow("  guard markers only", N(p.MarkerOnlyTables));
            t.AddRow("  shared by two VMAs", N(p.SharedTables));
            t.AddRow("THP deposits", N(p.ThpDeposits));
            t.AddRow("PMD+PUD tables", $"{N(p.UpperTables)} (expected {N(p.UpperTablesExpected.Low)} .. {N(p.UpperTablesExpected.High)})");
            t.AddRow("populated entries", N(p.PopulatedEntries));
            console.Write(t);
            var f = new Table().Border(TableBorder.Simple);
            f.AddColumn("design");
            f.AddColumn(new TableColumn("would free now").RightAligned());
            f.AddColumn("rule");
            foreach (var d in p.FreeNow)
            {
                f.AddRow(d.Design, $"{N(d.Tables)} tables, {Mib(d.Bytes)}", Markup.Escape(d.Rule));
            }

            console.Write(f);
            foreach (var i in p.Inconsistencies)
            {
                console.WriteLine("INCONSISTENT: " + i);
            }

            if (p.Vmas is { } vmas)
            {
                var v = new Table().Border(TableBorder.Simple);
                foreach (var h in new[] { "range", "perms", "flags", "name" })
                {
                    v.AddColumn(h);
                }

                foreach (var h in new[] { "tables", "empty", "zero-page", "markers", "deposits", "populated" })
                {
                    v.AddColumn(new TableColumn(h).RightAligned());
                }

                foreach (var m in vmas.Where(m => m.PteTables + m.ThpDeposits > 0))
                {
                    v.AddRow(
                        $"{m.Start:x12}-{m.End:x12}", m.Perms, string.Join(' ', m.VmFlags.Where(f => f is "ht" or "pf" or "io" or "hg" or "nh" or "lo" or "sd" or "um" or "uw" or "gu")), Markup.Escape(m.Name.Length > 40 ? "..." + m.Name[^37..] : m.Name),
                        N(m.PteTables) + (m.SharedTables > 0 ? $" ({N(m.SharedTables)} shared)" : ""),
                        N(m.EmptyPteTables), N(m.ZeroPageTables), N(m.MarkerOnlyTables), N(m.ThpDeposits), N(m.PopulatedEntries));
                }

                console.Write(v);
                console.WriteLine($"{vmas.Count(m => m.PteTables + m.ThpDeposits == 0):N0} VMAs without page tables not shown; a shared table counts in both VMAs and once in the totals.");
            }

            console.WriteLine("");
        }
    }

    /// <summary>The host ranking: one row per process, most empty-table bytes first, and a footer of what was skipped.</summary>
    public static void WriteRanking(ScanReport report, int top, TextWriter w)
    {
        var console = Console(w);
        var t = new Table().Border(TableBorder.Simple);
        t.AddColumn(new TableColumn("pid").RightAligned());
        t.AddColumn("comm");
        foreach (var h in new[] { "VmPTE", "PTE tables", "empty", "empty MiB", "zero-page", "deposits" })
        {
            t.AddColumn(new TableColumn(h).RightAligned());
        }

        foreach (var r in FreeNowRules.All)
        {
            t.AddColumn(new TableColumn(r.Design + " frees").RightAligned());
        }

        foreach (var p in report.Processes.Take(top))
        {
            var row = new List<string>
            {
                p.Pid.ToString(CultureInfo.InvariantCulture), Markup.Escape(p.Comm), N(p.VmPteKb) + " kB", N(p.PteTables) + (p.Exact ? "" : "+"),
                N(p.EmptyPteTables) + (p.Exact ? "" : "+"), (p.EmptyPteTableBytes / 1048576.0).ToString("N1", CultureInfo.InvariantCulture),
                N(p.ZeroPageTables), N(p.ThpDeposits),
            };
            row.AddRange(p.FreeNow.Select(d => N(d.Tables)));
            t.AddRow([.. row]);
        }

        console.Write(t);
        long empty = report.Processes.Sum(p => p.EmptyPteTableBytes);
        console.WriteLine($"{report.Processes.Count:N0} processes scanned in {report.WallSeconds:0.000} s; {Mib(empty)} of empty PTE tables in all" +
                          (report.Processes.Count > top ? $"; top {top} shown" : ""));
        console.WriteLine($"skipped: {report.KernelThreadsSkipped:N0} kernel threads, {report.BelowMinVmPte:N0} below --min-vmpte");
        foreach (var g in report.Failures.GroupBy(f => f.Kind))
        {
            console.WriteLine($"{g.Key}: {g.Count():N0} ({string.Join(", ", g.Take(20).Select(f => f.Comm is null ? f.Pid.ToString(CultureInfo.InvariantCulture) : $"{f.Pid} {f.Comm}"))}{(g.Count() > 20 ? ", ..." : "")})");
        }

        if (report.Processes.Any(p => p.Inconsistencies.Count > 0))
        {
            console.WriteLine($"inconsistent (running while scanned; use 'ptlab scan PID --freeze'): {string.Join(", ", report.Processes.Where(p => p.Inconsistencies.Count > 0).Select(p => p.Pid))}");
        }

        foreach (var r in report.Rules)
        {
            console.WriteLine($"rule {r.Design}: {Markup.Escape(r.Rule)}");
        }
    }

    /// <summary>One row per process, or with --vmas one row per VMA that has tables.</summary>
    public static string Csv(ScanReport report, bool vmas)
    {
        var sb = new StringBuilder();
        string designs = string.Join(",", FreeNowRules.All.Select(r => CamelCase(r.Design) + "FreeNowTables"));
        if (!vmas)
        {
            sb.AppendLine("pid,comm,method,exact,frozen,vmPteKb,pteTables,pteTablesLow,pteTablesHigh,emptyPteTables,emptyPteTablesLow,emptyPteTablesHigh,emptyPteTableBytes,zeroPageTables,markerOnlyTables,thpDeposits,sharedTables,populatedEntries,upperTables,upperTablesLow,upperTablesHigh,inconsistencies,scanSeconds," + designs);
            foreach (var p in report.Processes)
            {
                sb.Append(CultureInfo.InvariantCulture,
                    $"{p.Pid},{CsvField(p.Comm)},{p.Method},{B(p.Exact)},{B(p.Frozen)},{p.VmPteKb},{p.PteTables},{p.PteTablesBounds.Low},{p.PteTablesBounds.High},{p.EmptyPteTables},{p.EmptyPteTablesBounds.Low},{p.EmptyPteTablesBounds.High},{p.EmptyPteTableBytes},");
                sb.Append(CultureInfo.InvariantCulture,
                    $"{p.ZeroPageTables},{p.MarkerOnlyTables},{p.ThpDeposits},{p.SharedTables},{p.PopulatedEntries},{p.UpperTables},{p.UpperTablesExpected.Low},{p.UpperTablesExpected.High},{p.Inconsistencies.Count},{p.ScanSeconds.ToString("0.######", CultureInfo.InvariantCulture)},");
                sb.AppendLine(string.Join(",", p.FreeNow.Select(d => d.Tables.ToString(CultureInfo.InvariantCulture))));
            }

            return sb.ToString();
        }

        sb.AppendLine("pid,comm,start,end,perms,vmFlags,name,pteTables,emptyPteTables,zeroPageTables,markerOnlyTables,thpDeposits,sharedTables,populatedEntries");
        foreach (var p in report.Processes)
        {
            foreach (var m in p.Vmas ?? [])
            {
                sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"{p.Pid},{CsvField(p.Comm)},0x{m.Start:x},0x{m.End:x},{m.Perms},{string.Join(' ', m.VmFlags)},{CsvField(m.Name)},{m.PteTables},{m.EmptyPteTables},{m.ZeroPageTables},{m.MarkerOnlyTables},{m.ThpDeposits},{m.SharedTables},{m.PopulatedEntries}"));
            }
        }

        return sb.ToString();
    }

    private static string B(bool b) => b ? "true" : "false";

    /// <summary>"pte-ref" → "pteRef", for column names.</summary>
    internal static string CamelCase(string design)
    {
        var parts = design.Split('-', StringSplitOptions.RemoveEmptyEntries);
        return string.Concat(parts.Select((p, i) => i == 0 ? p : char.ToUpperInvariant(p[0]) + p[1..]));
    }

    internal static string CsvField(string s) =>
        s.IndexOfAny([',', '"', '\n', '\r']) < 0 ? s : "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";
}
