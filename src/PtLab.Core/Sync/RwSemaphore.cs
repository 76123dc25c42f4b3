namespace PtLab.Sync;

/// <summary>
/// A reader-writer semaphore with writer preference, the model of <c>mmap_lock</c>
/// (<c>mmap_read_lock</c>, <c>mmap_write_lock</c>). Waiters spin, then yield, then sleep.
/// </summary>
/// <remarks>
/// The overloads that take a CPU also feed the lock checker; the ones without only reach the
/// scheduling points.
/// </remarks>
/// <param name="hooks">The machine's hooks, or null for a bare semaphore.</param>
/// <param name="lockClass">Its class for the lock checker; <see cref="LockClass.MmapLock"/> by default.</param>
public sealed class RwSemaphore(SyncHooks? hooks = null, LockClass? lockClass = null)
{
    private readonly ISchedulingPoint? _sched = hooks?.Scheduler;

    // > 0: that many readers; -1: one writer; 0: free.
    private int _state;
    private int _writersWaiting;

    /// <summary>The semaphore's class.</summary>
    public LockClass Class { get; } = lockClass ?? LockClass.MmapLock;

    /// <summary><c>down_read</c>.</summary>
    public void DownRead()
    {
        _sched?.Reached(SchedulingPointKind.DownRead, this);
        var spin = new SpinWait();
        while (true)
        {
            int s = Volatile.Read(ref _state);
            if (s >= 0 && Volatile.Read(ref _writersWaiting) == 0 &&
                Interlocked.CompareExchange(ref _state, s + 1, s) == s)
            {
                return;
            }

            _sched?.Reached(SchedulingPointKind.Wait, this);
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary><c>down_read</c> on CPU <paramref name="cpu"/>.</summary>
    public void DownRead(int cpu)
    {
        hooks?.LockDep?.Acquire(cpu, Class, read: true);
        DownRead();
    }

    /// <summary><c>down_read_trylock</c>.</summary>
    public bool TryDownRead()
    {
        _sched?.Reached(SchedulingPointKind.TryDownRead, this);
        int s = Volatile.Read(ref _state);
        return s >= 0 && Volatile.Read(ref _writersWaiting) == 0 &&
               Interlocked.CompareExchange(ref _state, s + 1, s) == s;
    }

    /// <summary><c>down_read_trylock</c> on CPU <paramref name="cpu"/>.</summary>
    public bool TryDownRead(int cpu)
    {
        if (!TryDownRead())
        {
            return false;
        }

        hooks?.LockDep?.TryAcquired(cpu, Class, read: true);
        return true;
    }

    /// <summary><c>up_read</c>.</summary>
    public void UpRead()
    {
        _sched?.Reached(SchedulingPointKind.UpRead, this);
        if (Interlocked.Decrement(ref _state) < 0)
        {
            throw new BadUnlockException("up_read without down_read");
        }
    }

    /// <summary><c>up_read</c> on CPU <paramref name="cpu"/>.</summary>
    public void UpRead(int cpu)
    {
        hooks?.LockDep?.Release(cpu, Class);
        UpRead();
    }

    /// <summary><c>down_write</c>.</summary>
    public void DownWrite()
    {
        _sched?.Reached(SchedulingPointKind.DownWrite, this);
        Interlocked.Increment(ref _writersWaiting);
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _state, -1, 0) != 0)
        {
            _sched?.Reached(SchedulingPointKind.Wait, this);
            spin.SpinOnce(sleep1Threshold: -1);
        }

        Interlocked.Decrement(ref _writersWaiting);
    }

    /// <summary><c>down_write</c> on CPU <paramref name="cpu"/>.</summary>
    public void DownWrite(int cpu)
    {
        hooks?.LockDep?.Acquire(cpu, Class);
        DownWrite();
    }

    /// <summary>
    /// <c>down_write_nested</c> on CPU <paramref name="cpu"/>: a second lock of this class taken while
    /// one is held (fork takes the new mm's <c>mmap_lock</c> under the parent's).
    /// </summary>
    public void DownWriteNested(int cpu, int subclass)
    {
        hooks?.LockDep?.Acquire(cpu, Class, subclass: subclass);
        DownWrite();
    }

    /// <summary><c>up_write</c>.</summary>
    public void UpWrite()
    {
        _sched?.Reached(SchedulingPointKind.UpWrite, this);
        if (Interlocked.CompareExchange(ref _state, 0, -1) != -1)
        {
            throw new BadUnlockException("up_write without down_write");
        }
    }

    /// <summary><c>up_write</c> on CPU <paramref name="cpu"/>.</summary>
    public void UpWrite(int cpu)
    {
        hooks?.LockDep?.Release(cpu, Class);
        UpWrite();
    }

    /// <summary>
    /// <c>mmap_assert_locked</c> (<c>lockdep_assert_held</c>): CPU <paramref name="cpu"/> holds it
    /// for read or write. Checked only when lock checking is on.
    /// </summary>
    public void AssertHeld(int cpu) => hooks?.LockDep?.AssertHeld(cpu, Class);

    /// <summary><c>mmap_assert_write_locked</c> (<c>lockdep_assert_held_write</c>): CPU <paramref name="cpu"/> holds it for write.</summary>
    public void AssertWriteHeld(int cpu) => hooks?.LockDep?.AssertHeld(cpu, Class, mode: LockHeldMode.Write);

    /// <summary>Whether a writer holds it.</summary>
    public bool IsWriteLocked => Volatile.Read(ref _state) == -1;

    /// <summary>Whether any reader or writer holds it.</summary>
    public bool IsLocked => Volatile.Read(ref _state) != 0;
}
