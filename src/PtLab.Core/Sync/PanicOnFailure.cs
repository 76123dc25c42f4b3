namespace PtLab.Sync;

/// <summary>
/// A scheduling-point hook that stops every CPU once one has failed, as a kernel panic stops the
/// others: after <see cref="Panic"/>, any CPU reaching a wait (a contended lock, a grace period, a
/// retried fault) throws <see cref="MachinePanicException"/> instead of spinning forever on a lock
/// the failed CPU will never release. Normal runs and tests install it; it is otherwise a no-op.
/// </summary>
public sealed class PanicOnFailure : ISchedulingPoint
{
    private volatile string? _reason;

    /// <summary>Whether a CPU has failed.</summary>
    public bool Panicked => _reason is not null;

    /// <summary>Marks the machine failed; the first reason is kept.</summary>
    public void Panic(string reason) => Interlocked.CompareExchange(ref _reason, reason, null);

    /// <inheritdoc/>
    public void Reached(SchedulingPointKind kind, object? subject)
    {
        if (kind == SchedulingPointKind.Wait && _reason is { } reason)
        {
            throw new MachinePanicException(reason);
        }
    }
}

/// <summary>Thrown on the surviving CPUs once another CPU of the same machine failed.</summary>
public sealed class MachinePanicException(string reason) : Exception($"another CPU failed first: {reason}");
