using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Cli;

/// <summary><c>ptlab bench replay</c>: how fast a trace replays on one design, and what a trace costs on disk.</summary>
internal static class BenchReplay
{
    public static Command Command(TextWriter stdout)
    {
        var cmd = new Command(
            "replay",
            "Replay throughput in events per second on one design with page data off (the decoding of the trace included, and the reader alone " +
            "for comparison), and the trace's bytes per event; on a synthetic fault-heavy trace (the cover letter's loop: 512 faults per " +
            "madvise) or on --trace FILE. A benchmark, not a test.");
        var events = new Option<long>("--events") { Description = "Rows of the synthetic trace.", DefaultValueFactory = _ => 10_000_000 };
        var trace = new Option<string?>("--trace") { Description = "Replay this trace instead of a synthetic one." };
        var design = new Option<string>("--design") { Description = "The design to replay under.", DefaultValueFactory = _ => Reclaim.Designs.Baseline };
        var trials = new Option<int>("--trials") { Description = "Measured replays (the best is reported, with the median), after one warm-up.", DefaultValueFactory = _ => 3 };
        design.AcceptOnlyFromAmong([.. Reclaim.Designs.Names]);
        cmd.Options.Add(events);
        cmd.Options.Add(trace);
        cmd.Options.Add(design);
        cmd.Options.Add(trials);
        cmd.SetAction(p =>
        {
            var ci = CultureInfo.InvariantCulture;
            long n = p.GetValue(events);
            int runs = p.GetValue(trials);
            if (n is < 1000 or > 2_000_000_000)
            {
                throw new UsageException($"--events must be between 1000 and 2e9, got {n}");
            }

            if (runs is < 1 or > 100)
            {
                throw new UsageException($"--trials must be between 1 and 100, got {runs}");
            }

            string? dir = null;
            string path = p.GetValue(trace) ?? "";
            try
            {
                if (path.Length == 0)
                {
                    dir = Directory.CreateTempSubdirectory("ptlab-bench-replay-").FullName;
                    path = Path.Combine(dir, "synthetic.parquet");
                    SyntheticTrace.Write(path, n);
                }
                else if (!File.Exists(path))
                {
                    throw new UsageException($"--trace: '{path}' does not exist");
                }

                string name = p.GetValue(design)!;
                var factory = Cli.DesignFactory(name);
                long bytes = new FileInfo(path).Length;
                long rows;
                using (var r = Open(path))
                {
                    rows = r.Rows;
                }

                stdout.WriteLine(string.Create(ci, $"trace: {rows:N0} rows, {bytes:N0} bytes, {(double)bytes / rows:F2} bytes/event ({(dir is null ? path : "synthetic cover-letter loop, 512 faults per madvise")})"));
                var read = new List<double>();
                var replay = new List<double>();
                var batches = new List<double>();
                for (int i = 0; i <= runs; i++)
                {
                    var clock = Stopwatch.StartNew();
                    long count = 0;
                    using (var r = Open(path))
                    {
                        foreach (var e in r.ReadEvents())
                        {
                            count += e.Pid;
                        }
                    }

                    double readSeconds = clock.Elapsed.TotalSeconds;
                    clock.Restart();
                    using (var r = Open(path))
                    {
                        foreach (var b in r.ReadBatches())
                        {
                            count += b.Count;
                        }
                    }

                    double batchSeconds = clock.Elapsed.TotalSeconds;
                    clock.Restart();
                    ReplayResult result;
                    using (var r = Open(path))
                    {
                        result = TraceReplayer.Run(r, new ReplayOptions { Design = name, DesignFactory = factory, RamBytes = 64L << 30, Cpus = 1 });
                    }

                    double replaySeconds = clock.Elapsed.TotalSeconds;
                    if (i > 0)
                    {
                        read.Add(rows / readSeconds);
                        batches.Add(rows / batchSeconds);
                        replay.Add(rows / replaySeconds);
                    }
                    else
                    {
                        stdout.WriteLine(string.Create(ci, $"warm-up: replayed {result.Events:N0} events, {result.Processes.Sum(x => x.Faults):N0} faults, exit VmPTE {string.Join(", ", result.Processes.Select(x => x.Exit?.VmPteKb ?? 0))} kB{(count == 0 ? " (no rows)" : "")}"));
                    }
                }

                stdout.WriteLine(string.Create(ci, $"read, a row at a time (checked, streaming): best {read.Max():N0} events/s, median {Median(read):N0}"));
                stdout.WriteLine(string.Create(ci, $"read, batches of columns (checked, streaming): best {batches.Max():N0} events/s, median {Median(batches):N0}"));
                stdout.WriteLine(string.Create(ci, $"replay on {name} (read included, page data off, 1 CPU): best {replay.Max():N0} events/s, median {Median(replay):N0}"));
            }
            finally
            {
                if (dir is not null)
                {
                    Directory.Delete(dir, recursive: true);
                }
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    private static TraceReader Open(string path)
    {
        try
        {
            return TraceReader.Open(path);
        }
        catch (TraceFormatException e)
        {
            throw new UsageException(e.Message);
        }
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }
}
