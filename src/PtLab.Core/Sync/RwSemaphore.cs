using System.Runtime.CompilerServices;

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

    // Reads held by CPU BiasedTo without an atomic (written by that CPU's thread only), and
    // whether a writer holds the semaphore and keeps such reads out (see BiasedTo).
    private int _ownerReads;
    private int _writerIn;

    /// <summary>
    /// The CPU whose reads take no atomic and write no shared line, or -1 (the default): on a
    /// machine of one CPU without hooks, where nearly every taking of <c>mmap_lock</c> is that
    /// CPU's read, as the kernel's per-CPU semaphores favour their readers. Its reads count in a
    /// word only its thread writes; a writer, once it holds the semaphore, announces itself,
    /// makes those reads visible with a process-wide barrier (unless it is that CPU's thread
    /// itself) and waits for them to end; a read that finds a writer announced takes the shared
    /// count instead. Only for a semaphore whose callers name their CPU.
    /// </summary>
    internal int BiasedTo { get; init; } = -1;

    /// <summary>
    /// Test-only mutation: a writer of a biased semaphore waits for the owner's reads without the
    /// process-wide barrier, so the owner's store of its read count and its load of the writer's
    /// announcement may pass each other (x86 lets a load pass an earlier store), and both go in.
    /// </summary>
    internal bool SkipBarrierForTesting { get; init; }

    // A read on CPU BiasedTo without an atomic: false when a writer is in, and the read must be
    // taken on the shared count. A nested read is always in: its writer waits for the outer one.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool OwnerTryDownRead()
    {
        int n = _ownerReads;
        Volatile.Write(ref _ownerReads, n + 1);
        if (n > 0 || Volatile.Read(ref _writerIn) == 0)
        {
            return true;
        }

        Volatile.Write(ref _ownerReads, n);
        return false;
    }

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
        if (cpu == BiasedTo && OwnerTryDownRead())
        {
            return; // no hooks on a biased semaphore
        }

        hooks?.LockDep?.Acquire(cpu, Class, read: true);
        hooks?.Profile?.Locked(cpu);
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
        if (cpu == BiasedTo && OwnerTryDownRead())
        {
            return true;
        }

        if (!TryDownRead())
        {
            return false;
        }

        hooks?.LockDep?.TryAcquired(cpu, Class, read: true);
        hooks?.Profile?.Locked(cpu);
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
        if (cpu == BiasedTo && _ownerReads > 0)
        {
            Volatile.Write(ref _ownerReads, _ownerReads - 1);
            return;
        }

        hooks?.LockDep?.Release(cpu, Class);
        hooks?.Profile?.Count(cpu, ProfileOp.SharedAtomic);
        UpRead();
    }

    /// <summary><c>down_write</c>.</summary>
    public void DownWrite() => DownWriteOn(-1);

    // down_write by CPU cpu (-1: none known).
    private void DownWriteOn(int cpu)
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
        if (BiasedTo >= 0)
        {
            WaitOwnerReads(cpu);
        }
    }

    // The writer, holding the semaphore: keeps CPU BiasedTo's reads out, and waits for those in.
    private void WaitOwnerReads(int cpu)
    {
        Volatile.Write(ref _writerIn, 1);
        if (cpu != BiasedTo && !SkipBarrierForTesting)
        {
            // Either that CPU's read count is visible after this, or its read of _writerIn comes after it.
            Interlocked.MemoryBarrierProcessWide();
        }

        var spin = default(SpinWait);
        while (Volatile.Read(ref _ownerReads) != 0)
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary><c>down_write</c> on CPU <paramref name="cpu"/>.</summary>
    public void DownWrite(int cpu)
    {
        hooks?.LockDep?.Acquire(cpu, Class);
        hooks?.Profile?.Locked(cpu);
        hooks?.Profile?.Count(cpu, ProfileOp.SharedAtomic, 2); // the waiting-writer count, up and down
        DownWriteOn(cpu);
    }

    /// <summary>
    /// <c>down_write_nested</c> on CPU <paramref name="cpu"/>: a second lock of this class taken while
    /// one is held (fork takes the new mm's <c>mmap_lock</c> under the parent's).
    /// </summary>
    public void DownWriteNested(int cpu, int subclass)
    {
        hooks?.LockDep?.Acquire(cpu, Class, subclass: subclass);
        DownWriteOn(cpu);
    }

    /// <summary><c>up_write</c>.</summary>
    public void UpWrite()
    {
        _sched?.Reached(SchedulingPointKind.UpWrite, this);
        if (BiasedTo >= 0)
        {
            Volatile.Write(ref _writerIn, 0);
        }

        if (Interlocked.CompareExchange(ref _state, 0, -1) != -1)
        {
            throw new BadUnlockException("up_write without down_write");
        }
    }

    /// <summary><c>up_write</c> on CPU <paramref name="cpu"/>.</summary>
    public void UpWrite(int cpu)
    {
        hooks?.LockDep?.Release(cpu, Class);
        hooks?.Profile?.Count(cpu, ProfileOp.SharedAtomic);
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
    public bool IsLocked => Volatile.Read(ref _state) != 0 || Volatile.Read(ref _ownerReads) != 0;
}
