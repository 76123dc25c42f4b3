using System.Diagnostics;
using PtLab.Reclaim;
using PtLab.Workloads;

namespace PtLab.Cli;

/// <summary>
/// The work a design's background thread does once a measured workload went idle: the table
/// scanner (<see cref="Kscand"/>) gets one pass, on the workload's CPU, now free, after the
/// measured phase and outside its wall time; the tables left are read after it.
/// </summary>
internal static class BackgroundScan
{
    /// <summary>
    /// Runs the idle pass when the design has a background thread: returns the result with the
    /// status after it, and a note saying what the pass did and how long it took; otherwise the
    /// result as it was and no note.
    /// </summary>
    public static (ScenarioResult Result, string? Note) WhenIdle(ModelTarget target, ScenarioResult result)
    {
        if (!Designs.RunsInBackground(target.Mm.Design.Name))
        {
            return (result, null);
        }

        var sw = Stopwatch.StartNew();
        var s = Kscand.Pass(target.Machine, target.Cpu);
        sw.Stop();
        var totals = target.Mm.Design is ScannerReclaim scanner ? scanner.Totals : s;
        string note =
            $"note: the table scanner's thread ran one pass when the workload went idle (outside the measured wall time, {Human.Seconds(sw.Elapsed.TotalSeconds)}): " +
            $"it read {Human.Plural(s.Scanned, "table")} and freed {Human.Count(s.Freed)} ({Human.Count(s.Hinted)} skipped by their hint, {Human.Count(s.Delayed)} too recently emptied); " +
            $"over the whole run its scans (pressure, period and this pass) freed {Human.Count(totals.Freed)}";
        return (result with { After = target.Status() }, note);
    }
}
