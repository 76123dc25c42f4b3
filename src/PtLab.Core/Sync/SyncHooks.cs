namespace PtLab.Sync;

/// <summary>
/// The debugging and testing hooks one simulated machine hands to its sync primitives: the
/// scheduling-point hook and the lock-order checker. A primitive built without hooks, or with the
/// no-op scheduler and no checker, pays one null test per operation.
/// </summary>
public sealed class SyncHooks
{
    /// <summary>Creates hooks for a machine with <paramref name="cpus"/> simulated CPUs.</summary>
    /// <param name="cpus">Simulated CPUs; the lock checker keeps one held-lock stack per CPU.</param>
    /// <param name="scheduler">The scheduling-point hook, or null (same as <see cref="NoSchedulingPoint"/>).</param>
    /// <param name="lockDep">Whether to check lock order and sleeping in atomic context.</param>
    /// <param name="lockDepMode">What the checker does on a violation.</param>
    /// <param name="profile">Whether to count operations (<see cref="Profile"/>).</param>
    public SyncHooks(int cpus, ISchedulingPoint? scheduler = null, bool lockDep = false, LockDepMode lockDepMode = LockDepMode.Throw, bool profile = false)
    {
        Profile = profile ? new OpProfile(cpus) : null;
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        Cpus = cpus;
        Scheduler = scheduler is NoSchedulingPoint ? null : scheduler;
        LockDep = lockDep ? new LockDep(cpus, lockDepMode) : null;
        IsBare = Scheduler is null && LockDep is null && Profile is null;
    }

    /// <summary>
    /// True when no hook is set (no scheduling point, lock checker or profile): an annotated lock
    /// site then does only the bare lock operation, found with one test rather than one per hook.
    /// </summary>
    public bool IsBare { get; }

    /// <summary>
    /// A machine of one CPU without hooks: every lock the fault path takes is then that CPU's
    /// thread's (a CPU is driven by one host thread at a time), so per-CPU state is biased to it
    /// (<see cref="OwnerBias"/>) and split table locks are the uniprocessor kernel's.
    /// </summary>
    public bool IsUniprocessor => Cpus == 1 && IsBare;

    /// <summary>Simulated CPUs.</summary>
    public int Cpus { get; }

    /// <summary>The scheduling-point hook; null when it would do nothing.</summary>
    public ISchedulingPoint? Scheduler { get; }

    /// <summary>Per-operation counts; null unless profiling.</summary>
    public OpProfile? Profile { get; }

    /// <summary>The lock-order checker; null when disabled.</summary>
    public LockDep? LockDep { get; }
}
