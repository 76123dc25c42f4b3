namespace PtLab.Sync;

/// <summary>Chooses which simulated CPU runs next. Seeded, so a seed gives one schedule.</summary>
public interface ISchedulingStrategy
{
    /// <summary>Begins a schedule of <paramref name="cpus"/> CPUs.</summary>
    void Start(int cpus);

    /// <summary>
    /// The CPU to run after <paramref name="current"/> (-1 at the start) reached a point.
    /// <paramref name="waiting"/>: the current CPU cannot progress (a spin, or it finished), so
    /// another enabled CPU must be chosen when there is one.
    /// </summary>
    int Next(int current, bool[] enabled, bool waiting, long step);
}

/// <summary>The strategies by name, for the command line.</summary>
public static class SchedulingStrategies
{
    /// <summary>The known names.</summary>
    public static IReadOnlyList<string> Names { get; } = ["random", "pct"];

    /// <summary>Creates the strategy <paramref name="name"/> for one schedule.</summary>
    /// <param name="name">random or pct.</param>
    /// <param name="seed">The schedule's seed.</param>
    /// <param name="estimatedSteps">For PCT: the step count to place priority changes over.</param>
    /// <param name="depth">For PCT: the bug depth d (d - 1 priority changes).</param>
    public static ISchedulingStrategy Create(string name, int seed, long estimatedSteps, int depth = 3) => name switch
    {
        "random" => new RandomWalkStrategy(seed),
        "pct" => new PctStrategy(seed, estimatedSteps, depth),
        _ => throw new ArgumentException($"unknown strategy '{name}' (known: {string.Join(", ", Names)})", nameof(name)),
    };
}

/// <summary>Random walk: at every point, any enabled CPU (another one at a wait) with equal chance.</summary>
public sealed class RandomWalkStrategy(int seed) : ISchedulingStrategy
{
    private readonly Random _rng = new(seed);

    /// <inheritdoc/>
    public void Start(int cpus)
    {
    }

    /// <inheritdoc/>
    public int Next(int current, bool[] enabled, bool waiting, long step)
    {
        int count = 0;
        for (int i = 0; i < enabled.Length; i++)
        {
            if (enabled[i] && !(waiting && i == current))
            {
                count++;
            }
        }

        if (count == 0)
        {
            return current;
        }

        int pick = _rng.Next(count);
        for (int i = 0; i < enabled.Length; i++)
        {
            if (enabled[i] && !(waiting && i == current) && pick-- == 0)
            {
                return i;
            }
        }

        return current;
    }
}

/// <summary>
/// PCT (Burckhardt et al., ASPLOS 2010): random distinct priorities, the highest-priority enabled
/// CPU runs, and at d - 1 random steps over the estimated length the running CPU drops below
/// everyone. A CPU that waits yields: it drops to the bottom, so the CPU it waits for can run.
/// </summary>
public sealed class PctStrategy : ISchedulingStrategy
{
    private readonly Random _rng;
    private readonly long _estimatedSteps;
    private readonly int _depth;
    private long[] _priority = [];
    private long[] _changePoints = [];
    private long _lowest;

    /// <summary>Creates a PCT strategy.</summary>
    public PctStrategy(int seed, long estimatedSteps, int depth)
    {
        _rng = new Random(seed);
        _estimatedSteps = Math.Max(2, estimatedSteps);
        _depth = Math.Max(1, depth);
    }

    /// <inheritdoc/>
    public void Start(int cpus)
    {
        // Initial priorities d .. d + n - 1 in random order; change points take 1 .. d - 1 below them.
        var order = Enumerable.Range(0, cpus).ToArray();
        _rng.Shuffle(order);
        _priority = new long[cpus];
        for (int i = 0; i < cpus; i++)
        {
            _priority[order[i]] = _depth + i;
        }

        _changePoints = new long[_depth - 1];
        for (int i = 0; i < _changePoints.Length; i++)
        {
            _changePoints[i] = 1 + _rng.NextInt64(_estimatedSteps);
        }

        _lowest = 0;
    }

    /// <inheritdoc/>
    public int Next(int current, bool[] enabled, bool waiting, long step)
    {
        if (current >= 0)
        {
            for (int i = 0; i < _changePoints.Length; i++)
            {
                if (_changePoints[i] == step)
                {
                    _priority[current] = _depth - 1 - i;
                }
            }

            if (waiting)
            {
                _priority[current] = --_lowest;
            }
        }

        int best = -1;
        for (int i = 0; i < enabled.Length; i++)
        {
            if (enabled[i] && !(waiting && i == current) && (best < 0 || _priority[i] > _priority[best]))
            {
                best = i;
            }
        }

        return best < 0 ? current : best;
    }
}
