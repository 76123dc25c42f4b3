using PtLab.Sync;

namespace PtLab.Tests.Sync;

public sealed class RcuTests
{
    [Fact]
    public void ACallbackNeverRunsWhileAReaderThatWasAlreadyInsideIsStillInside()
    {
        var rcu = new Rcu(2);
        int ran = 0;
        using var reader = new ParkedReader(rcu, cpu: 1);
        rcu.CallRcu(() => Interlocked.Increment(ref ran));

        var deadline = DateTime.UtcNow.AddMilliseconds(200);
        int polls = 0;
        while (DateTime.UtcNow < deadline)
        {
            Assert.False(rcu.Poll());
            polls++;
        }

        Assert.Equal(0, Volatile.Read(ref ran));
        Assert.Equal(1, rcu.PendingCallbacks);
        Assert.True(polls > 10);

        reader.Release();
        Assert.True(rcu.Poll());
        Assert.Equal(1, Volatile.Read(ref ran));
        Assert.Equal(0, rcu.PendingCallbacks);
    }

    [Fact]
    public void SynchronizeRcuWaitsForTheParkedReaderAndReturnsOnceItLeaves()
    {
        var rcu = new Rcu(2);
        using var reader = new ParkedReader(rcu, cpu: 1);
        long before = rcu.GracePeriods;
        var sync = Bounded.Start(() => rcu.SynchronizeRcu(0), "synchronize_rcu");

        Assert.False(sync.Join(TimeSpan.FromMilliseconds(150)));
        Assert.False(reader.HasLeft);

        reader.Release();
        Assert.True(sync.Join(TimeSpan.FromSeconds(10)));
        Assert.Equal(before + 1, rcu.GracePeriods);
    }

    [Fact]
    public void ABarrierRunsEveryQueuedCallbackInOrder()
    {
        var rcu = new Rcu(1);
        var order = new List<int>();
        for (int i = 0; i < 10; i++)
        {
            int n = i;
            rcu.CallRcu(() => order.Add(n));
        }

        rcu.Barrier(0);
        Assert.Equal(Enumerable.Range(0, 10), order);
        Assert.Equal(0, rcu.PendingCallbacks);
    }

    [Fact]
    public void OnOneCpuASynchronizeFromItEndsTheGracePeriodAtOnceAndRunsWhatWasQueued()
    {
        var rcu = new Rcu(1);
        rcu.ReadLock(0);
        long firstEpoch = rcu.ReaderEpoch(0);
        rcu.ReadUnlock(0);
        bool ran = false;
        rcu.CallRcu(() => ran = true);
        long before = rcu.GracePeriods;
        rcu.SynchronizeRcu(0);
        Assert.True(ran);
        Assert.Equal(before + 1, rcu.GracePeriods);
        Assert.Equal(0, rcu.PendingCallbacks);
        rcu.ReadLock(0);
        Assert.True(rcu.ReaderEpoch(0) > firstEpoch); // a reader after it enters a later epoch
        rcu.ReadUnlock(0);
    }

    [Fact]
    public void ReadSectionsNestAndOnlyTheOutermostUnlockLeaves()
    {
        var rcu = new Rcu(1);
        rcu.ReadLock(0);
        rcu.ReadLock(0);
        rcu.ReadUnlock(0);
        Assert.True(rcu.InReadSection(0));
        Assert.NotEqual(0, rcu.ReaderEpoch(0));
        rcu.ReadUnlock(0);
        Assert.False(rcu.InReadSection(0));
        Assert.Equal(0, rcu.ReaderEpoch(0));
    }

    [Fact]
    public void NestingPastTheDepthLimitIsABugAndNeverCarriesIntoTheEpoch()
    {
        var rcu = new Rcu(1);
        rcu.ReadLock(0);
        long epoch = rcu.ReaderEpoch(0);
        int depth = 1;
        var error = Assert.Throws<RcuException>(() =>
        {
            for (int i = 0; i < 70_000; i++)
            {
                rcu.ReadLock(0);
                depth++;
            }
        });
        Assert.Contains("nested", error.Message);
        Assert.Equal(65_535, depth);
        Assert.Equal(epoch, rcu.ReaderEpoch(0));
        for (int i = 0; i < depth; i++)
        {
            Assert.True(rcu.InReadSection(0));
            rcu.ReadUnlock(0);
        }

        Assert.False(rcu.InReadSection(0));
        Assert.Throws<RcuException>(() => rcu.ReadUnlock(0));
    }

    [Fact]
    public void SynchronizeRcuInsideTheCallersOwnReadSectionIsABug()
    {
        var rcu = new Rcu(1);
        rcu.ReadLock(0);
        Assert.Throws<RcuException>(() => rcu.SynchronizeRcu(0));
        rcu.ReadUnlock(0);
    }

    [Fact]
    public void ReadUnlockWithoutReadLockIsABug()
    {
        var rcu = new Rcu(1);
        Assert.Throws<RcuException>(() => rcu.ReadUnlock(0));
    }

    [Fact]
    public void EnterExitAndSynchronizeAreSchedulingPoints()
    {
        var sched = new RecordingScheduler();
        var rcu = new Rcu(1, new SyncHooks(1, sched));
        rcu.ReadLock(0);
        rcu.ReadUnlock(0);
        rcu.CallRcu(static () => { });
        rcu.SynchronizeRcu(0);
        Assert.Equal(
            [SchedulingPointKind.RcuReadLock, SchedulingPointKind.RcuReadUnlock, SchedulingPointKind.CallRcu, SchedulingPointKind.SynchronizeRcu],
            sched.Kinds);
    }

    [Fact]
    public void SynchronizeRcuReachesAWaitPointWhileAReaderHoldsItUp()
    {
        var sched = new RecordingScheduler();
        var rcu = new Rcu(2, new SyncHooks(2, sched));
        using var reader = new ParkedReader(rcu, cpu: 1);
        int waits = 0;
        sched.OnReached = k =>
        {
            if (k == SchedulingPointKind.Wait && Interlocked.Increment(ref waits) == 5)
            {
                reader.Let();
            }
        };

        rcu.SynchronizeRcu(0);
        Assert.True(Volatile.Read(ref waits) >= 5);
    }

    private sealed class Box(int value)
    {
        public int Value { get; } = value;

        public volatile bool Freed;
    }

    [Fact]
    public void UnderStressNoReaderEverSeesAnObjectFreedByACallback()
    {
        const int readers = 2;
        var rcu = new Rcu(readers);
        var current = new Box(0);
        bool stop = false;
        long reads = 0, useAfterFree = 0;

        var threads = Enumerable.Range(0, readers).Select(cpu => Bounded.Start(
            () =>
            {
                while (!Volatile.Read(ref stop))
                {
                    rcu.ReadLock(cpu);
                    var b = Volatile.Read(ref current);
                    Thread.SpinWait(20);
                    if (b.Freed)
                    {
                        Interlocked.Increment(ref useAfterFree);
                    }

                    rcu.ReadUnlock(cpu);
                    Interlocked.Increment(ref reads);
                }
            },
            $"reader {cpu}")).ToList();

        var deadline = DateTime.UtcNow.AddMilliseconds(800);
        int published = 0;
        while (DateTime.UtcNow < deadline)
        {
            var old = Interlocked.Exchange(ref current, new Box(++published));
            rcu.CallRcu(() => old.Freed = true);
            if ((published & 7) == 0)
            {
                rcu.SynchronizeRcu();
            }
            else
            {
                rcu.Poll();
            }
        }

        Volatile.Write(ref stop, true);
        threads.ForEach(t => Bounded.Join(t, "RCU reader"));
        rcu.Barrier();

        Assert.Equal(0, Interlocked.Read(ref useAfterFree));
        Assert.True(Interlocked.Read(ref reads) > 100, $"only {reads} reads");
        Assert.True(published > 10, $"only {published} updates");
        Assert.True(rcu.GracePeriods > 1);
    }
}
