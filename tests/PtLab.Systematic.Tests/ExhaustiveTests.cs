using PtLab.Reclaim;
using PtLab.Sync;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>The exhaustive exploration runs every schedule within its preemption bound, and only those.</summary>
public class ExhaustiveTests(ITestOutputHelper output)
{
    /// <summary>
    /// CPUs that only pass scheduling points, never wait: CPU i passes <c>points[i]</c> of them.
    /// Nothing is mapped, so the invariants hold in every schedule.
    /// </summary>
    private static SystematicScenario Points(params int[] points) => new(
        "points",
        "CPUs passing scheduling points",
        10,
        16L << 20,
        _ => { },
        [.. points.Select(k => (Action<ScenarioContext, Mm.Cpu>)((c, _) =>
        {
            for (int i = 0; i < k; i++)
            {
                c.Scheduler.Reached(SchedulingPointKind.EntryLoad, null);
            }
        }))]);

    /// <summary>
    /// The schedules with at most <paramref name="bound"/> preemptions, counted independently of
    /// the explorer: CPU i runs <c>points[i] + 1</c> segments (a scheduling point ends each but the
    /// last), a schedule is an order of all segments that keeps each CPU's in order, and switching
    /// after a segment that ended at a point (not the CPU's last) is a preemption.
    /// </summary>
    private static long CountSchedules(int[] points, int bound)
    {
        var memo = new Dictionary<string, long>();
        long Count(int[] left, int last, int preemptions)
        {
            if (left.All(l => l == 0))
            {
                return 1;
            }

            string key = $"{string.Join(',', left)}|{last}|{preemptions}";
            if (memo.TryGetValue(key, out long known))
            {
                return known;
            }

            long total = 0;
            for (int i = 0; i < left.Length; i++)
            {
                if (left[i] == 0)
                {
                    continue;
                }

                int cost = last >= 0 && last != i && left[last] > 0 ? 1 : 0;
                if (preemptions + cost > bound)
                {
                    continue;
                }

                left[i]--;
                total += Count(left, i, preemptions + cost);
                left[i]++;
            }

            memo[key] = total;
            return total;
        }

        return Count([.. points.Select(k => k + 1)], -1, 0);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void TheScheduleCountMatchesAnIndependentCount(int bound)
    {
        int[] points = [3, 2, 2];
        var e = ExhaustiveExplorer.Explore(Points(points), Designs.Baseline, bound);
        long expected = CountSchedules(points, bound);
        output.WriteLine($"points {string.Join(',', points)}, at most {bound} preemptions: {e.Schedules} schedules explored, {expected} counted");
        Assert.True(e.Complete);
        Assert.Equal(0, e.Violations);
        Assert.Equal(expected, e.Schedules);
    }

    [Fact]
    public void ACleanDesignHasNoViolationWithinOnePreemption()
    {
        var e = ExhaustiveExplorer.Explore(SystematicScenarios.Find("ptreclaim-trylock")!, "pt-reclaim", 1);
        output.WriteLine($"ptreclaim-trylock on pt-reclaim, at most 1 preemption: {e.Schedules} schedules in {e.Elapsed.TotalSeconds:F1} s");
        Assert.True(e.Complete);
        Assert.Equal(0, e.Violations);
        Assert.True(e.Schedules > ExhaustiveExplorer.Explore(SystematicScenarios.Find("ptreclaim-trylock")!, "pt-reclaim", 0).Schedules);
    }

    [Fact]
    public void TheMissingPmdRecheckIsFoundWithinTwoPreemptionsAndReplays()
    {
        var s = SystematicScenarios.Find("ptreclaim-trylock")!;
        ExhaustiveResult? found = null;
        for (int bound = 0; bound <= 2 && found is null; bound++)
        {
            var e = ExhaustiveExplorer.Explore(s, "pt-reclaim", bound, Mutation.SkipPmdRecheck, stopAtFirst: true);
            output.WriteLine($"skip-pmd-recheck, at most {bound} preemptions: {e.Schedules} schedules, {e.FirstViolation ?? "no violation"}");
            if (e.FirstViolation is not null)
            {
                found = e;
            }
        }

        Assert.NotNull(found);
        var replay = ExhaustiveExplorer.Replay(s, "pt-reclaim", found.Bound, found.FirstFailingChoices!, Mutation.SkipPmdRecheck);
        Assert.Equal(found.FirstViolation, replay.Violation);
    }
}
