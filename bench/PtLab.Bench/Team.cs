namespace PtLab.Bench;

/// <summary>
/// A fixed team of threads that run one piece of work together, each with its own simulated CPU id
/// (the caller's thread is CPU 0). The helpers are started once, so an invocation costs a
/// generation bump, a start barrier and a join, not thread creation. The start barrier makes every
/// thread begin its work together: without it, on a loaded machine a helper woken late finds the
/// caller's loop already done, and a shared line is never contended.
/// </summary>
internal sealed class Team : IDisposable
{
    private readonly Thread[] _helpers;
    private Action<int>? _work;
    private int _generation;
    private int _done;
    private int _arrived;
    private bool _stop;

    public Team(int threads)
    {
        _helpers = new Thread[threads - 1];
        for (int i = 0; i < _helpers.Length; i++)
        {
            int cpu = i + 1;
            _helpers[i] = new Thread(() => Loop(cpu)) { IsBackground = true, Name = $"bench cpu {cpu}" };
            _helpers[i].Start();
        }
    }

    public int Size => _helpers.Length + 1;

    public void Run(Action<int> work)
    {
        _work = work;
        Volatile.Write(ref _done, 0);
        Volatile.Write(ref _arrived, 0);
        Interlocked.Increment(ref _generation);
        Arrive();
        work(0);
        var spin = new SpinWait();
        while (Volatile.Read(ref _done) < _helpers.Length)
        {
            spin.SpinOnce();
        }
    }

    public void Dispose()
    {
        Volatile.Write(ref _stop, true);
        Interlocked.Increment(ref _generation);
        foreach (var t in _helpers)
        {
            t.Join();
        }
    }

    // Waits until every thread of the team has arrived.
    private void Arrive()
    {
        Interlocked.Increment(ref _arrived);
        var spin = new SpinWait();
        while (Volatile.Read(ref _arrived) < Size)
        {
            spin.SpinOnce();
        }
    }

    private void Loop(int cpu)
    {
        int seen = 0;
        while (true)
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _generation) == seen)
            {
                spin.SpinOnce();
            }

            seen = Volatile.Read(ref _generation);
            if (Volatile.Read(ref _stop))
            {
                return;
            }

            Arrive();
            _work!(cpu);
            Interlocked.Increment(ref _done);
        }
    }
}
