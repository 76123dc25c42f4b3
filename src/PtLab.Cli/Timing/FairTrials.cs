namespace PtLab.Cli;

/// <summary>The median of repeated measurements, with their range.</summary>
internal sealed record Spread(double Median, double Min, double Max)
{
    public static Spread Of(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        if (v.Length == 0)
        {
            return new Spread(0, 0, 0);
        }

        double median = v.Length % 2 == 1 ? v[v.Length / 2] : (v[(v.Length / 2) - 1] + v[v.Length / 2]) / 2;
        return new Spread(median, v[0], v[^1]);
    }

    /// <summary>Each figure rounded to <paramref name="digits"/> decimals, for reports.</summary>
    public Spread Round(int digits) => new(Math.Round(Median, digits), Math.Round(Min, digits), Math.Round(Max, digits));

    /// <summary>Whether the two ranges share no value: a difference that survives the noise of these trials.</summary>
    public bool Separate(Spread other) => Max < other.Min || other.Max < Min;
}

/// <summary>
/// Fair timing of several contenders (designs) in one process: a warm-up of every contender first, so
/// the JIT and the heap are warm before anything is measured; then repeated trials, each running every
/// contender once, in an order rotated from trial to trial so no contender always goes first; a full
/// garbage collection before each measured run, so one contender's garbage is not collected on
/// another's time. Report the median and the min-max of the trials, and how many there were.
/// </summary>
internal static class FairTrials
{
    /// <summary>The order of trial <paramref name="trial"/>: <paramref name="names"/> rotated by the trial's number.</summary>
    public static IReadOnlyList<string> Order(IReadOnlyList<string> names, int trial) =>
        [.. Enumerable.Range(0, names.Count).Select(i => names[(i + trial) % names.Count])];

    /// <summary>
    /// Runs <paramref name="warmUp"/> on every contender, then <paramref name="trials"/> trials of
    /// <paramref name="measure"/>; returns each contender's results in trial order, and each trial's order.
    /// </summary>
    public static (Dictionary<string, List<T>> Results, List<IReadOnlyList<string>> Orders) Run<T>(
        IReadOnlyList<string> names, int trials, Action<string>? warmUp, Func<string, int, T> measure)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(trials, 1);
        if (warmUp is not null)
        {
            foreach (var n in names)
            {
                warmUp(n);
            }
        }

        var results = names.ToDictionary(n => n, _ => new List<T>(), StringComparer.Ordinal);
        var orders = new List<IReadOnlyList<string>>();
        for (int t = 0; t < trials; t++)
        {
            var order = Order(names, t);
            orders.Add(order);
            foreach (var n in order)
            {
                Quiesce();
                results[n].Add(measure(n, t));
            }
        }

        return (results, orders);
    }

    /// <summary>
    /// A full, blocking collection, so the next measured run starts with no garbage of the previous
    /// one; the last one aggressive, so the heap the previous run freed goes back to the host (not
    /// kept committed for reuse) and the next run's resident set and peak are its own.
    /// </summary>
    public static void Quiesce()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }
}
