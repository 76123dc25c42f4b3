namespace PtLab.Sync;

/// <summary>
/// A raw spin lock over one <see cref="int"/> word (0 free, 1 held), so that locks can live inside
/// page descriptors the way <c>ptlock</c> lives in <c>struct ptdesc</c>. Models <c>spin_lock</c>.
/// </summary>
public static class RawSpinLock
{
    /// <summary><c>spin_lock</c>.</summary>
    public static void Lock(ref int word)
    {
        if (Interlocked.CompareExchange(ref word, 1, 0) != 0)
        {
            LockSlow(ref word);
        }
    }

    /// <summary><c>spin_trylock</c>.</summary>
    public static bool TryLock(ref int word) =>
        Volatile.Read(ref word) == 0 && Interlocked.CompareExchange(ref word, 1, 0) == 0;

    /// <summary><c>spin_unlock</c>.</summary>
    public static void Unlock(ref int word)
    {
        if (Volatile.Read(ref word) != 1)
        {
            throw new InvalidOperationException("spin_unlock of a lock that is not held");
        }

        Volatile.Write(ref word, 0);
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
public sealed class SpinLockObject
{
    private int _word;

    /// <summary><c>spin_lock</c>.</summary>
    public void Lock() => RawSpinLock.Lock(ref _word);

    /// <summary><c>spin_unlock</c>.</summary>
    public void Unlock() => RawSpinLock.Unlock(ref _word);

    /// <summary><c>spin_is_locked</c>.</summary>
    public bool IsLocked => RawSpinLock.IsLocked(ref _word);
}
