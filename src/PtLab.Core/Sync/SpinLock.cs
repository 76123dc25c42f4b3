using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace PtLab.Sync;

/// <summary>
/// A raw spin lock over one <see cref="int"/> word (0 free, 1 held), so that locks can live inside
/// page descriptors the way <c>ptlock</c> lives in <c>struct ptdesc</c>. Models <c>spin_lock</c>.
/// </summary>
/// <remarks>
/// The overloads without <see cref="SyncHooks"/> are bare: no scheduling point, no lock checking.
/// The overloads with hooks are the annotated form a lock site uses when it knows its CPU and the
/// lock's class; they cost one null test per hook when the hooks are off.
/// </remarks>
public static class RawSpinLock
{
    /// <summary><c>spin_lock</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Lock(ref int word)
    {
        if (Interlocked.CompareExchange(ref word, 1, 0) != 0)
        {
            LockSlow(ref word);
        }
    }

    /// <summary><c>spin_lock</c> (or <c>spin_lock_nested</c> with a nonzero <paramref name="subclass"/>) on CPU <paramref name="cpu"/>, checked and scheduled through <paramref name="hooks"/>.</summary>
    /// <param name="word">The lock word.</param>
    /// <param name="hooks">The machine's hooks.</param>
    /// <param name="cpu">The simulated CPU taking it.</param>
    /// <param name="lockClass">The lock's class.</param>
    /// <param name="instance">Which lock of the class (for example the table's frame number).</param>
    /// <param name="subclass">Nesting subclass, for two locks of one class held at once.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Lock(ref int word, SyncHooks hooks, int cpu, LockClass lockClass, long instance = 0, int subclass = 0)
    {
        if (hooks.IsBare)
        {
            Lock(ref word);
            return;
        }

        LockHooked(ref word, hooks, cpu, lockClass, instance, subclass);
    }

    // The annotated lock with some hook set: checked, counted and scheduled.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void LockHooked(ref int word, SyncHooks hooks, int cpu, LockClass lockClass, long instance, int subclass)
    {
        hooks.LockDep?.Acquire(cpu, lockClass, instance, subclass);
        hooks.Profile?.Locked(cpu);
        var sched = hooks.Scheduler;
        if (sched is null)
        {
            Lock(ref word);
            return;
        }

        sched.Reached(SchedulingPointKind.SpinLock, lockClass);
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref word, 1, 0) != 0)
        {
            sched.Reached(SchedulingPointKind.Wait, lockClass);
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary>
    /// <c>spin_lock</c> as a uniprocessor kernel has it: a plain store, for a lock that only one
    /// thread ever takes (the lone CPU's). A lock found held is waited for as ever, so a caller
    /// that broke that rule still never takes a held lock in a race it could see.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LockUniprocessor(ref int word)
    {
        if (Volatile.Read(ref word) != 0)
        {
            LockSlow(ref word);
            return;
        }

        Volatile.Write(ref word, 1);
    }

    /// <summary><c>spin_trylock</c>.</summary>
    public static bool TryLock(ref int word) =>
        Volatile.Read(ref word) == 0 && Interlocked.CompareExchange(ref word, 1, 0) == 0;

    /// <summary><c>spin_trylock</c> on CPU <paramref name="cpu"/>, checked and scheduled through <paramref name="hooks"/>.</summary>
    public static bool TryLock(ref int word, SyncHooks hooks, int cpu, LockClass lockClass, long instance = 0)
    {
        hooks.Scheduler?.Reached(SchedulingPointKind.SpinTryLock, lockClass);
        if (!TryLock(ref word))
        {
            return false;
        }

        hooks.LockDep?.TryAcquired(cpu, lockClass, instance);
        hooks.Profile?.Locked(cpu);
        return true;
    }

    /// <summary><c>spin_unlock</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unlock(ref int word)
    {
        if (Volatile.Read(ref word) != 1)
        {
            ThrowNotHeld();
        }

        Volatile.Write(ref word, 0);
    }

    // Out of line, so that the unlock itself stays small enough to inline at every lock site.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotHeld() => throw new BadUnlockException("spin_unlock of a lock that is not held");

    /// <summary><c>spin_unlock</c> on CPU <paramref name="cpu"/>, checked and scheduled through <paramref name="hooks"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unlock(ref int word, SyncHooks hooks, int cpu, LockClass lockClass, long instance = 0)
    {
        if (!hooks.IsBare)
        {
            UnlockHooks(hooks, cpu, lockClass, instance);
        }

        Unlock(ref word);
    }

    // What an annotated unlock does before the unlock itself when some hook is set.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void UnlockHooks(SyncHooks hooks, int cpu, LockClass lockClass, long instance)
    {
        hooks.Scheduler?.Reached(SchedulingPointKind.SpinUnlock, lockClass);
        hooks.LockDep?.Release(cpu, lockClass, instance);
    }

    /// <summary><c>spin_is_locked</c>.</summary>
    public static bool IsLocked(ref int word) => Volatile.Read(ref word) != 0;

    private static void LockSlow(ref int word)
    {
        var spin = new SpinWait();
        while (true)
        {
            if (Volatile.Read(ref word) == 0 && Interlocked.CompareExchange(ref word, 1, 0) == 0)
            {
                return;
            }

            spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}

/// <summary>A spin lock object, for locks that are not embedded in a descriptor (<c>page_table_lock</c>).</summary>
/// <param name="hooks">The machine's hooks, or null for a bare lock.</param>
/// <param name="lockClass">Its class for the lock checker; <see cref="LockClass.PageTableLock"/> by default.</param>
public sealed class SpinLockObject(SyncHooks? hooks = null, LockClass? lockClass = null)
{
    private readonly ISchedulingPoint? _sched = hooks?.Scheduler;
    private int _word;

    /// <summary>The lock's class.</summary>
    public LockClass Class { get; } = lockClass ?? LockClass.PageTableLock;

    /// <summary><c>spin_lock</c>, not checked (the caller's CPU is unknown).</summary>
    public void Lock()
    {
        if (_sched is null)
        {
            RawSpinLock.Lock(ref _word);
            return;
        }

        _sched.Reached(SchedulingPointKind.SpinLock, this);
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _word, 1, 0) != 0)
        {
            _sched.Reached(SchedulingPointKind.Wait, this);
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary><c>spin_lock</c> on CPU <paramref name="cpu"/>, checked by the lock checker when enabled.</summary>
    public void Lock(int cpu)
    {
        hooks?.LockDep?.Acquire(cpu, Class);
        Lock();
    }

    /// <summary><c>spin_trylock</c>, not checked.</summary>
    public bool TryLock()
    {
        _sched?.Reached(SchedulingPointKind.SpinTryLock, this);
        return RawSpinLock.TryLock(ref _word);
    }

    /// <summary><c>spin_trylock</c> on CPU <paramref name="cpu"/>.</summary>
    public bool TryLock(int cpu)
    {
        if (!TryLock())
        {
            return false;
        }

        hooks?.LockDep?.TryAcquired(cpu, Class);
        return true;
    }

    /// <summary><c>spin_unlock</c>, not checked.</summary>
    public void Unlock()
    {
        _sched?.Reached(SchedulingPointKind.SpinUnlock, this);
        RawSpinLock.Unlock(ref _word);
    }

    /// <summary><c>spin_unlock</c> on CPU <paramref name="cpu"/>.</summary>
    public void Unlock(int cpu)
    {
        hooks?.LockDep?.Release(cpu, Class);
        Unlock();
    }

    /// <summary><c>spin_is_locked</c>.</summary>
    public bool IsLocked => RawSpinLock.IsLocked(ref _word);
}

/// <summary>A lock released by someone who does not hold it (lockdep's "bad unlock balance").</summary>
/// <param name="message">The unlock, in the kernel's terms.</param>
public sealed class BadUnlockException(string message) : InvalidOperationException(message);
