using PtLab.Sync;

namespace PtLab.Tests.Sync;

public sealed class PercpuRefTests
{
    private const int Cpus = 3;

    private readonly Rcu _rcu = new(Cpus);
    private int _released;

    private PercpuRef NewRef(PercpuRefInit flags = PercpuRefInit.None) =>
        new(_rcu, _ => Interlocked.Increment(ref _released), flags);

    [Fact]
    public void ANewRefIsPercpuWithCountOneAndTheBiasOnTheSharedCounter()
    {
        var r = NewRef();
        Assert.True(r.IsPercpu);
        Assert.False(r.IsDying);
        Assert.False(r.IsZero);
        Assert.Equal(unchecked(PercpuRef.CountBias + 1), r.SharedCount);
        Assert.Equal(1, r.TrueCount);
    }

    [Fact]
    public void InPercpuModeIsZeroIsFalseEvenWhenTheStripesSumToZero()
    {
        var r = NewRef();
        r.Get(1);
        r.Put(2);
        r.Put(0);
        Assert.Equal(0, r.TrueCount);
        Assert.False(r.IsZero);
        Assert.Equal(0, _released);
    }

    [Fact]
    public void AGetAndPutLeaveTheCallersReadSectionAsTheyFoundIt()
    {
        var r = NewRef();
        r.Get(1);
        Assert.False(_rcu.InReadSection(1)); // the get's own section closed
        _rcu.ReadLock(1);
        long epoch = _rcu.ReaderEpoch(1);
        _rcu.CallRcu(() => { });
        Assert.False(_rcu.Poll()); // the global epoch moved on; CPU 1 holds the grace period up
        r.Get(1);
        r.Put(1);
        Assert.True(_rcu.InReadSection(1));
        Assert.Equal(epoch, _rcu.ReaderEpoch(1));
        _rcu.ReadUnlock(1);
        Assert.False(_rcu.InReadSection(1));
        Assert.True(_rcu.Poll());
        r.Put(1);
        Assert.Equal(1, r.TrueCount);
    }

    [Fact]
    public void PercpuGetsAndPutsTouchOnlyTheCallersStripe()
    {
        var r = NewRef();
        long shared = r.SharedCount;
        r.Get(1, 5);
        r.Put(2, 2);
        Assert.Equal(shared, r.SharedCount);
        Assert.Equal(3, r.StripeSum);
        Assert.Equal(4, r.TrueCount);
    }

    [Fact]
    public void SwitchToAtomicSyncFoldsTheStripesIntoTheSharedCounterAndDropsTheBias()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.Get(0);
        r.Get(1);
        r.Get(2, 3);
        r.Put(1);
        r.SwitchToAtomicSync(0);
        Assert.False(r.IsPercpu);
        Assert.False(r.SwitchPending);
        Assert.Equal(5, r.SharedCount);
        Assert.Equal(0, _rcu.PendingCallbacks);
    }

    [Fact]
    public void SwitchToAtomicWaitsForAGracePeriodBeforeFoldingAndConfirming()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.Get(1);
        int confirmed = 0;
        r.SwitchToAtomic(0, _ => confirmed++);

        Assert.False(r.IsPercpu);
        Assert.True(r.SwitchPending);
        Assert.Equal(0, confirmed);
        Assert.Equal(unchecked(PercpuRef.CountBias + 2), r.SharedCount); // initial + the switch's own; Get(1) not folded yet

        r.Get(2); // already atomic: goes to the shared counter
        _rcu.SynchronizeRcu();

        Assert.Equal(1, confirmed);
        Assert.False(r.SwitchPending);
        Assert.Equal(3, r.SharedCount); // initial + Get(1) + Get(2); the switch's ref was dropped
    }

    [Fact]
    public void SwitchToAtomicOnAnAtomicRefConfirmsAtOnce()
    {
        var r = NewRef(PercpuRefInit.Atomic);
        int confirmed = 0;
        r.SwitchToAtomic(0, _ => confirmed++);
        Assert.Equal(1, confirmed);
        Assert.False(r.SwitchPending);
        Assert.Equal(0, _rcu.PendingCallbacks);
    }

    [Fact]
    public void ASecondSwitchWaitsForTheFirstByDrivingGracePeriods()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.SwitchToAtomic(0);
        Assert.True(r.SwitchPending);
        long gp = _rcu.GracePeriods;

        r.SwitchToPercpu(1);

        Assert.True(_rcu.GracePeriods > gp);
        Assert.True(r.IsPercpu);
        Assert.Equal(1, r.TrueCount);
    }

    [Fact]
    public void SwitchToPercpuRestoresTheBiasAndZeroesTheStripes()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.Get(1, 4);
        r.SwitchToAtomicSync(0);
        r.SwitchToPercpu(0);

        Assert.True(r.IsPercpu);
        Assert.Equal(0, r.StripeSum);
        Assert.Equal(unchecked(PercpuRef.CountBias + 5), r.SharedCount);
        r.Put(2, 5);
        Assert.Equal(0, r.TrueCount);
        Assert.Equal(0, _released);
    }

    [Fact]
    public void WithoutAllowReinitTheFirstAtomicSwitchFreesThePercpuCountersForGood()
    {
        var r = NewRef();
        r.Get(1);
        r.SwitchToAtomicSync(0);

        Assert.False(r.IsPercpu);
        Assert.True(r.IsDying); // __percpu_ref_exit leaves the ref ATOMIC|DEAD
        Assert.Equal(2, r.SharedCount);
        Assert.False(r.TryGetLive(0));
        Assert.True(r.TryGet(0));

        r.SwitchToPercpu(0); // a dying ref stays atomic, as in the kernel
        Assert.False(r.IsPercpu);
    }

    [Fact]
    public void InAtomicModeThePutThatReachesZeroReleasesExactlyOnce()
    {
        var r = NewRef(PercpuRefInit.Atomic);
        r.Get(1);
        r.Put(0);
        Assert.Equal(0, _released);
        r.Put(2);
        Assert.Equal(1, _released);
        Assert.True(r.IsZero);
    }

    [Fact]
    public void InitAtomicStartsAtomicAndStaysAtomicAcrossKillAndReinit()
    {
        var r = NewRef(PercpuRefInit.Atomic);
        Assert.False(r.IsPercpu);
        Assert.Equal(1, r.SharedCount);

        r.Kill(0);
        Assert.Equal(1, _released);
        Assert.True(r.IsZero);

        r.Reinit(0);
        Assert.False(r.IsPercpu);
        Assert.False(r.IsDying);
        Assert.Equal(1, r.SharedCount);

        r.SwitchToPercpu(0);
        Assert.True(r.IsPercpu);
        Assert.Equal(1, r.TrueCount);
    }

    [Fact]
    public void InitDeadStartsDeadAtZeroAndReinitBringsItBackInPercpuMode()
    {
        var r = NewRef(PercpuRefInit.Dead);
        Assert.True(r.IsDying);
        Assert.True(r.IsZero);
        Assert.False(r.TryGet(0));

        r.Reinit(1);
        Assert.True(r.IsPercpu);
        Assert.Equal(1, r.TrueCount);
        Assert.Equal(0, _released);
    }

    [Fact]
    public void KillReleasesAfterTheGracePeriodWhenNoOtherReferenceIsHeld()
    {
        var r = NewRef();
        r.Kill(0);
        Assert.True(r.IsDying);
        Assert.Equal(0, _released); // the switch still holds its own reference

        _rcu.SynchronizeRcu();
        Assert.Equal(1, _released);
        Assert.True(r.IsZero);
    }

    [Fact]
    public void KillWithReferencesOutstandingReleasesOnTheLastPut()
    {
        var r = NewRef();
        r.Get(1);
        r.Get(2);
        r.Kill(0);
        _rcu.SynchronizeRcu();
        Assert.Equal(0, _released);
        Assert.Equal(2, r.SharedCount);

        r.Put(2);
        Assert.Equal(0, _released);
        r.Put(1);
        Assert.Equal(1, _released);
    }

    [Fact]
    public void TryGetLiveFailsAsSoonAsTheRefIsKilledWhileTryGetStillSucceeds()
    {
        var r = NewRef();
        r.Get(1);
        Assert.True(r.TryGetLive(1));
        r.Put(1);

        r.Kill(0);
        Assert.False(r.TryGetLive(1)); // before the confirmation already
        Assert.True(r.TryGet(1));
        r.Put(1);

        _rcu.SynchronizeRcu();
        Assert.False(r.TryGetLive(2));
        r.Put(1);
        Assert.Equal(1, _released);
        Assert.False(r.TryGet(2));
    }

    [Fact]
    public void KillAndConfirmRunsTheConfirmationOnceEveryCpuSeesTheRefDead()
    {
        var r = NewRef();
        r.Get(1);
        bool liveAtConfirm = true;
        int confirmed = 0;
        r.KillAndConfirm(0, x =>
        {
            confirmed++;
            liveAtConfirm = x.TryGetLive(2);
        });
        Assert.Equal(0, confirmed);

        _rcu.SynchronizeRcu();
        Assert.Equal(1, confirmed);
        Assert.False(liveAtConfirm);
    }

    [Fact]
    public void KillingARefTwiceIsABug()
    {
        var r = NewRef();
        r.Get(1);
        r.Kill(0);
        Assert.Throws<PercpuRefException>(() => r.Kill(0));
    }

    [Fact]
    public void ResurrectUndoesAKillAndReturnsToPercpuMode()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.Get(1);
        r.Kill(0);
        r.Resurrect(0); // waits for the kill's switch by driving a grace period

        Assert.False(r.IsDying);
        Assert.True(r.IsPercpu);
        Assert.Equal(2, r.TrueCount);
        Assert.True(r.TryGetLive(2));
        Assert.Equal(0, _released);
    }

    [Fact]
    public void ResurrectOfALiveRefIsABug()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        Assert.Throws<PercpuRefException>(() => r.Resurrect(0));
    }

    [Fact]
    public void ReinitNeedsTheCountToHaveReachedZero()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.Get(1);
        r.Kill(0);
        _rcu.SynchronizeRcu();
        Assert.Throws<PercpuRefException>(() => r.Reinit(0));

        r.Put(1);
        Assert.Equal(1, _released);
        r.Reinit(0);
        Assert.True(r.IsPercpu);
        Assert.Equal(1, r.TrueCount);
    }

    [Fact]
    public void AfterExitTheCountStaysReadableButAnyOtherUseIsABug()
    {
        var r = NewRef(PercpuRefInit.Atomic);
        r.Kill(0);
        r.Exit();
        r.Exit();
        Assert.True(r.IsZero);
        Assert.Throws<PercpuRefException>(() => r.Get(0));
        Assert.Throws<PercpuRefException>(() => r.SwitchToAtomic(0));
    }

    [Fact]
    public void AReleaseCallbackMayExitTheRefEvenUnderKill()
    {
        PercpuRef? seen = null;
        var r = new PercpuRef(_rcu, x => { x.Exit(); seen = x; }, PercpuRefInit.Atomic);
        r.Kill(0);
        Assert.Same(r, seen);
    }

    [Fact]
    public void ExitWhileASwitchIsInFlightIsABug()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.SwitchToAtomic(0);
        Assert.Throws<PercpuRefException>(r.Exit);
        _rcu.SynchronizeRcu();
        r.Exit();
    }

    [Fact]
    public void TheCountIsStableWhenSwitchToAtomicSyncReturnsEvenIfAnotherThreadRunsTheCallback()
    {
        Assert.True(SyncSwitchSeesZero(unpatched: false));
    }

    [Fact]
    public void WithoutPatch02TheCountCanStillBeOneWhenSwitchToAtomicSyncReturns()
    {
        // The race the seed's patch 02 describes, made deterministic: another thread runs the RCU
        // callback and is held between waking the waiter and dropping the switch's reference.
        Assert.False(SyncSwitchSeesZero(unpatched: true));
    }

    private bool SyncSwitchSeesZero(bool unpatched)
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        r.UnpatchedSyncSwitch = unpatched;
        r.Get(1);
        r.Put(2);
        r.Put(0); // the stripes now sum to zero

        using var poll = new ManualResetEventSlim();
        using var parked = new ManualResetEventSlim();
        using var resume = new ManualResetEventSlim();
        r.AfterConfirmCleared = () =>
        {
            parked.Set();
            resume.Wait();
        };
        r.AfterSwitchQueued = () =>
        {
            poll.Set();
            Assert.True(parked.Wait(TimeSpan.FromSeconds(10)));
        };
        var poller = Bounded.Start(
            () =>
            {
                poll.Wait();
                Assert.True(_rcu.Poll());
            },
            "RCU poller");

        r.SwitchToAtomicSync(0);
        bool zero = r.IsZero;

        resume.Set();
        Bounded.Join(poller, "RCU poller");
        Assert.True(r.IsZero); // either way it settles at zero
        return zero;
    }

    [Fact]
    public void AfterSwitchToAtomicSyncAZeroCountReadsZeroEveryTimeDespiteEarlierConcurrentGetPutPairs()
    {
        var rcu = new Rcu(3);
        bool stop = false;
        var poller = Bounded.Start(
            () =>
            {
                while (!Volatile.Read(ref stop))
                {
                    rcu.Poll(); // so the switch callback often runs on this thread, not the waiter's
                }
            },
            "RCU poller");

        int rounds = 0;
        var deadline = DateTime.UtcNow.AddMilliseconds(1000);
        while (DateTime.UtcNow < deadline)
        {
            var r = new PercpuRef(rcu, null, PercpuRefInit.AllowReinit);
            r.Put(0);
            var pairs = Bounded.Start(
                () =>
                {
                    for (int i = 0; i < 200; i++)
                    {
                        r.Get(1);
                        r.Put(1);
                    }
                },
                "get/put pairs");
            Bounded.Join(pairs, "get/put pairs");

            r.SwitchToAtomicSync(0);
            for (int i = 0; i < 50; i++)
            {
                Assert.True(r.IsZero, $"round {rounds}, read {i}: count {r.SharedCount}");
            }

            rounds++;
        }

        Volatile.Write(ref stop, true);
        Bounded.Join(poller, "RCU poller");
        Assert.True(rounds > 5, $"only {rounds} rounds");
    }

    [Fact]
    public void UnderStressSwitchingBackAndForthNeverLosesACountNorReleasesEarly()
    {
        var r = NewRef(PercpuRefInit.AllowReinit);
        bool stop = false;
        long ops = 0;
        var workers = Enumerable.Range(1, 2).Select(cpu => Bounded.Start(
            () =>
            {
                while (!Volatile.Read(ref stop))
                {
                    r.Get(cpu);
                    r.Get(cpu);
                    r.Put(cpu);
                    r.Put(cpu);
                    Interlocked.Increment(ref ops);
                }
            },
            $"worker {cpu}")).ToList();

        int switches = 0;
        var deadline = DateTime.UtcNow.AddMilliseconds(800);
        while (DateTime.UtcNow < deadline)
        {
            r.SwitchToAtomicSync(0);
            Assert.True(r.SharedCount >= 1);
            r.SwitchToPercpu(0);
            switches++;
        }

        Volatile.Write(ref stop, true);
        workers.ForEach(t => Bounded.Join(t, "worker"));
        r.SwitchToAtomicSync(0);

        Assert.Equal(1, r.SharedCount);
        Assert.Equal(0, _released);
        Assert.True(switches > 3, $"only {switches} switches");
        Assert.True(Interlocked.Read(ref ops) > 100, $"only {ops} get/put rounds");
    }

    [Fact]
    public void UnderStressAKillRacingTryGetLiveReleasesExactlyOnceAfterTheLastPut()
    {
        for (int round = 0; round < 20; round++)
        {
            _released = 0;
            var r = NewRef();
            bool stop = false;
            long got = 0;
            var workers = Enumerable.Range(1, 2).Select(cpu => Bounded.Start(
                () =>
                {
                    while (!Volatile.Read(ref stop))
                    {
                        if (r.TryGetLive(cpu))
                        {
                            Interlocked.Increment(ref got);
                            r.Put(cpu);
                        }
                    }
                },
                $"worker {cpu}")).ToList();

            Thread.Sleep(5);
            r.Kill(0);
            _rcu.SynchronizeRcu(0);
            Volatile.Write(ref stop, true);
            workers.ForEach(t => Bounded.Join(t, "worker"));

            Assert.Equal(1, _released);
            Assert.True(r.IsZero);
            Assert.True(Interlocked.Read(ref got) > 0);
        }
    }

    [Fact]
    public void EachRefHasItsOwnSwitchLockSoOneRefSwitchesWhileAnothersLockIsHeld()
    {
        // Patch 03: with the kernel's single global switch lock, switching B from inside A's
        // confirmation (which runs under A's switch lock) would spin forever.
        var a = NewRef(PercpuRefInit.Atomic);
        var b = NewRef(PercpuRefInit.AllowReinit);
        var t = Bounded.Start(() => a.SwitchToAtomic(0, _ => b.SwitchToAtomic(0)), "nested switch");
        Bounded.Join(t, "nested switch");
        Assert.False(b.IsPercpu);
        _rcu.Barrier();
        Assert.False(b.SwitchPending);
        Assert.Equal(1, b.SharedCount);
    }

    [Fact]
    public void GetPutAndSwitchAreSchedulingPoints()
    {
        var sched = new RecordingScheduler();
        var rcu = new Rcu(2, new SyncHooks(2, sched));
        var r = new PercpuRef(rcu, null, PercpuRefInit.AllowReinit);
        r.Get(1);
        r.Put(1);
        Assert.Equal(
            [SchedulingPointKind.RefGet, SchedulingPointKind.RcuReadLock, SchedulingPointKind.EntryStore, SchedulingPointKind.RcuReadUnlock,
             SchedulingPointKind.RefPut, SchedulingPointKind.RcuReadLock, SchedulingPointKind.EntryStore, SchedulingPointKind.RcuReadUnlock],
            sched.Kinds);

        sched.Clear();
        r.SwitchToAtomicSync(0);
        var kinds = sched.Kinds;
        Assert.Equal(SchedulingPointKind.RefSwitch, kinds[0]);
        Assert.Contains(SchedulingPointKind.SpinLock, kinds);
        Assert.Contains(SchedulingPointKind.Wait, kinds);
        Assert.Contains(SchedulingPointKind.SynchronizeRcu, kinds);
    }
}
