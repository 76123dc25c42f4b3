using PtLab.Sync;

namespace PtLab.Tests.Sync;

public sealed class LockDepTests
{
    [Fact]
    public void TheKernelsDocumentedOrderIsAccepted()
    {
        var dep = new LockDep(1);
        dep.Acquire(0, LockClass.MmapLock);
        dep.Acquire(0, LockClass.PmdLock, 10);
        dep.Acquire(0, LockClass.PteLock, 20);
        dep.Acquire(0, LockClass.PageTableLock);
        dep.Release(0, LockClass.PageTableLock);
        dep.Release(0, LockClass.PmdLock, 10); // release order need not be LIFO
        dep.Release(0, LockClass.PteLock, 20);
        dep.Release(0, LockClass.MmapLock);
        Assert.Empty(dep.Violations);
        Assert.Empty(dep.Held(0));
    }

    [Fact]
    public void TakingAPmdLockUnderAPteLockIsReportedAsAnInversion()
    {
        var dep = new LockDep(1);
        dep.Acquire(0, LockClass.PteLock, 20);
        var e = Assert.Throws<LockDepException>(() => dep.Acquire(0, LockClass.PmdLock, 10));
        Assert.Equal(LockDepViolationKind.Inversion, e.Violation.Kind);
        Assert.Contains("pmd_lock", e.Message);
        Assert.Contains("pte_lock", e.Message);
    }

    [Fact]
    public void TwoClassesTakenInBothOrdersOnDifferentCpusAreReportedWithTheEarlierChain()
    {
        var a = new LockClass("a_lock", LockKind.Spin);
        var b = new LockClass("b_lock", LockKind.Spin);
        var c = new LockClass("c_lock", LockKind.Spin);
        var dep = new LockDep(2, LockDepMode.Record);
        dep.Acquire(0, a);
        dep.Acquire(0, b);
        dep.Release(0, b);
        dep.Release(0, a);
        dep.Acquire(0, b);
        dep.Acquire(0, c);
        dep.Release(0, c);
        dep.Release(0, b);
        Assert.Empty(dep.Violations);

        dep.Acquire(1, c);
        dep.Acquire(1, a); // a -> b -> c was established, so c then a closes a cycle
        var v = Assert.Single(dep.Violations);
        Assert.Equal(LockDepViolationKind.Inversion, v.Kind);
        Assert.Equal(1, v.Cpu);
        Assert.Contains("a_lock -> b_lock -> c_lock", v.Message);
    }

    [Fact]
    public void TakingAnyLockUnderPageTableLockIsReported()
    {
        var dep = new LockDep(1);
        dep.Acquire(0, LockClass.PageTableLock);
        var e = Assert.Throws<LockDepException>(() => dep.Acquire(0, LockClass.PteLock, 1));
        Assert.Equal(LockDepViolationKind.UnderLeaf, e.Violation.Kind);
    }

    [Fact]
    public void TheTlbLockMayBeTakenUnderAPteLockAndOnlyRcuNestsInsideIt()
    {
        var hooks = new SyncHooks(1, lockDep: true);
        var dep = hooks.LockDep!;
        var rcu = new Rcu(1, hooks);
        dep.Acquire(0, LockClass.PteLock, 3);
        dep.Acquire(0, LockClass.TlbLock, 0);
        dep.Release(0, LockClass.TlbLock, 0);
        dep.Release(0, LockClass.PteLock, 3);

        dep.Acquire(0, LockClass.TlbLock, 0);
        rcu.ReadLock(0);
        rcu.ReadUnlock(0);
        var e = Assert.Throws<LockDepException>(() => dep.Acquire(0, LockClass.FreeListLock));
        Assert.Equal(LockDepViolationKind.UnderLeaf, e.Violation.Kind);
    }

    [Fact]
    public void ATrylockOfThePmdLockUnderThePteLockIsNotAnInversion()
    {
        var dep = new LockDep(1);
        dep.Acquire(0, LockClass.PteLock, 20);
        dep.TryAcquired(0, LockClass.PmdLock, 10);
        Assert.Empty(dep.Violations);
        Assert.Equal(2, dep.Held(0).Count);
        Assert.True(dep.Held(0)[1].Trylock);
    }

    [Fact]
    public void NestingTwoPteLocksNeedsASubclass()
    {
        var dep = new LockDep(1, LockDepMode.Record);
        dep.Acquire(0, LockClass.PteLock, 1);
        dep.Acquire(0, LockClass.PteLock, 2, subclass: 1);
        Assert.Empty(dep.Violations);

        dep.Acquire(0, LockClass.PteLock, 3);
        Assert.Equal(LockDepViolationKind.RecursiveLocking, Assert.Single(dep.Violations).Kind);
    }

    [Fact]
    public void ReleasingALockThatIsNotHeldIsReported()
    {
        var dep = new LockDep(2);
        dep.Acquire(0, LockClass.PteLock, 5);
        var e = Assert.Throws<LockDepException>(() => dep.Release(1, LockClass.PteLock, 5));
        Assert.Equal(LockDepViolationKind.BadUnlock, e.Violation.Kind);
    }

    [Fact]
    public void SynchronizeRcuUnderASpinLockIsReported()
    {
        var hooks = new SyncHooks(1, lockDep: true);
        var rcu = new Rcu(1, hooks);
        int ptl = 0;
        RawSpinLock.Lock(ref ptl, hooks, 0, LockClass.PteLock, 7);
        var e = Assert.Throws<LockDepException>(() => rcu.SynchronizeRcu(0));
        Assert.Equal(LockDepViolationKind.SleepUnderSpinLock, e.Violation.Kind);
        Assert.Contains("synchronize_rcu", e.Message);
        Assert.Contains("pte_lock", e.Message);
        RawSpinLock.Unlock(ref ptl, hooks, 0, LockClass.PteLock, 7);
        rcu.SynchronizeRcu(0);
        Assert.Single(hooks.LockDep!.Violations);
    }

    [Fact]
    public void SynchronizeRcuInsideAnRcuReadSectionIsReported()
    {
        var hooks = new SyncHooks(1, lockDep: true);
        var rcu = new Rcu(1, hooks);
        rcu.ReadLock(0);
        var e = Assert.Throws<LockDepException>(() => rcu.SynchronizeRcu(0));
        Assert.Equal(LockDepViolationKind.SleepInRcuReadSection, e.Violation.Kind);
        rcu.ReadUnlock(0);
        Assert.Equal(0, hooks.LockDep!.RcuDepth(0));
    }

    [Fact]
    public void AnUnbalancedRcuReadUnlockLeavesTheCheckersDepthAlone()
    {
        var hooks = new SyncHooks(1, lockDep: true);
        var rcu = new Rcu(1, hooks);
        Assert.Throws<RcuException>(() => rcu.ReadUnlock(0));
        Assert.Equal(0, hooks.LockDep!.RcuDepth(0));
    }

    [Fact]
    public void ASyncPercpuRefSwitchUnderASpinLockIsReportedBeforeItChangesTheRef()
    {
        var hooks = new SyncHooks(2, lockDep: true);
        var rcu = new Rcu(2, hooks);
        var r = new PercpuRef(rcu, null, PercpuRefInit.AllowReinit);
        var ptl = new SpinLockObject(hooks, LockClass.PteLock);
        ptl.Lock(1);
        var e = Assert.Throws<LockDepException>(() => r.SwitchToAtomicSync(1));
        Assert.Equal(LockDepViolationKind.SleepUnderSpinLock, e.Violation.Kind);
        Assert.Contains("percpu_ref_switch_to_atomic_sync", e.Message);
        Assert.True(r.IsPercpu);
        ptl.Unlock(1);

        r.SwitchToAtomicSync(1);
        Assert.False(r.IsPercpu);
        Assert.Single(hooks.LockDep!.Violations);
    }

    [Fact]
    public void APercpuRefSwitchThatMustWaitForAnotherIsReportedInsideAnRcuReadSection()
    {
        var hooks = new SyncHooks(2, lockDep: true, lockDepMode: LockDepMode.Record);
        var rcu = new Rcu(2, hooks);
        var r = new PercpuRef(rcu, null, PercpuRefInit.AllowReinit);
        r.SwitchToAtomic(0);
        rcu.ReadLock(1);
        Assert.Throws<RcuException>(() => r.SwitchToPercpu(1)); // RCU refuses to deadlock on itself
        rcu.ReadUnlock(1);
        Assert.Contains(hooks.LockDep!.Violations, v => v.Kind == LockDepViolationKind.SleepInRcuReadSection);
    }

    [Fact]
    public void TakingMmapLockUnderASpinLockIsReported()
    {
        var hooks = new SyncHooks(1, lockDep: true);
        var mmapLock = new RwSemaphore(hooks);
        var ptl = new SpinLockObject(hooks);
        ptl.Lock(0);
        var e = Assert.Throws<LockDepException>(() => mmapLock.DownRead(0));
        Assert.Equal(LockDepViolationKind.SleepUnderSpinLock, e.Violation.Kind);
        Assert.False(mmapLock.IsLocked);
    }

    [Fact]
    public void AnnotatedPrimitivesFeedTheHeldLockStack()
    {
        var hooks = new SyncHooks(1, lockDep: true);
        var dep = hooks.LockDep!;
        var mmapLock = new RwSemaphore(hooks);
        int pmdl = 0, ptl = 0;

        mmapLock.DownRead(0);
        RawSpinLock.Lock(ref pmdl, hooks, 0, LockClass.PmdLock, 1);
        Assert.True(RawSpinLock.TryLock(ref ptl, hooks, 0, LockClass.PteLock, 2));
        Assert.Equal([LockClass.MmapLock, LockClass.PmdLock, LockClass.PteLock], dep.Held(0).Select(h => h.Class));
        dep.AssertHeld(0, LockClass.PmdLock);

        RawSpinLock.Unlock(ref ptl, hooks, 0, LockClass.PteLock, 2);
        RawSpinLock.Unlock(ref pmdl, hooks, 0, LockClass.PmdLock, 1);
        mmapLock.UpRead(0);
        dep.AssertNothingHeld(0, "fault return");
        Assert.Empty(dep.Violations);
    }

    [Fact]
    public void AssertHeldReportsALockThatIsNotHeld()
    {
        var dep = new LockDep(1);
        var e = Assert.Throws<LockDepException>(() => dep.AssertHeld(0, LockClass.PmdLock));
        Assert.Equal(LockDepViolationKind.AssertionFailed, e.Violation.Kind);
    }

    [Fact]
    public void AnRwSemaphoreHeldForReadPassesAHeldAssertionButNotAWriteOne()
    {
        var hooks = new SyncHooks(1, lockDep: true, lockDepMode: LockDepMode.Record);
        var mmapLock = new RwSemaphore(hooks);
        mmapLock.DownRead(0);
        mmapLock.AssertHeld(0);
        mmapLock.AssertWriteHeld(0);
        mmapLock.UpRead(0);
        mmapLock.DownWrite(0);
        mmapLock.AssertHeld(0);
        mmapLock.AssertWriteHeld(0);
        mmapLock.UpWrite(0);
        mmapLock.AssertHeld(0);

        var v = hooks.LockDep!.Violations;
        Assert.Equal(2, v.Count);
        Assert.All(v, x => Assert.Equal(LockDepViolationKind.AssertionFailed, x.Kind));
        Assert.Contains("mmap_lock for write but holds mmap_lock (read)", v[0].Message);
        Assert.Contains("should hold mmap_lock but holds nothing", v[1].Message);
    }

    [Fact]
    public void AHeldAssertionOnOneTablesLockIsNotSatisfiedByAnothersLock()
    {
        var dep = new LockDep(1);
        dep.Acquire(0, LockClass.PteLock, 5);
        dep.AssertHeld(0, LockClass.PteLock, 5);
        var e = Assert.Throws<LockDepException>(() => dep.AssertHeld(0, LockClass.PteLock, 6));
        Assert.Contains("pte_lock#6", e.Message);
    }

    [Fact]
    public void WithoutTheCheckerHeldAssertionsDoNothing()
    {
        var hooks = new SyncHooks(1, lockDep: false);
        var mmapLock = new RwSemaphore(hooks);
        Assert.Null(hooks.LockDep);
        mmapLock.AssertHeld(0);
        mmapLock.AssertWriteHeld(0);
        Assert.False(mmapLock.IsLocked);
    }

    [Fact]
    public void DeclaringAnOrderThatContradictsTheKernelsIsRefused()
    {
        var dep = new LockDep(1);
        Assert.Throws<ArgumentException>(() => dep.DeclareOrder(LockClass.PteLock, LockClass.MmapLock));
    }
}
