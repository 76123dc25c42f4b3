namespace PtLab.Phys;

/// <summary>What an allocation is for, so that failures can be injected at chosen points.</summary>
[Flags]
public enum AllocSite
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>A user page (anonymous fault, COW, swap-in).</summary>
    Page = 1,
    /// <summary>A page-table page, and with it the design's per-table state (the seed's pte_ref).</summary>
    Table = 2,
    /// <summary>Both.</summary>
    All = Page | Table,
}

/// <summary>
/// Makes allocations fail on purpose (<c>CONFIG_FAULT_INJECTION</c>'s failslab/fail_page_alloc):
/// at the Nth allocation of the chosen sites, or at random with a probability, seeded so a run
/// replays. A failed allocation looks exactly like exhausted memory to its caller.
/// </summary>
public sealed class FaultInjector
{
    private readonly Lock _lock = new();
    private readonly Random _random;
    private long _seen;
    private long _injected;

    /// <summary>Creates an injector.</summary>
    /// <param name="sites">Which allocations may fail.</param>
    /// <param name="probability">Chance that each allocation at those sites fails.</param>
    /// <param name="failAt">Also fail exactly the allocation with this 1-based number, or 0 for none.</param>
    /// <param name="seed">Seed of the random choices.</param>
    public FaultInjector(AllocSite sites, double probability = 0, long failAt = 0, int seed = 1)
    {
        if (probability is < 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(probability), probability, "must be within [0, 1]");
        }

        Sites = sites;
        Probability = probability;
        FailAt = failAt;
        _random = new Random(seed);
    }

    /// <summary>Which allocations may fail.</summary>
    public AllocSite Sites { get; }

    /// <summary>Chance that each allocation fails.</summary>
    public double Probability { get; }

    /// <summary>The allocation number that fails, or 0.</summary>
    public long FailAt { get; }

    /// <summary>Failures injected so far.</summary>
    public long Injected => Volatile.Read(ref _injected);

    /// <summary>Whether this allocation at <paramref name="site"/> must fail.</summary>
    public bool ShouldFail(AllocSite site)
    {
        if ((Sites & site) == 0)
        {
            return false;
        }

        lock (_lock)
        {
            long n = ++_seen;
            bool fail = n == FailAt || (Probability > 0 && _random.NextDouble() < Probability);
            if (fail)
            {
                _injected++;
            }

            return fail;
        }
    }
}
