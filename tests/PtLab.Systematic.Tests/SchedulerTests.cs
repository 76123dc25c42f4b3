using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Systematic.Tests;

/// <summary>The scheduler itself: replay, deadlock detection, and one CPU at a time.</summary>
public class SchedulerTests
{
    [Theory]
    [InlineData("walker-dontneed-fault", "pte-ref", "random")]
    [InlineData("ptreclaim-trylock", "pt-reclaim", "pct")]
    [InlineData("percpu-switch", "atomic", "random")]
    public void TheSameSeedReplaysTheSameInterleaving(string scenario, string design, string strategy)
    {
        var s = SystematicScenarios.Find(scenario)!;
        var a = SystematicTester.RunOne(s, design, strategy, 77);
        var b = SystematicTester.RunOne(s, design, strategy, 77);
        var c = SystematicTester.RunOne(s, design, strategy, 78);
        Assert.Equal(a.Scheduler.TraceLines(), b.Scheduler.TraceLines());
        Assert.NotEqual(a.Scheduler.TraceLines(), c.Scheduler.TraceLines());
    }

    [Fact]
    public void AFailingSeedReplaysToTheSameViolation()
    {
        var s = SystematicScenarios.Find("ptreclaim-trylock")!;
        var found = SystematicTester.Explore(s, "pt-reclaim", "random", 600, 0, Mutation.SkipPmdRecheck, stopAtFirst: true);
        Assert.NotNull(found.FirstFailingSeed);
        var first = SystematicTester.RunOne(s, "pt-reclaim", "random", found.FirstFailingSeed.Value, Mutation.SkipPmdRecheck);
        var again = SystematicTester.RunOne(s, "pt-reclaim", "random", found.FirstFailingSeed.Value, Mutation.SkipPmdRecheck);
        Assert.Equal(found.FirstViolation, first.Violation);
        Assert.Equal(first.Scheduler.TraceLines(), again.Scheduler.TraceLines());
        Assert.Contains("cpu", first.Scheduler.FormatTrace(20));
    }

    [Fact]
    public void TwoCpusTakingTwoLocksInOppositeOrderAreReportedAsADeadlock()
    {
        var words = new int[2];
        var a = new LockClass("a", LockKind.Spin);
        var b = new LockClass("b", LockKind.Spin);
        int deadlocks = 0;
        for (int seed = 0; seed < 50; seed++)
        {
            var sched = new DeterministicScheduler(new RandomWalkStrategy(seed));
            var hooks = new SyncHooks(2, sched);
            words[0] = words[1] = 0;
            sched.Run(
            [
                () => LockBoth(0, 1, a, b),
                () => LockBoth(1, 0, b, a),
            ]);
            if (sched.Violation is { } v)
            {
                Assert.StartsWith("deadlock", v);
                deadlocks++;
            }

            void LockBoth(int first, int second, LockClass c1, LockClass c2)
            {
                int cpu = first;
                RawSpinLock.Lock(ref words[first], hooks, cpu, c1);
                RawSpinLock.Lock(ref words[second], hooks, cpu, c2);
                RawSpinLock.Unlock(ref words[second], hooks, cpu, c2);
                RawSpinLock.Unlock(ref words[first], hooks, cpu, c1);
            }
        }

        Assert.InRange(deadlocks, 1, 49);
    }

    [Fact]
    public void OnlyOneCpuRunsBetweenSchedulingPoints()
    {
        int running = 0, overlaps = 0;
        var sched = new DeterministicScheduler(new RandomWalkStrategy(5));
        void Program()
        {
            for (int i = 0; i < 200; i++)
            {
                if (Interlocked.Increment(ref running) != 1)
                {
                    Interlocked.Increment(ref overlaps);
                }

                Thread.SpinWait(20);
                Interlocked.Decrement(ref running);
                sched.Reached(SchedulingPointKind.RefGet, null);
            }
        }

        Assert.True(sched.Run([Program, Program, Program]), sched.Violation);
        Assert.Equal(0, overlaps);
        Assert.Equal(600, sched.Steps);
    }
}
