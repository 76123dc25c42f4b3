namespace PtLab.Sync;

/// <summary>
/// A counter with one cache-line-padded slot per simulated CPU (<c>percpu_counter</c>). A CPU is
/// driven by one thread at a time, so its own slot needs no atomic; a reader sums the slots and
/// gets an exact figure once the CPUs are quiet. Updates from outside any CPU (id -1) go to a
/// shared slot with an atomic.
/// </summary>
public sealed class PerCpuCounter
{
    private const int Stride = 8; // 8 longs = 64 bytes per slot

    private readonly long[] _slots;
    private readonly int _cpus;

    /// <summary>Creates a counter for <paramref name="cpus"/> CPUs.</summary>
    public PerCpuCounter(int cpus)
    {
        _cpus = cpus;
        _slots = new long[(cpus + 2) * Stride];
    }

    /// <summary>Adds <paramref name="delta"/> on CPU <paramref name="cpu"/> (or -1 for none).</summary>
    public void Add(int cpu, long delta)
    {
        if ((uint)cpu < (uint)_cpus)
        {
            ref long slot = ref _slots[(cpu + 1) * Stride];
            Volatile.Write(ref slot, slot + delta);
        }
        else
        {
            Interlocked.Add(ref _slots[(_cpus + 1) * Stride], delta);
        }
    }

    /// <summary>The sum over all slots.</summary>
    public long Sum()
    {
        long s = 0;
        for (int i = 1; i <= _cpus + 1; i++)
        {
            s += Volatile.Read(ref _slots[i * Stride]);
        }

        return s;
    }
}
