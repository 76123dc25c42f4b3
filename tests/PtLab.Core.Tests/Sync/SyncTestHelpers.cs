using System.Collections.Concurrent;
using PtLab.Sync;

namespace PtLab.Tests.Sync;

/// <summary>A thread that holds an RCU read section open on one CPU until released.</summary>
internal sealed class ParkedReader : IDisposable
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(10);

    private readonly ManualResetEventSlim _inside = new();
    private readonly ManualResetEventSlim _release = new();
    private readonly ManualResetEventSlim _left = new();
    private readonly Thread _thread;

    public ParkedReader(Rcu rcu, int cpu)
    {
        _thread = new Thread(() =>
        {
            rcu.ReadLock(cpu);
            _inside.Set();
            _release.Wait();
            rcu.ReadUnlock(cpu);
            _left.Set();
        })
        { IsBackground = true, Name = $"parked RCU reader on CPU {cpu}" };
        _thread.Start();
        if (!_inside.Wait(s_timeout))
        {
            throw new TimeoutException("the parked reader never entered its read section");
        }
    }

    public bool HasLeft => _left.IsSet;

    /// <summary>Lets the reader leave, without waiting for it (safe from a scheduling hook).</summary>
    public void Let() => _release.Set();

    public void Release()
    {
        _release.Set();
        if (!_left.Wait(s_timeout))
        {
            throw new TimeoutException("the parked reader never left its read section");
        }

        _thread.Join();
    }

    public void Dispose()
    {
        _release.Set();
        _thread.Join();

        _inside.Dispose();
        _release.Dispose();
        _left.Dispose();
    }
}

/// <summary>A scheduling-point hook that records every point it is told about.</summary>
internal sealed class RecordingScheduler : ISchedulingPoint
{
    private readonly ConcurrentQueue<(SchedulingPointKind Kind, object? Subject)> _points = new();

    public Action<SchedulingPointKind>? OnReached { get; set; }

    public IReadOnlyList<SchedulingPointKind> Kinds => [.. _points.Select(p => p.Kind)];

    public void Reached(SchedulingPointKind kind, object? subject)
    {
        _points.Enqueue((kind, subject));
        OnReached?.Invoke(kind);
    }

    public void Clear() => _points.Clear();
}

internal static class Bounded
{
    /// <summary>Runs <paramref name="body"/> on a background thread and fails if it has not finished in time.</summary>
    public static void Join(Thread t, string what)
    {
        if (!t.Join(TimeSpan.FromSeconds(20)))
        {
            throw new TimeoutException($"{what} did not finish");
        }
    }

    public static Thread Start(Action body, string name)
    {
        var t = new Thread(() => body()) { IsBackground = true, Name = name };
        t.Start();
        return t;
    }
}
