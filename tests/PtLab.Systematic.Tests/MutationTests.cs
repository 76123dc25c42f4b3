using PtLab.Reclaim;
using Xunit.Abstractions;

namespace PtLab.Systematic.Tests;

/// <summary>The tester has teeth: each protocol break is caught within a bounded number of schedules.</summary>
public class MutationTests(ITestOutputHelper output)
{
    private int SchedulesToCatch(string scenario, string design, Mutation mutation, int bound, string strategy = "random")
    {
        var r = SystematicTester.Explore(SystematicScenarios.Find(scenario)!, design, strategy, bound, baseSeed: 0, mutation, stopAtFirst: true);
        Assert.True(r.FirstFailingSeed is not null, $"{Mutations.NameOf(mutation)} on {design} survived {r.Schedules} schedules of {scenario}");
        output.WriteLine($"{Mutations.NameOf(mutation)} on {design} in {scenario}: caught after {r.Schedules} schedules ({strategy}): {r.FirstViolation}");
        return r.Schedules;
    }

    [Theory]
    [InlineData("atomic", "walker-dontneed-fault", "UseAfterFreeException")]
    [InlineData("pte-ref", "walker-dontneed-fault", "UseAfterFreeException")]
    [InlineData("pte-ref-batched", "walker-dontneed-fault", "UseAfterFreeException")]
    [InlineData("pte-ref", "gup-fast-free", "")] // a stale walker's entry can also surface as a leaked page
    public void AWalkerWithoutPteTrygetIsCaught(string design, string scenario, string expected)
    {
        var r = SystematicTester.Explore(SystematicScenarios.Find(scenario)!, design, "random", 400, 0, Mutation.SkipTryGet, stopAtFirst: true);
        output.WriteLine($"skip-tryget on {design} in {scenario}: caught after {r.Schedules} schedules: {r.FirstViolation}");
        Assert.NotNull(r.FirstFailingSeed);
        Assert.Contains(expected, r.FirstViolation);
    }

    [Theory]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pte-ref-batched")]
    public void AClearWithoutTrackPteClearIsCaughtByTheRefcountInvariant(string design)
    {
        SchedulesToCatch("gup-fast-free", design, Mutation.SkipTrackClear, 10);
    }

    [Fact]
    public void PtReclaimWithoutThePmdRecheckIsCaught()
    {
        SchedulesToCatch("ptreclaim-trylock", "pt-reclaim", Mutation.SkipPmdRecheck, 600);
    }

    [Fact]
    public void PctAlsoCatchesTheMissingPmdRecheck()
    {
        SchedulesToCatch("ptreclaim-trylock", "pt-reclaim", Mutation.SkipPmdRecheck, 600, "pct");
    }

    [Theory]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pte-ref-batched")]
    public void AFreeWithoutRcuDeferralIsCaughtByFastGup(string design)
    {
        SchedulesToCatch("gup-fast-free", design, Mutation.SkipRcuDeferral, 1500);
    }

    [Fact]
    public void AModeSwitchWithoutTheGracePeriodLosesACountAndIsCaught()
    {
        SchedulesToCatch("percpu-switch", "pte-ref", Mutation.SkipSwitchGracePeriod, 200);
    }

    [Fact]
    public void OccupancyFreeingOnStaleCountsIsCaught()
    {
        SchedulesToCatch("occupancy-partial-zap", "occupancy", Mutation.SkipCountRecheck, 1000, "pct");
    }

    [Theory]
    [InlineData("walker-dontneed-fault")]
    [InlineData("occupancy-partial-zap")]
    public void ABatchedSwitchTrustedBeforeItsGracePeriodIsCaught(string scenario)
    {
        SchedulesToCatch(scenario, "pte-ref-batched", Mutation.SkipSwitchConfirm, 300);
    }

    [Fact]
    public void OccupancyForgettingToUncountAClearIsCaught()
    {
        SchedulesToCatch("occupancy-partial-zap", "occupancy", Mutation.SkipTrackClear, 10);
    }

    [Fact]
    public void OccupancyWithoutThePmdRecheckIsCaught()
    {
        SchedulesToCatch("ptreclaim-trylock", "occupancy", Mutation.SkipPmdRecheck, 600);
    }

    [Theory]
    [InlineData("occupancy", Mutation.SkipPmdRcu, "UseAfterFreeException")]
    [InlineData("pt-reclaim", Mutation.SkipPmdRcu, "UseAfterFreeException")]
    [InlineData("occupancy", Mutation.SkipPudRecheck, "VmPTE accounting")]
    [InlineData("pt-reclaim", Mutation.SkipPudRecheck, "VmPTE accounting")]
    public void BreaksOfThePmdTableFreeAreCaught(string design, Mutation mutation, string expected)
    {
        var r = SystematicTester.Explore(SystematicScenarios.Find(SystematicScenarios.PmdFreeGupFast)!, design, "pct", 1000, 0, mutation, stopAtFirst: true);
        output.WriteLine($"{Mutations.NameOf(mutation)} on {design} in {SystematicScenarios.PmdFreeGupFast}: caught after {r.Schedules} schedules: {r.FirstViolation}");
        Assert.NotNull(r.FirstFailingSeed);
        Assert.Contains(expected, r.FirstViolation);
    }

    [Theory]
    [InlineData("random", 200)]
    [InlineData("pct", 400)]
    public void TheScannerFreeingOnItsLocklessReadWithoutTheRecheckUnderThePteLockIsCaught(string strategy, int bound)
    {
        // A fault refills the table (or writes over its zero page) between the lockless scan and the locked phase.
        SchedulesToCatch("scanner-fault-zap", Designs.Scanner, Mutation.SkipScanRecheck, bound, strategy);
    }

    [Fact]
    public void TheScannerLockingTheScannedTableWithoutPmdSameIsCaught()
    {
        // A whole-table DONTNEED frees the table the scanner saw empty: without pmd_same it is freed twice.
        SchedulesToCatch("scanner-fault-zap", Designs.Scanner, Mutation.SkipScanPmdSame, 200);
    }

    [Fact]
    public void TheScannersOwnFreeWithoutTheTableFlushIsCaught()
    {
        // The tables the scanner's thread frees go through the same gather as a zap's.
        SchedulesToCatch("scanner-fault-zap", Designs.Scanner, Mutation.SkipTableFlush, 20);
    }

    [Fact]
    public void TheScannerDesignsWalkersWithoutThePmdRecheckAreCaught()
    {
        SchedulesToCatch("ptreclaim-trylock", Designs.Scanner, Mutation.SkipPmdRecheck, 600);
    }

    [Fact]
    public void OccupancyCountsForgettingAClearAmongConcurrentSetsAndClearsAreCaught()
    {
        SchedulesToCatch("occupancy-count-set-clear", "occupancy", Mutation.SkipTrackClear, 10);
    }

    [Fact]
    public void ATryGetRacingABatchedSwitchCatchesAFreeBeforeTheSwitchIsConfirmed()
    {
        SchedulesToCatch("batched-switch-tryget", "pte-ref-batched", Mutation.SkipSwitchConfirm, 600);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    [InlineData("occupancy")]
    [InlineData("pte-ref-batched")]
    [InlineData("scanner")]
    public void PagesFreedWithoutTheTlbFlushAreCaughtAtTheStepItHappens(string design)
    {
        var r = SystematicTester.Explore(
            SystematicScenarios.Find("walker-dontneed-fault")!, design, "random", 20, 0, Mutation.SkipGatherFlush, stopAtFirst: true, everyStep: true);
        output.WriteLine($"skip-tlb-flush on {design}: caught after {r.Schedules} schedules: {r.FirstViolation}");
        Assert.NotNull(r.FirstFailingSeed);
        Assert.Contains("TLB still maps", r.FirstViolation);
    }
}
