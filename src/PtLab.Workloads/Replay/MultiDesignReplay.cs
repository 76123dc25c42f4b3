using PtLab.Mm;
using PtLab.Traces;

namespace PtLab.Workloads.Replay;

/// <summary>
/// Replays one trace under several designs, each on its own machine. The trace is decoded once:
/// its rows go in batches to every design of a group, the designs of a group side by side on the
/// host's cores. Designs that would not fit in host memory together run in separate groups, each
/// group reading the trace again.
/// </summary>
public static class MultiDesignReplay
{
    /// <summary>Replays <paramref name="path"/> under each design of each group; results in the order the designs were given.</summary>
    /// <param name="path">The trace.</param>
    /// <param name="groups">Designs to run together, group by group: name and factory.</param>
    /// <param name="ramBytes">Simulated RAM of each machine.</param>
    /// <param name="cpus">Simulated CPUs of each machine.</param>
    /// <param name="progress">Receives the fraction of rows replayed (of all groups).</param>
    /// <param name="pageCacheState">Start mapped files with the page-cache residency the trace recorded (<see cref="ReplayOptions.PageCacheState"/>); false replays every file as cold.</param>
    /// <exception cref="TraceFormatException">The trace is malformed; the message names the file and row.</exception>
    public static IReadOnlyList<ReplayResult> Run(
        string path, IReadOnlyList<IReadOnlyList<(string Name, Func<IPageTableReclaim> Factory)>> groups, long ramBytes, int cpus,
        Action<double>? progress = null, bool pageCacheState = true)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var results = new List<ReplayResult>();
        for (int g = 0; g < groups.Count; g++)
        {
            using var reader = TraceReader.Open(path);
            var replayers = groups[g].Select(d => new TraceReplayer(path, new ReplayOptions { Design = d.Name, DesignFactory = d.Factory, RamBytes = ramBytes, Cpus = cpus, PageCacheState = pageCacheState }.WithHostOf(reader.Metadata))).ToArray();
            long rows = Math.Max(1, reader.Rows), done = 0;
            foreach (var batch in reader.ReadBatches())
            {
                if (replayers.Length == 1)
                {
                    replayers[0].Apply(batch);
                }
                else
                {
                    try
                    {
                        Parallel.ForEach(replayers, r => r.Apply(batch));
                    }
                    catch (AggregateException e) when (e.InnerExceptions.OfType<TraceFormatException>().FirstOrDefault() is { } bad)
                    {
                        throw bad; // every design stops at the same malformed row: one message
                    }
                }

                done += batch.Count;
                progress?.Invoke((g + ((double)done / rows)) / groups.Count);
            }

            results.AddRange(replayers.Select(r => r.Finish()));
        }

        return results;
    }

}

/// <summary>How close a replay must come to the kernel's figures to count as faithful.</summary>
public static class ReplayFidelity
{
    /// <summary>Below this many kB a figure is judged by an absolute allowance: two tables make more than 2% of it.</summary>
    public const long SmallKb = 400;

    /// <summary>The absolute allowance for small figures, in kB (two tables).</summary>
    public const long SmallAllowanceKb = 8;

    /// <summary>The allowance at exit: 2%.</summary>
    public const double ExitPercent = 2;

    /// <summary>The allowance at every sample: 5%.</summary>
    public const double SamplePercent = 5;

    /// <summary>Whether <paramref name="modelKb"/> is within <paramref name="percent"/> of <paramref name="kernelKb"/> (or the small-figure allowance).</summary>
    public static bool Within(long kernelKb, long modelKb, double percent)
    {
        long diff = Math.Abs(modelKb - kernelKb);
        return kernelKb < SmallKb ? diff <= SmallAllowanceKb : diff <= kernelKb * percent / 100;
    }

    /// <summary>The difference as a percentage of the kernel's figure (0 when both are 0).</summary>
    public static double Percent(long kernelKb, long modelKb) =>
        kernelKb == 0 ? (modelKb == 0 ? 0 : 100) : 100.0 * (modelKb - kernelKb) / kernelKb;
}
