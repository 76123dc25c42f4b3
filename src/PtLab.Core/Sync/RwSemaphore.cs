namespace PtLab.Sync;

/// <summary>
/// A reader-writer semaphore with writer preference, the model of <c>mmap_lock</c>
/// (<c>mmap_read_lock</c>, <c>mmap_write_lock</c>). Waiters spin, then yield, then sleep.
/// </summary>
public sealed class RwSemaphore
{
    // > 0: that many readers; -1: one writer; 0: free.
    private int _state;
    private int _writersWaiting;

    /// <summary><c>down_read</c>.</summary>
    public void DownRead()
    {
        var spin = new SpinWait();
        while (true)
        {
            int s = Volatile.Read(ref _state);
            if (s >= 0 && Volatile.Read(ref _writersWaiting) == 0 &&
                Interlocked.CompareExchange(ref _state, s + 1, s) == s)
            {
                return;
            }

            spin.SpinOnce();
        }
    }

    /// <summary><c>down_read_trylock</c>.</summary>
    public bool TryDownRead()
    {
        int s = Volatile.Read(ref _state);
        return s >= 0 && Volatile.Read(ref _writersWaiting) == 0 &&
               Interlocked.CompareExchange(ref _state, s + 1, s) == s;
    }

    /// <summary><c>up_read</c>.</summary>
    public void UpRead()
    {
        if (Interlocked.Decrement(ref _state) < 0)
        {
            throw new InvalidOperationException("up_read without down_read");
        }
    }

    /// <summary><c>down_write</c>.</summary>
    public void DownWrite()
    {
        Interlocked.Increment(ref _writersWaiting);
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _state, -1, 0) != 0)
        {
            spin.SpinOnce();
        }

        Interlocked.Decrement(ref _writersWaiting);
    }

    /// <summary><c>up_write</c>.</summary>
    public void UpWrite()
    {
        if (Interlocked.CompareExchange(ref _state, 0, -1) != -1)
        {
            throw new InvalidOperationException("up_write without down_write");
        }
    }

    /// <summary>Whether a writer holds it.</summary>
    public bool IsWriteLocked => Volatile.Read(ref _state) == -1;

    /// <summary>Whether any reader or writer holds it.</summary>
    public bool IsLocked => Volatile.Read(ref _state) != 0;
}
