using BenchmarkDotNet.Attributes;
using PtLab.Sync;

namespace PtLab.Bench;

/// <summary>RCU: an empty read section, and <c>synchronize_rcu</c> when no reader is inside.</summary>
[MedianColumn]
public class RcuBenchmarks
{
    private const int Sections = 1024;

    private readonly Rcu _rcu = new(Environment.ProcessorCount);

    /// <summary><c>rcu_read_lock</c> + <c>rcu_read_unlock</c> on CPU 0.</summary>
    [Benchmark(OperationsPerInvoke = Sections)]
    public void ReadSectionEnterExit()
    {
        var rcu = _rcu;
        for (int i = 0; i < Sections; i++)
        {
            rcu.ReadLock(0);
            rcu.ReadUnlock(0);
        }
    }

    /// <summary><c>synchronize_rcu</c> with every CPU's reader idle.</summary>
    [Benchmark]
    public void SynchronizeRcuIdleReaders() => _rcu.SynchronizeRcu(0);
}
