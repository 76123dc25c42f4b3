namespace PtLab.Sync;

/// <summary>Which operation of a sync primitive reached a scheduling point.</summary>
public enum SchedulingPointKind
{
    /// <summary>Just before <c>spin_lock</c> tries to take the lock.</summary>
    SpinLock,

    /// <summary>Just before <c>spin_trylock</c>.</summary>
    SpinTryLock,

    /// <summary>Just before <c>spin_unlock</c> releases the lock.</summary>
    SpinUnlock,

    /// <summary>Just before <c>down_read</c>.</summary>
    DownRead,

    /// <summary>Just before <c>down_read_trylock</c>.</summary>
    TryDownRead,

    /// <summary>Just before <c>up_read</c>.</summary>
    UpRead,

    /// <summary>Just before <c>down_write</c>.</summary>
    DownWrite,

    /// <summary>Just before <c>up_write</c>.</summary>
    UpWrite,

    /// <summary>Just before <c>rcu_read_lock</c>.</summary>
    RcuReadLock,

    /// <summary>Just before <c>rcu_read_unlock</c>.</summary>
    RcuReadUnlock,

    /// <summary>Just before <c>synchronize_rcu</c> starts a grace period.</summary>
    SynchronizeRcu,

    /// <summary>Just before <c>call_rcu</c> queues a callback.</summary>
    CallRcu,

    /// <summary>Just before a poll tries to end a grace period without waiting.</summary>
    RcuPoll,

    /// <summary>Just before a <see cref="PercpuRef"/> get or tryget.</summary>
    RefGet,

    /// <summary>Just before a <see cref="PercpuRef"/> put.</summary>
    RefPut,

    /// <summary>Just before a <see cref="PercpuRef"/> mode switch, kill or resurrect.</summary>
    RefSwitch,

    /// <summary>Just before a page-table entry is read by a walker that holds no lock on it (the hardware walk).</summary>
    EntryLoad,

    /// <summary>Just before a page-table entry is stored or cleared (<c>set_pte_at</c>, <c>ptep_get_and_clear</c>, <c>pte_clear</c>).</summary>
    EntryStore,

    /// <summary>
    /// One turn of a wait loop (a contended lock, a grace period, a pending percpu_ref switch): the
    /// thread cannot make progress until another CPU runs, so a scheduler must switch away here.
    /// </summary>
    Wait,

    /// <summary>
    /// A step of table storage being given back, or of a CPU's table-entry cache finding where an
    /// entry is stored (only where a test asks for them: see
    /// <see cref="Systematic.SystematicScenario.StorageSteps"/>).
    /// </summary>
    TableStorage,
}

/// <summary>
/// The hook a deterministic scheduler plugs into the sync primitives. Every lock, RCU and
/// percpu_ref operation calls it just before it takes effect, and on every turn of a wait loop;
/// the scheduler may switch to another simulated CPU before it returns.
/// </summary>
public interface ISchedulingPoint
{
    /// <summary>Called when a primitive reaches a scheduling point.</summary>
    /// <param name="kind">The operation.</param>
    /// <param name="subject">The primitive, or its lock class for locks that are bare words; may be null.</param>
    void Reached(SchedulingPointKind kind, object? subject);
}

/// <summary>The default hook: does nothing, so normal runs interleave as the OS schedules threads.</summary>
public sealed class NoSchedulingPoint : ISchedulingPoint
{
    private NoSchedulingPoint()
    {
    }

    /// <summary>The one instance; primitives given it skip the call altogether.</summary>
    public static NoSchedulingPoint Instance { get; } = new();

    /// <inheritdoc/>
    public void Reached(SchedulingPointKind kind, object? subject)
    {
    }
}
