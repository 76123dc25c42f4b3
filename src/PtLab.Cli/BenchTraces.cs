using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel;
using PtLab.Kernel.Record;
using PtLab.Traces;

namespace PtLab.Cli;

/// <summary><c>ptlab bench traces</c>: the trace format's size and reader speed, and the cost of recording.</summary>
internal static class BenchTraces
{
    public static Command Command(TextWriter stdout)
    {
        var cmd = new Command(
            "traces",
            "The trace format on a fault-heavy trace: bytes per event, write and read (validated streaming) events per second; " +
            "with --record, a real fault storm (64 MiB written and MADV_DONTNEED'd again and again) run alone and under ptlab record: " +
            "its faults per second both ways and the recorded trace's bytes per event. A benchmark, not a test.");
        var events = new Option<long>("--events") { Description = "Rows of the synthetic trace (512 faults per madvise, a sample every 8,192 rows).", DefaultValueFactory = _ => 5_000_000 };
        var record = new Option<bool>("--record") { Description = "Also record a real fault storm (needs perf, root, gcc)." };
        var seconds = new Option<double>("--seconds") { Description = "Seconds of the fault storm.", DefaultValueFactory = _ => 3 };
        cmd.Options.Add(events);
        cmd.Options.Add(record);
        cmd.Options.Add(seconds);
        cmd.SetAction(p =>
        {
            long n = p.GetValue(events);
            if (n is < 1000 or > 2_000_000_000)
            {
                throw new UsageException($"--events must be between 1000 and 2e9, got {n}");
            }

            var ci = CultureInfo.InvariantCulture;
            string dir = Directory.CreateTempSubdirectory("ptlab-bench-traces-").FullName;
            try
            {
                string path = Path.Combine(dir, "synthetic.parquet");
                var clock = Stopwatch.StartNew();
                long rows = 0;
                using (var w = TraceWriter.Create(path))
                {
                    foreach (var e in SyntheticTrace.Events(n))
                    {
                        w.Append(e);
                        rows++;
                    }

                    w.Complete(SyntheticTrace.Metadata());
                }

                double write = clock.Elapsed.TotalSeconds;
                long bytes = new FileInfo(path).Length;
                clock.Restart();
                long read = 0;
                ulong sink = 0;
                using (var r = TraceReader.Open(path))
                {
                    foreach (var e in r.ReadEvents())
                    {
                        read++;
                        sink += e.Address;
                    }
                }

                double readSeconds = clock.Elapsed.TotalSeconds;
                stdout.WriteLine(string.Create(ci, $"synthetic fault-heavy trace: {rows:N0} rows, {bytes:N0} bytes, {(double)bytes / rows:F2} bytes/event"));
                stdout.WriteLine(string.Create(ci, $"  write {rows / write:N0} events/s ({write:F2} s), read (checked, streaming) {read / readSeconds:N0} events/s ({readSeconds:F2} s){(sink == 0 ? "" : "")}"));
                if (p.GetValue(record))
                {
                    Record(stdout, dir, p.GetValue(seconds));
                }
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    private static void Record(TextWriter stdout, string dir, double seconds)
    {
        var ci = CultureInfo.InvariantCulture;
        try
        {
            Recorder.CheckPrerequisites(attach: false);
        }
        catch (RecordException e)
        {
            throw new UsageException("bench traces --record: " + e.Message);
        }

        string storm = NativeBuild.BuildEmbedded(typeof(Recorder).Assembly, "Record.faultstorm.c", "ptlab-faultstorm");
        string arg = seconds.ToString(ci);
        var psi = new ProcessStartInfo(storm, [arg]) { RedirectStandardOutput = true };
        using (var alone = Process.Start(psi)!)
        {
            string line = alone.StandardOutput.ReadToEnd().Trim();
            alone.WaitForExit();
            stdout.WriteLine($"fault storm alone:          {line}");
        }

        string trace = Path.Combine(dir, "storm.parquet");
        string output = Path.Combine(dir, "storm.out");
        var clock = Stopwatch.StartNew();
        var result = Recorder.Run(new RecordOptions { Output = trace, Command = [storm, arg], CommandStdout = output }, TextWriter.Null, default);
        double total = clock.Elapsed.TotalSeconds;
        stdout.WriteLine($"fault storm under record:   {File.ReadAllText(output).Trim()}");
        long bytes = new FileInfo(trace).Length;
        using var reader = TraceReader.Open(trace);
        var summary = TraceSummary.Compute(reader);
        long faults = summary.Counts[(int)TraceEventKind.Fault];
        stdout.WriteLine(string.Create(ci,
            $"  recorded trace: {summary.Rows:N0} rows ({faults:N0} faults), {bytes:N0} bytes, {(double)bytes / summary.Rows:F2} bytes/event; lost {result.Metadata.LostEvents:N0}; record took {total:F1} s in all (perf, perf script, conversion)"));
    }
}
