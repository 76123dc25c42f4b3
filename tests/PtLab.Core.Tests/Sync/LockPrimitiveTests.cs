using PtLab.Sync;

namespace PtLab.Tests.Sync;

public sealed class LockPrimitiveTests
{
    [Fact]
    public void TheNoOpSchedulerIsDroppedSoPrimitivesSkipTheCall()
    {
        var hooks = new SyncHooks(1, NoSchedulingPoint.Instance);
        Assert.Null(hooks.Scheduler);
        Assert.Null(hooks.LockDep);
    }

    [Fact]
    public void AnnotatedSpinLockAndUnlockAreSchedulingPoints()
    {
        var sched = new RecordingScheduler();
        var hooks = new SyncHooks(1, sched);
        int word = 0;
        RawSpinLock.Lock(ref word, hooks, 0, LockClass.PteLock);
        Assert.False(RawSpinLock.TryLock(ref word, hooks, 0, LockClass.PteLock));
        RawSpinLock.Unlock(ref word, hooks, 0, LockClass.PteLock);
        Assert.Equal([SchedulingPointKind.SpinLock, SchedulingPointKind.SpinTryLock, SchedulingPointKind.SpinUnlock], sched.Kinds);
        Assert.False(RawSpinLock.IsLocked(ref word));
    }

    [Fact]
    public void AContendedSpinLockReachesAWaitPointOnEveryTurn()
    {
        var sched = new RecordingScheduler();
        var hooks = new SyncHooks(2, sched);
        var lockObject = new SpinLockObject(hooks);
        lockObject.Lock(0);
        int waits = 0;
        sched.OnReached = k =>
        {
            if (k == SchedulingPointKind.Wait && Interlocked.Increment(ref waits) == 3)
            {
                lockObject.Unlock(0); // the "other CPU" runs at the scheduling point and lets go
            }
        };

        var t = Bounded.Start(() => lockObject.Lock(1), "contender");
        Bounded.Join(t, "contender");
        Assert.True(lockObject.IsLocked);
        Assert.Equal(3, Volatile.Read(ref waits));
    }

    [Fact]
    public void RwSemaphoreOperationsAreSchedulingPoints()
    {
        var sched = new RecordingScheduler();
        var sem = new RwSemaphore(new SyncHooks(1, sched));
        sem.DownRead();
        Assert.True(sem.TryDownRead());
        sem.UpRead();
        sem.UpRead();
        sem.DownWrite();
        sem.UpWrite();
        Assert.Equal(
            [SchedulingPointKind.DownRead, SchedulingPointKind.TryDownRead, SchedulingPointKind.UpRead,
             SchedulingPointKind.UpRead, SchedulingPointKind.DownWrite, SchedulingPointKind.UpWrite],
            sched.Kinds);
    }

    [Fact]
    public void TheBareSignaturesStillWorkWithoutHooks()
    {
        int word = 0;
        RawSpinLock.Lock(ref word);
        Assert.True(RawSpinLock.IsLocked(ref word));
        Assert.False(RawSpinLock.TryLock(ref word));
        RawSpinLock.Unlock(ref word);

        var sem = new RwSemaphore();
        sem.DownWrite();
        Assert.True(sem.IsWriteLocked);
        Assert.False(sem.TryDownRead());
        sem.UpWrite();
        Assert.False(sem.IsLocked);

        var pageTableLock = new SpinLockObject();
        pageTableLock.Lock();
        Assert.True(pageTableLock.IsLocked);
        pageTableLock.Unlock();
    }

    [Fact]
    public void UnderStressTheAnnotatedSpinLockExcludesAndMakesProgress()
    {
        var hooks = new SyncHooks(2, new RecordingSchedulerThatCounts(), lockDep: true);
        int word = 0;
        long counter = 0;
        const int perThread = 20_000;
        var threads = Enumerable.Range(0, 2).Select(cpu => Bounded.Start(
            () =>
            {
                for (int i = 0; i < perThread; i++)
                {
                    RawSpinLock.Lock(ref word, hooks, cpu, LockClass.PteLock);
                    counter++; // plain increment: only mutual exclusion keeps it exact
                    RawSpinLock.Unlock(ref word, hooks, cpu, LockClass.PteLock);
                }
            },
            $"cpu {cpu}")).ToList();
        threads.ForEach(t => Bounded.Join(t, "spinner"));
        Assert.Equal(2 * perThread, counter);
        Assert.Empty(hooks.LockDep!.Violations);
    }

    private sealed class RecordingSchedulerThatCounts : ISchedulingPoint
    {
        private long _count;

        public void Reached(SchedulingPointKind kind, object? subject) => Interlocked.Increment(ref _count);
    }
}
