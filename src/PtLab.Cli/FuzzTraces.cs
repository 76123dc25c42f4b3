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
        cmd.Options.Add(inputs);
        cmd.Options.Add(seed);
        cmd.Options.Add(threads);
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

            ulong first = p.GetValue(seed);
            var fuzzer = new TraceFuzzer(TraceFuzzer.SamplePerfText());
            long[] accepted = new long[3], rejected = new long[3];
            long crashes = 0, next = -1;
            var crashSeeds = new List<(ulong Seed, Exception Error)>();
            var clock = Stopwatch.StartNew();
            var pool = Enumerable.Range(0, workers).Select(_ => new Thread(() =>
            {
                long i;
                while ((i = Interlocked.Increment(ref next)) < n)
                {
                    ulong s = first + (ulong)i;
                    var o = fuzzer.Run(s);
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
            })).ToList();
            pool.ForEach(t => t.Start());
            pool.ForEach(t => t.Join());
            var ci = CultureInfo.InvariantCulture;
            stdout.WriteLine(string.Create(ci, $"fuzz traces: {n:N0} inputs from seed {first} in {clock.Elapsed.TotalSeconds:F1} s on {workers} threads, {crashes} crashes"));
            foreach (var kind in Enum.GetValues<FuzzInputKind>())
            {
                stdout.WriteLine(string.Create(ci, $"  {kind,-11} accepted {accepted[(int)kind],10:N0}   rejected (format error) {rejected[(int)kind],10:N0}"));
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
