using BenchmarkDotNet.Attributes;
using PtLab.Sync;

namespace PtLab.Bench;

/// <summary>
/// RCU: an empty read section, the same while another CPU queues <c>call_rcu</c> callbacks, and
/// <c>synchronize_rcu</c> when no reader is inside. The second against the first is what the
/// writers of RCU's counters cost its readers: every read section loads the global epoch, and
/// every <c>call_rcu</c> writes the pending count, so the two must not share a cache line.
/// </summary>
[MedianColumn]
public class RcuBenchmarks
{
    private const int Sections = 1024;

    // Long enough that the other CPU is queueing for nearly all of it, not still waking up.
    private const int ContendedSections = 1 << 16;

    private readonly Rcu _rcu = new(Environment.ProcessorCount);
    private Team _team = null!;
    private Action<int> _readWhileQueueing = null!;
    private volatile bool _readerDone;

    /// <summary>Starts the second CPU's thread and the work the two CPUs share.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _team = new Team(2);
        Action noop = static () => { };
        _readWhileQueueing = cpu =>
        {
            var rcu = _rcu;
            if (cpu == 0)
            {
                for (int i = 0; i < ContendedSections; i++)
                {
                    rcu.ReadLock(0);
                    rcu.ReadUnlock(0);
                }

                _readerDone = true;
                return;
            }

            while (!_readerDone)
            {
                rcu.CallRcu(noop);
            }
        };
    }

    /// <summary>Stops the second CPU's thread.</summary>
    [GlobalCleanup]
    public void Cleanup() => _team.Dispose();

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

    /// <summary>The same read sections on CPU 0 while CPU 1 calls <c>call_rcu</c> in a loop.</summary>
    [Benchmark(OperationsPerInvoke = ContendedSections)]
    public void ReadSectionWhileAnotherCpuCallsRcu()
    {
        _readerDone = false;
        _team.Run(_readWhileQueueing);
    }

    /// <summary><c>synchronize_rcu</c> with every CPU's reader idle.</summary>
    [Benchmark]
    public void SynchronizeRcuIdleReaders() => _rcu.SynchronizeRcu(0);
}
