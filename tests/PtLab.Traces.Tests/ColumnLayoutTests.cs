namespace PtLab.Traces.Tests;

/// <summary>
/// The reader expands each row group's columns by how full they are (every row, a dense part, a
/// few rows, none) and keeps a column's buffer between groups: rows must read back the same
/// whatever the mix from one group to the next.
/// </summary>
public sealed class ColumnLayoutTests : TempDir
{
    private const int Group = 1 << 16;

    [Fact]
    public void ColumnsFullThenNullThenSparseThenDenseReadBackRowForRow()
    {
        var rows = new List<TraceEvent> { TraceEvent.Create(TraceEventKind.Task, 1000, 7, 7) with { Path = "x" } };
        long t = 2000;
        ulong page = 0x7f00_0000_0000;
        TraceEvent Madvise(int i) =>
            (TraceEvent.Create(TraceEventKind.Madvise, t++, 7, 7) with { Address = page + ((ulong)i << 12), Length = 4096, Prot = 4 }).Returned(0, 100 + i);
        TraceEvent Fault(int i) => TraceEvent.Fault(t++, 7, 7, page + ((ulong)i << 12), 6, 0x400000);
        // Group 0: length, prot, result and duration in (nearly) every row; group 1: in none;
        // group 2: in one row in 500 (scattered); group 3: in one row in 3 (walked back); then a
        // status sample (seven columns at once) in a few rows, and faults only again.
        for (int i = 0; i < Group - 1; i++)
        {
            rows.Add(Madvise(i));
        }

        for (int i = 0; i < Group; i++)
        {
            rows.Add(Fault(i));
        }

        for (int i = 0; i < Group; i++)
        {
            rows.Add(i % 500 == 7 ? Madvise(i) : Fault(i));
        }

        for (int i = 0; i < Group; i++)
        {
            rows.Add(i % 3 == 1 ? Madvise(i) : i % 9_000 == 5 ? TraceEvent.Sample(TraceEventKind.Status, t++, 7, 7, new StatusFigures(10, 9, 8, 1, 0, 0, 12 + i)) : Fault(i));
        }

        for (int i = 0; i < 1000; i++)
        {
            rows.Add(Fault(i));
        }

        using var r = TraceReader.Open(Write(rows));
        AssertReadsBack(r, rows);
    }

    [Fact]
    public void TheFooterBoundsHoldTheSummarysFaultsAndPeaks()
    {
        // Two processes whose rows share row groups, each sampled now and then: the footer bounds
        // can only over-count (the pids of a group, its largest VmPTE), never under-count.
        var rows = new List<TraceEvent>
        {
            TraceEvent.Create(TraceEventKind.Task, 1000, 7, 7) with { Path = "a" },
            TraceEvent.Create(TraceEventKind.Task, 1001, 9, 9) with { Path = "b" },
        };
        long t = 2000;
        for (int i = 0; i < 3 * Group; i++)
        {
            int pid = i % 5 == 0 ? 9 : 7;
            rows.Add(i % 4_000 is 3 or 5
                ? TraceEvent.Sample(TraceEventKind.Status, t++, pid, pid, new StatusFigures(10, 9, 8, 1, 0, 0, (pid == 9 ? 100 : 40) + (i / 1000)))
                : TraceEvent.Fault(t++, pid, pid, 0x7f00_0000_0000 + ((ulong)i << 12), 6, 0x400000));
        }

        using var r = TraceReader.Open(Write(rows));
        var bound = r.FooterBounds();
        var summary = TraceSummary.Compute(r);
        long faults = summary.Counts[(int)TraceEventKind.Fault];
        long peaks = summary.Processes.Sum(p => p.PeakVmPteKb);
        Assert.NotNull(bound);
        Assert.Equal(rows.Count(e => e.Kind == TraceEventKind.Fault), faults);
        Assert.Equal(rows.Count - rows.Count(e => e.Kind == TraceEventKind.Status), bound.Value.Faults);
        Assert.InRange(bound.Value.PeakVmPteKb, peaks, 3 * 2 * peaks);

        // One process alone: every group holds one pid, and the bound is its peak.
        var one = rows.Where(e => e.Pid == 7).ToList();
        using var r1 = TraceReader.Open(Write(one, name: "one.parquet"));
        var b1 = r1.FooterBounds();
        Assert.NotNull(b1);
        Assert.Equal(TraceSummary.Compute(r1).Processes.Single().PeakVmPteKb, b1.Value.PeakVmPteKb);
    }
}
