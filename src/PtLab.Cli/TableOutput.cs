using System.Globalization;
using Spectre.Console;

namespace PtLab.Cli;

/// <summary>The human table, shaped like the seed cover letter's before/after figures.</summary>
internal static class TableOutput
{
    public static void Write(RunReport r, TextWriter writer)
    {
        var console = PlainConsole.Create(writer);
        string p = ReportParameters.Describe(r.Parameters);
        console.WriteLine($"{r.Scenario} on design '{r.Design}' ({p})");
        writer.WriteLine("before: right after the scenario's mapping; after: at its end" +
                         (r.Checkpoints.Count > 0 ? "; the checkpoints below are the steps in between" : ""));
        var t = new Table().Border(TableBorder.Simple);
        t.AddColumn("");
        t.AddColumn(new TableColumn("before").RightAligned());
        t.AddColumn(new TableColumn("after").RightAligned());
        t.AddColumn(new TableColumn("delta").RightAligned());
        Row(t, "VmSize", r.Before.VmSizeKb, r.After.VmSizeKb, true);
        Row(t, "VmRSS", r.Before.VmRssKb, r.After.VmRssKb, true);
        Row(t, "RssAnon", r.Before.RssAnonKb, r.After.RssAnonKb, true);
        // File and shared memory rows only for runs that had any (at some checkpoint).
        var all = r.Checkpoints.Select(c => c.Status).Append(r.Before).Append(r.After).ToList();
        if (all.Any(s => s.RssFileKb != 0 || s.RssShmemKb != 0))
        {
            Row(t, "RssFile", r.Before.RssFileKb, r.After.RssFileKb, true);
            Row(t, "RssShmem", r.Before.RssShmemKb, r.After.RssShmemKb, true);
        }

        Row(t, "VmSwap", r.Before.VmSwapKb, r.After.VmSwapKb, true);
        Row(t, "VmPTE", r.Before.VmPteKb, r.After.VmPteKb, true);
        Row(t, "PTE tables", r.Before.Tables.Pte, r.After.Tables.Pte, false);
        Row(t, "PMD tables", r.Before.Tables.Pmd, r.After.Tables.Pmd, false);
        Row(t, "PUD tables", r.Before.Tables.Pud, r.After.Tables.Pud, false);
        console.Write(t);
        if (r.Checkpoints.Count > 0)
        {
            // Where the designs differ: a design can end where another does and still hold tables midway.
            var cp = new Table().Border(TableBorder.Simple);
            cp.AddColumn("checkpoint");
            foreach (var h in new[] { "VmRSS", "VmPTE", "PTE tables", "PMD tables", "PUD tables" })
            {
                cp.AddColumn(new TableColumn(h).RightAligned());
            }

            foreach (var (label, s) in r.Checkpoints.Select(x => (x.Label, x.Status)).Prepend(("before", r.Before)).Append(("after", r.After)))
            {
                cp.AddRow(label, Human.Kb(s.VmRssKb), Human.Kb(s.VmPteKb), Human.Count(s.PteTables), Human.Count(s.PmdTables), Human.Count(s.PudTables));
            }

            console.Write(cp);
        }

        var c = r.Counters;
        console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"faults {c.Faults:N0}, tables allocated {c.TablesAllocated:N0} / freed {c.TablesFreed:N0}, TLB flushes {c.TlbFlushes:N0}, grace periods {c.GracePeriods:N0}"));
        console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wall {r.WallSeconds:0.000} s, {r.Host.FaultsPerSecond:N0} faults/s, ptlab peak RSS {Human.Bytes(r.Host.PeakWorkingSetBytes)}"));
        if (r.Host.Run is { } run)
        {
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"the run with its machine built and torn down: wall {run.WallSeconds:0.000} s, CPU {run.CpuSeconds:0.000} s, peak RSS {Human.Bytes(run.PeakRssBytes)}"));
        }

        r.Profile?.Write(writer);
        foreach (var note in r.Notes)
        {
            writer.WriteLine(note);
        }
    }

    private static void Row(Table t, string name, long before, long after, bool kb)
    {
        string F(long v) => kb ? string.Create(CultureInfo.InvariantCulture, $"{v:N0} kB") : v.ToString("N0", CultureInfo.InvariantCulture);
        long d = after - before;
        string delta = (d > 0 ? "+" : "") + F(d);
        t.AddRow(name, F(before), F(after), delta);
    }
}
