namespace PtLab.Sync;

/// <summary>
/// A counter with one cache-line-padded slot per simulated CPU (<c>percpu_counter</c>). A CPU is
/// driven by one thread at a time, so its own slot needs no atomic; a reader sums the slots and
/// gets an exact figure once the CPUs are quiet. Updates from outside any CPU (id -1) go to a
/// shared slot, the last, with an atomic.
/// </summary>
public sealed class PerCpuCounter
{
    private readonly Padded<long>[] _slots;
    private readonly int _cpus;

    /// <summary>Creates a counter for <paramref name="cpus"/> CPUs.</summary>
    public PerCpuCounter(int cpus)
    {
        _cpus = cpus;
        _slots = new Padded<long>[cpus + 1];
    }

    /// <summary>Adds <paramref name="delta"/> on CPU <paramref name="cpu"/> (or -1 for none).</summary>
    public void Add(int cpu, long delta)
    {
        if ((uint)cpu < (uint)_cpus)
        {
            _slots[cpu].AddOwned(delta);
        }
        else
        {
            _slots[_cpus].AddAtomic(delta);
        }
    }

    /// <summary>The sum over all slots.</summary>
    public long Sum() => _slots.Sum();
}
