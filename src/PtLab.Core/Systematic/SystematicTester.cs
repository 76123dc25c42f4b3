using System.Diagnostics;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Systematic;

/// <summary>What one schedule did.</summary>
/// <param name="Seed">The seed that replays it.</param>
/// <param name="Violation">The first broken invariant, or null.</param>
/// <param name="Steps">Scheduling points it went through.</param>
/// <param name="Scheduler">The scheduler, holding the trace.</param>
public sealed record ScheduleResult(int Seed, string? Violation, long Steps, DeterministicScheduler Scheduler)
{
    /// <summary>Whether the schedule broke nothing.</summary>
    public bool Ok => Violation is null;
}

/// <summary>What an exploration of many schedules found.</summary>
/// <param name="Schedules">Schedules run.</param>
/// <param name="Violations">Schedules that broke an invariant.</param>
/// <param name="FirstFailingSeed">The seed of the first failing schedule, or null.</param>
/// <param name="FirstViolation">What it broke.</param>
/// <param name="Elapsed">Wall time.</param>
/// <param name="TotalSteps">Scheduling points over all schedules.</param>
public sealed record ExploreResult(int Schedules, int Violations, int? FirstFailingSeed, string? FirstViolation, TimeSpan Elapsed, long TotalSteps)
{
    /// <summary>Schedules per second.</summary>
    public double SchedulesPerSecond => Schedules / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>Runs scenarios under the deterministic scheduler, one schedule per seed.</summary>
public static class SystematicTester
{
    /// <summary>Runs the schedule of <paramref name="seed"/> and checks the invariants at its end.</summary>
    public static ScheduleResult RunOne(
        SystematicScenario scenario, string design, string strategy, int seed, Mutation mutation = Mutation.None, long maxSteps = 50_000, bool everyStep = false)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        return RunWith(scenario, design, SchedulingStrategies.Create(strategy, seed, scenario.EstimatedSteps), seed, mutation, maxSteps, everyStep);
    }

    /// <summary>Runs one schedule chosen by <paramref name="strategy"/> and checks the invariants at its end.</summary>
    public static ScheduleResult RunWith(
        SystematicScenario scenario, string design, ISchedulingStrategy strategy, int seed, Mutation mutation = Mutation.None, long maxSteps = 50_000, bool everyStep = false)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        if (Designs.Factory(design) is null)
        {
            throw new ArgumentException($"unknown design '{design}'", nameof(design));
        }

        if (!Designs.Supports(design, mutation))
        {
            throw new ArgumentException($"mutation {Mutations.NameOf(mutation)} does not apply to design {design}", nameof(mutation));
        }

        var factory = Designs.Factory(design, new DesignOptions { Mutation = mutation, FreePmd = scenario.FreePmd && Designs.TakesFreePmd(design) })!;

        // A design with a background thread gets a CPU of its own for it, beside the scenario's
        // programs, unless the scenario runs that thread itself.
        bool background = scenario.UsesDesign && !scenario.RunsKscand && Designs.RunsInBackground(design);
        var sched = new DeterministicScheduler(strategy, maxSteps);
        var machine = new Machine(new MachineOptions
        {
            Cpus = scenario.Programs.Count + (background ? 1 : 0),
            RamBytes = scenario.RamBytes,
            PageData = false,
            Scheduler = sched,
            // Without pte_tryget a table's count can reach zero under its own PTE lock, and lockdep
            // would report the pmd lock taken inside it before the use-after-free detector sees the
            // stale walker; that mutation must be caught by the detector.
            LockDep = mutation != Mutation.SkipTryGet,
            PagingStructureCaches = true,
            Design = factory,
        });
        if (scenario.StorageSteps)
        {
            machine.Phys.TableInterleavingPoint = () => sched.Reached(SchedulingPointKind.TableStorage, null);
        }

        var mm = machine.CreateAddressSpace();
        var ctx = new ScenarioContext(machine, mm, sched);
        scenario.Setup(ctx);
        mm.SkipGatherFlushForTesting = mutation == Mutation.SkipGatherFlush;
        mm.SkipTableFlushForTesting = mutation == Mutation.SkipTableFlush;
        if (everyStep)
        {
            sched.StepInvariant = () => Invariants.CheckAtEveryStep(machine, mm);
        }
        if (mutation == Mutation.SkipSwitchGracePeriod && ctx.Ref is { } scenarioRef)
        {
            scenarioRef.SkipGracePeriodForTesting = true;
        }
        var programs = new Action[machine.Cpus.Count];
        for (int i = 0; i < scenario.Programs.Count; i++)
        {
            var p = scenario.Programs[i];
            var cpu = machine.Cpus[i];
            programs[i] = () => p(ctx, cpu);
        }

        if (background)
        {
            programs[^1] = () => SystematicScenarios.KscandPasses(ctx, machine.Cpus[^1]);
        }

        string? violation = null;
        if (!sched.Run(programs))
        {
            violation = sched.Violation;
        }
        else
        {
            try
            {
                violation = CheckRef(ctx) ?? scenario.Final?.Invoke(ctx) ?? Invariants.CheckAtQuiescence(machine, mm, ScenarioContext.Base, ctx.End);
            }
            catch (Exception e)
            {
                violation = $"invariant check threw {e.GetType().Name}: {e.Message.Split('\n')[0]}";
            }
        }

        return new ScheduleResult(seed, violation, sched.Steps, sched);
    }

    /// <summary>
    /// Runs <paramref name="schedules"/> schedules with seeds <paramref name="baseSeed"/>,
    /// <paramref name="baseSeed"/> + 1, …; stops at the first violation when <paramref name="stopAtFirst"/>.
    /// </summary>
    public static ExploreResult Explore(
        SystematicScenario scenario, string design, string strategy, int schedules, int baseSeed = 0,
        Mutation mutation = Mutation.None, bool stopAtFirst = false, TimeSpan? budget = null, bool everyStep = false)
    {
        var sw = Stopwatch.StartNew();
        int run = 0, violations = 0;
        int? first = null;
        string? firstViolation = null;
        long steps = 0;
        for (int i = 0; i < schedules; i++)
        {
            if (budget is { } b && sw.Elapsed > b)
            {
                break;
            }

            var r = RunOne(scenario, design, strategy, unchecked(baseSeed + i), mutation, everyStep: everyStep);
            run++;
            steps += r.Steps;
            if (!r.Ok)
            {
                violations++;
                if (first is null)
                {
                    first = r.Seed;
                    firstViolation = r.Violation;
                }

                if (stopAtFirst)
                {
                    break;
                }
            }
        }

        return new ExploreResult(run, violations, first, firstViolation, sw.Elapsed, steps);
    }

    private static string? CheckRef(ScenarioContext ctx)
    {
        if (ctx.Ref is not { } r)
        {
            return null;
        }

        long count = r.TrueCount;
        return count != ctx.RefExpected ? $"percpu_ref count {count} at the end, {ctx.RefExpected} references held" : null;
    }
}
