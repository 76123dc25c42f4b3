using PtLab.Mm;

namespace PtLab.Workloads;

/// <summary>
/// Runs one program per simulated CPU against one address space, each CPU on its own thread, and
/// waits for all of them. The first exception from any CPU is rethrown with the CPU's number.
/// </summary>
public static class MultiCpuRunner
{
    /// <summary>Runs <paramref name="program"/> on each of <paramref name="cpus"/> on its own thread.</summary>
    public static void Run(IReadOnlyList<Cpu> cpus, Action<Cpu> program) =>
        Run(cpus, program, cpus.Count > 0 ? cpus[0].Machine.Sync.Scheduler as PtLab.Sync.PanicOnFailure : null);

    /// <summary>
    /// Runs <paramref name="program"/> once per item of <paramref name="cpus"/> (a CPU or a per-CPU
    /// view), each on its own thread. When one fails, <paramref name="panic"/> (if given) stops the
    /// others at their next wait, so none spins forever on a lock the failed one held.
    /// </summary>
    public static void Run<T>(IReadOnlyList<T> cpus, Action<T> program, PtLab.Sync.PanicOnFailure? panic = null)
    {
        ArgumentNullException.ThrowIfNull(cpus);
        ArgumentNullException.ThrowIfNull(program);
        var errors = new Exception?[cpus.Count];
        var threads = new Thread[cpus.Count];
        using var start = new Barrier(cpus.Count);
        for (int i = 0; i < cpus.Count; i++)
        {
            int id = i;
            threads[i] = new Thread(() =>
            {
                try
                {
                    start.SignalAndWait();
                    program(cpus[id]);
                }
                catch (Exception e)
                {
                    errors[id] = e;
                    panic?.Panic($"CPU {id}: {e.Message}");
                }
            })
            {
                IsBackground = true,
                Name = $"cpu{id}",
            };
            threads[i].Start();
        }

        foreach (var t in threads)
        {
            t.Join();
        }

        // Report the original failure, not the panics it caused on the other CPUs.
        var first = errors.Select((e, i) => (e, i)).Where(x => x.e is not null)
            .OrderBy(x => x.e is PtLab.Sync.MachinePanicException ? 1 : 0).FirstOrDefault();
        if (first.e is { } failure)
        {
            throw new AggregateException($"CPU {first.i} failed: {failure.Message}", failure);
        }
    }
}
