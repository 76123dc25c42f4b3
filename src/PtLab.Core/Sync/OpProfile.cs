namespace PtLab.Sync;

/// <summary>The operations <see cref="OpProfile"/> counts.</summary>
public enum ProfileOp
{
    /// <summary>A page fault handled (<c>handle_mm_fault</c>).</summary>
    Fault,
    /// <summary>An atomic read-modify-write on a word other CPUs also write: a lock word, <c>mmap_lock</c>'s count, a page's or table's refcount, a global counter.</summary>
    SharedAtomic,
    /// <summary>An update of this CPU's own slot (a <c>this_cpu_add</c>): no shared line written.</summary>
    PercpuOp,
    /// <summary>A lock taken: spin lock, trylock that succeeded, or <c>mmap_lock</c> for read or write.</summary>
    LockAcquire,
    /// <summary>A page table allocated, which the kernel zeroes (4 KiB).</summary>
    TableZeroed,
}

/// <summary>
/// Per-operation counts of one machine (<c>--profile</c>): one row of counters per CPU, on lines of
/// their own, so counting costs one plain add and does not itself write a shared line. Sites that
/// do not know their CPU count into a shared row with an atomic add (only while profiling).
/// </summary>
public sealed class OpProfile
{
    private const int Stride = 16; // 16 longs = 128 bytes per CPU row: no two rows share a line
    private static readonly int s_ops = Enum.GetValues<ProfileOp>().Length;

    private readonly long[] _counts;
    private readonly int _cpus;

    /// <summary>Creates counters for <paramref name="cpus"/> CPUs.</summary>
    public OpProfile(int cpus)
    {
        _cpus = cpus;
        _counts = new long[(cpus + 2) * Stride];
    }

    /// <summary>Counts <paramref name="n"/> operations on <paramref name="cpu"/>, or on no known CPU when negative.</summary>
    public void Count(int cpu, ProfileOp op, long n = 1)
    {
        if ((uint)cpu < (uint)_cpus)
        {
            _counts[((cpu + 1) * Stride) + (int)op] += n;
        }
        else
        {
            Interlocked.Add(ref _counts[((_cpus + 1) * Stride) + (int)op], n);
        }
    }

    /// <summary>A lock taken: one acquisition, and the atomic on its word.</summary>
    public void Locked(int cpu)
    {
        Count(cpu, ProfileOp.LockAcquire);
        Count(cpu, ProfileOp.SharedAtomic);
    }

    /// <summary>The total of one operation over all CPUs.</summary>
    public long Total(ProfileOp op)
    {
        long sum = 0;
        for (int row = 1; row <= _cpus + 1; row++)
        {
            sum += Volatile.Read(ref _counts[(row * Stride) + (int)op]);
        }

        return sum;
    }

    /// <summary>Every operation's total.</summary>
    public IReadOnlyDictionary<ProfileOp, long> Totals()
    {
        var d = new Dictionary<ProfileOp, long>();
        for (int op = 0; op < s_ops; op++)
        {
            d[(ProfileOp)op] = Total((ProfileOp)op);
        }

        return d;
    }
}
