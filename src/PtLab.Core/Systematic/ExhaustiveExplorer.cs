using System.Diagnostics;
using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Systematic;

/// <summary>What an exhaustive exploration up to a preemption bound found.</summary>
/// <param name="Bound">The preemption bound.</param>
/// <param name="Schedules">Schedules run: every schedule within the bound when <paramref name="Complete"/>.</param>
/// <param name="Violations">Schedules that broke an invariant.</param>
/// <param name="FirstViolation">What the first failing schedule broke, or null.</param>
/// <param name="FirstFailingSchedule">The number (from 1, in depth-first order) of the first failing schedule, or null.</param>
/// <param name="FirstFailingChoices">The choices that replay the first failing schedule, or null.</param>
/// <param name="Complete">Whether every schedule within the bound was run (not cut by a budget or the first violation).</param>
/// <param name="Elapsed">Wall time.</param>
/// <param name="TotalSteps">Scheduling points over all schedules.</param>
/// <param name="MaxChoices">The most choice points one schedule met.</param>
public sealed record ExhaustiveResult(
    int Bound,
    long Schedules,
    long Violations,
    string? FirstViolation,
    long? FirstFailingSchedule,
    IReadOnlyList<int>? FirstFailingChoices,
    bool Complete,
    TimeSpan Elapsed,
    long TotalSteps,
    int MaxChoices)
{
    /// <summary>Schedules per second.</summary>
    public double SchedulesPerSecond => Schedules / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// Runs every schedule of a scenario with at most a given number of preemptions, depth first:
/// each schedule replays the prefix of choices the last one backtracked to, takes the next option
/// there, and the defaults after it (<see cref="PreemptionBoundedStrategy"/>). Deterministic: the
/// same scenario, design and bound give the same schedules in the same order.
/// </summary>
public static class ExhaustiveExplorer
{
    /// <summary>Explores every schedule of <paramref name="scenario"/> on <paramref name="design"/> within <paramref name="preemptions"/> preemptions.</summary>
    /// <param name="scenario">The race.</param>
    /// <param name="design">The design under test.</param>
    /// <param name="preemptions">The preemption bound (0 or more).</param>
    /// <param name="mutation">A protocol break, to show the exploration catches it.</param>
    /// <param name="stopAtFirst">Stop at the first violation.</param>
    /// <param name="budget">Stop (incomplete) after this much wall time.</param>
    /// <param name="everyStep">Also check the step invariants at every scheduling point.</param>
    public static ExhaustiveResult Explore(
        SystematicScenario scenario, string design, int preemptions, Mutation mutation = Mutation.None,
        bool stopAtFirst = false, TimeSpan? budget = null, bool everyStep = false)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        ArgumentOutOfRangeException.ThrowIfNegative(preemptions);
        var sw = Stopwatch.StartNew();
        long schedules = 0, violations = 0, steps = 0;
        long? firstAt = null;
        string? first = null;
        IReadOnlyList<int>? firstChoices = null;
        int maxChoices = 0;
        int[]? prefix = [];
        while (prefix is not null)
        {
            if (budget is { } b && sw.Elapsed > b)
            {
                break;
            }

            var strategy = new PreemptionBoundedStrategy(preemptions, prefix);
            var r = SystematicTester.RunWith(scenario, design, strategy, seed: 0, mutation, everyStep: everyStep);
            schedules++;
            steps += r.Steps;

            maxChoices = Math.Max(maxChoices, strategy.Choices.Count);
            if (!r.Ok)
            {
                violations++;
                if (first is null)
                {
                    first = r.Violation;
                    firstAt = schedules;
                    firstChoices = [.. strategy.Choices.Select(c => c.Chosen)];
                }

                if (stopAtFirst)
                {
                    return new ExhaustiveResult(preemptions, schedules, violations, first, firstAt, firstChoices, false, sw.Elapsed, steps, maxChoices);
                }
            }

            prefix = PreemptionBoundedStrategy.NextPrefix(strategy.Choices, preemptions);
        }

        return new ExhaustiveResult(preemptions, schedules, violations, first, firstAt, firstChoices, prefix is null, sw.Elapsed, steps, maxChoices);
    }

    /// <summary>Replays the one schedule that <paramref name="choices"/> (as an exploration reported them) describe.</summary>
    public static ScheduleResult Replay(SystematicScenario scenario, string design, int preemptions, IReadOnlyList<int> choices, Mutation mutation = Mutation.None, bool everyStep = false) =>
        SystematicTester.RunWith(scenario, design, new PreemptionBoundedStrategy(preemptions, choices), seed: 0, mutation, everyStep: everyStep);
}
