namespace PtLab.Sync;

/// <summary>One recorded choice of a <see cref="PreemptionBoundedStrategy"/> run.</summary>
/// <param name="Options">How many CPUs could have been chosen.</param>
/// <param name="Chosen">The option taken (0 is the default: keep running, or the first CPU in order).</param>
/// <param name="PreemptionsBefore">Preemptions the schedule had made before this choice.</param>
/// <param name="Preemptive">Whether taking any option but 0 preempts a CPU that could continue.</param>
public readonly record struct ScheduleChoice(int Options, int Chosen, int PreemptionsBefore, bool Preemptive);

/// <summary>
/// One schedule of a depth-first exploration bounded by preemptions (CHESS's iterative context
/// bounding, Musuvathi and Qadeer, PLDI 2007): it follows a prefix of choices, then takes the
/// default at every later choice, and records every choice it met so that the explorer can
/// backtrack to the deepest one with an untried option within the bound.
/// </summary>
/// <remarks>
/// <para>
/// A preemption is a switch away from a CPU that could continue: at a scheduling point that is
/// not a wait, running the current CPU on costs nothing and each other enabled CPU costs one. A
/// CPU that finished hands over for free to any enabled CPU (a choice without cost), and so does
/// the start. A CPU at a wait point (a spin on a lock, a grace period, a pending switch) cannot
/// progress until another runs; it hands over round-robin to the next enabled CPU, so that a spin
/// loop adds no branches: who runs while it waits is still explored through the preemptions of
/// the CPUs that run.
/// </para>
/// <para>
/// Replay needs the code under test to be deterministic between scheduling points (as seeds
/// already need); a prefix that meets different options than the run that recorded it throws.
/// </para>
/// </remarks>
/// <param name="bound">The most preemptions a schedule may make.</param>
/// <param name="prefix">The choices to take first, one per recorded choice point.</param>
public sealed class PreemptionBoundedStrategy(int bound, IReadOnlyList<int> prefix) : ISchedulingStrategy
{
    private readonly List<ScheduleChoice> _choices = [];
    private int[] _options = [];
    private int _preemptions;

    /// <summary>The preemption bound.</summary>
    public int Bound { get; } = bound;

    /// <summary>The choices the last run met, in order.</summary>
    public IReadOnlyList<ScheduleChoice> Choices => _choices;

    /// <summary>Preemptions the last run made.</summary>
    public int Preemptions => _preemptions;

    /// <inheritdoc/>
    public void Start(int cpus)
    {
        _choices.Clear();
        _options = new int[cpus];
        _preemptions = 0;
    }

    /// <inheritdoc/>
    public int Next(int current, bool[] enabled, bool waiting, long step)
    {
        int n = 0;
        bool preemptive = false;
        if (current >= 0 && enabled[current] && !waiting)
        {
            // The current CPU may run on (option 0, free) or be preempted by any other (cost 1 each).
            _options[n++] = current;
            for (int i = 0; i < enabled.Length; i++)
            {
                if (enabled[i] && i != current)
                {
                    _options[n++] = i;
                }
            }

            preemptive = true;
        }
        else if (current >= 0 && enabled[current])
        {
            // A wait: hand over round-robin, no branch.
            for (int k = 1; k < enabled.Length; k++)
            {
                int i = (current + k) % enabled.Length;
                if (enabled[i])
                {
                    return i;
                }
            }

            return current;
        }
        else
        {
            // The start, or the current CPU finished: any enabled CPU, for free.
            for (int i = 0; i < enabled.Length; i++)
            {
                if (enabled[i])
                {
                    _options[n++] = i;
                }
            }
        }

        if (n == 0)
        {
            return current;
        }

        if (n == 1 || (preemptive && _preemptions >= Bound))
        {
            // Nothing to choose: one option, or the bound is spent and only the default is left
            // (not recorded, so a replay of the same prefix meets the same choice points).
            return _options[0];
        }

        int pos = _choices.Count;
        int chosen = 0;
        if (pos < prefix.Count)
        {
            chosen = prefix[pos];
            if (chosen >= n)
            {
                throw new InvalidOperationException(
                    $"replay diverged at choice {pos}: option {chosen} of {n}; the code under test is not deterministic between scheduling points");
            }
        }

        _choices.Add(new ScheduleChoice(n, chosen, _preemptions, preemptive));
        if (preemptive && chosen != 0)
        {
            _preemptions++;
        }

        return _options[chosen];
    }

    /// <summary>
    /// The prefix of the next schedule in depth-first order after a run that met
    /// <paramref name="choices"/>, or null when every schedule within <paramref name="bound"/> was run.
    /// </summary>
    public static int[]? NextPrefix(IReadOnlyList<ScheduleChoice> choices, int bound)
    {
        for (int i = choices.Count - 1; i >= 0; i--)
        {
            var c = choices[i];
            int alt = c.Chosen + 1;
            if (alt < c.Options && (!c.Preemptive || c.PreemptionsBefore + 1 <= bound))
            {
                var next = new int[i + 1];
                for (int j = 0; j < i; j++)
                {
                    next[j] = choices[j].Chosen;
                }

                next[i] = alt;
                return next;
            }
        }

        return null;
    }
}
