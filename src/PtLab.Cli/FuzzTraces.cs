using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Traces;

namespace PtLab.Cli;

/// <summary><c>ptlab fuzz traces</c>: the long run of the trace reader and importer fuzzer.</summary>
internal static class FuzzTraces
{
    /// <summary>The <c>fuzz</c> parent command, holding <c>traces</c>.</summary>
    public static Command Command(TextWriter stdout)
    {
        var cmd = new Command(
            "traces",
            "Feed the trace reader and the perf script importer mutated traces (some with a matching checksum), files of random rows, " +
            "and mutated perf script text, and count what each did: accepted, rejected with a format error, or crashed (a bug). Exit 1 on a crash.");
        var inputs = new Option<long>("--inputs") { Description = "Inputs to run.", DefaultValueFactory = _ => 100_000 };
        var seed = new Option<ulong>("--seed") { Description = "First seed (input i uses seed + i).", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "Worker threads.", DefaultValueFactory = _ => Environment.ProcessorCount };
        var hang = new Option<double>("--hang-seconds") { Description = "An input still running after this many seconds is a hang: counted with the crashes, its seed printed, and the run goes on without its thread.", DefaultValueFactory = _ => 60 };
        cmd.Options.Add(inputs);
        cmd.Options.Add(seed);
        cmd.Options.Add(threads);
        cmd.Options.Add(hang);
        cmd.SetAction(p =>
        {
            long n = p.GetValue(inputs);
            int workers = p.GetValue(threads);
            if (n < 1)
            {
                throw new UsageException($"--inputs must be at least 1, got {n}");
            }

            if (workers is < 1 or > 256)
            {
                throw new UsageException($"--threads must be between 1 and 256, got {workers}");
            }

            double hangSeconds = p.GetValue(hang);
            if (hangSeconds is not (>= 1 and <= 86_400))
            {
                throw new UsageException($"--hang-seconds must be between 1 and 86400, got {hangSeconds}");
            }

            ulong first = p.GetValue(seed);
            var fuzzer = new TraceFuzzer(TraceFuzzer.SamplePerfText());
            long[] accepted = new long[3], rejected = new long[3];
            long crashes = 0, next = -1;
            var crashSeeds = new List<(ulong Seed, Exception Error)>();
            var clock = Stopwatch.StartNew();
            // What each worker runs and since when (-1: between inputs), for the hang watch.
            // A hung input keeps its thread; a fresh one takes its place, up to MaxHangs of them.
            const int MaxHangs = 64;
            long[] current = new long[workers + MaxHangs], since = new long[workers + MaxHangs];
            Array.Fill(current, -1);
            Thread Worker(int w) => new(() =>
            {
                long i;
                while ((i = Interlocked.Increment(ref next)) < n)
                {
                    ulong s = first + (ulong)i;
                    Volatile.Write(ref since[w], Stopwatch.GetTimestamp());
                    Volatile.Write(ref current[w], i);
                    var o = fuzzer.Run(s);
                    Volatile.Write(ref current[w], -1);
                    if (o.Crash is { } crash)
                    {
                        Interlocked.Increment(ref crashes);
                        lock (crashSeeds)
                        {
                            crashSeeds.Add((s, crash));
                        }
                    }
                    else
                    {
                        Interlocked.Increment(ref (o.Accepted ? accepted : rejected)[(int)o.Kind]);
                    }
                }
            })
            { IsBackground = true };
            var pool = Enumerable.Range(0, workers).Select(Worker).ToList();
            pool.ForEach(t => t.Start());
            var hung = new List<ulong>();
            var alive = new List<int>(Enumerable.Range(0, workers));
            while (alive.Count > 0)
            {
                alive.RemoveAll(w => pool[w].Join(100 / alive.Count));
                foreach (int w in alive.ToList())
                {
                    long i = Volatile.Read(ref current[w]);
                    if (i >= 0 && Stopwatch.GetElapsedTime(Volatile.Read(ref since[w])).TotalSeconds > hangSeconds && Volatile.Read(ref current[w]) == i)
                    {
                        // The thread cannot be stopped: it is left behind (a background thread) and a fresh one goes on.
                        hung.Add(first + (ulong)i);
                        alive.Remove(w);
                        Interlocked.Increment(ref crashes);
                        if (pool.Count < workers + MaxHangs)
                        {
                            alive.Add(pool.Count);
                            pool.Add(Worker(pool.Count));
                            pool[^1].Start();
                        }
                    }
                }
            }

            var ci = CultureInfo.InvariantCulture;
            stdout.WriteLine(string.Create(ci, $"fuzz traces: {n:N0} inputs from seed {first} in {clock.Elapsed.TotalSeconds:F1} s on {workers} threads, {crashes} crashes{(hung.Count > 0 ? $" ({hung.Count} of them hangs)" : "")}"));
            foreach (var kind in Enum.GetValues<FuzzInputKind>())
            {
                stdout.WriteLine(string.Create(ci, $"  {kind,-11} accepted {accepted[(int)kind],10:N0}   rejected (format error) {rejected[(int)kind],10:N0}"));
            }

            foreach (ulong s in hung.Order())
            {
                stdout.WriteLine(string.Create(ci, $"  hang at seed {s}: still running after {hangSeconds:F0} s"));
            }

            foreach (var (s, e) in crashSeeds.OrderBy(c => c.Seed).Take(10))
            {
                stdout.WriteLine($"  crash at seed {s}: {e.GetType().Name}: {e.Message}");
            }

            return crashes == 0 ? Cli.ExitOk : Cli.ExitFailure;
        });
        return cmd;
    }
}
