using BenchmarkDotNet.Attributes;
using PtLab.Sync;

namespace PtLab.Bench;

/// <summary>
/// PercpuRef get+put in percpu mode against one shared <see cref="Interlocked"/> counter, at 1 and
/// 2 threads, each thread on its own simulated CPU. Times are per get+put pair per thread, so at
/// equal thread counts the ratio of the means is the throughput ratio. The private-counter case
/// (one padded counter per thread, nothing shared) is the ceiling any per-CPU scheme can reach on
/// the machine: if it does not scale, neither can PercpuRef.
/// </summary>
[MedianColumn]
public class PercpuRefBenchmarks
{
    private const int PairsPerThread = 1 << 20;

    private Rcu _rcu = null!;
    private PercpuRef _ref = null!;
    private Team _team = null!;
    private Padded<long>[] _shared = null!;
    private Action<int> _sharedWork = null!;
    private Action<int> _refWork = null!;
    private Action<int> _privateWork = null!;

    /// <summary>Threads running at once.</summary>
    [Params(1, 2)]
    public int Threads { get; set; }

    /// <summary>Builds the ref, the counter and the thread team.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _rcu = new Rcu(Threads);
        _ref = new PercpuRef(_rcu, null);
        _shared = new Padded<long>[1 + Threads];
        _team = new Team(Threads);
        _sharedWork = _ =>
        {
            ref long c = ref _shared[0].Value;
            for (int i = 0; i < PairsPerThread; i++)
            {
                Interlocked.Increment(ref c);
                Interlocked.Decrement(ref c);
            }
        };
        _privateWork = cpu =>
        {
            ref long c = ref _shared[1 + cpu].Value;
            for (int i = 0; i < PairsPerThread; i++)
            {
                Interlocked.Increment(ref c);
                Interlocked.Decrement(ref c);
            }
        };
        _refWork = cpu =>
        {
            var r = _ref;
            for (int i = 0; i < PairsPerThread; i++)
            {
                r.Get(cpu);
                r.Put(cpu);
            }
        };
    }

    /// <summary>Stops the team.</summary>
    [GlobalCleanup]
    public void Cleanup() => _team.Dispose();

    /// <summary>One shared counter: increment then decrement.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = PairsPerThread)]
    public void SharedCounterIncDec() => _team.Run(_sharedWork);

    /// <summary><c>percpu_ref_get</c> then <c>percpu_ref_put</c> in percpu mode.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerThread)]
    public void PercpuRefGetPut() => _team.Run(_refWork);

    /// <summary>A padded counter per thread: increment then decrement, nothing shared.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerThread)]
    public void PrivateCounterIncDec() => _team.Run(_privateWork);
}
