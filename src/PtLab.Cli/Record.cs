using System.CommandLine;
using System.Globalization;
using PtLab.Kernel.Record;
using PtLab.Traces;

namespace PtLab.Cli;

/// <summary><c>ptlab record</c>: a real program's address-space history into a trace file.</summary>
internal static class Record
{
    public const string DefaultOutput = "ptlab-trace.parquet";

    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var cmd = new Command(
            "record",
            "Run a command (ptlab record [options] -- CMD ARGS...) or attach to a process (-p PID) under perf and ptrace, and write " +
            "its page faults, address-space syscalls, task events, /proc/PID/status samples, initial layouts and the host's facts " +
            "into one trace file (docs/trace-format.md). Needs perf, gcc, and root (or perf_event_paranoid -1). " +
            "The command's exit status is ptlab's; Ctrl-C stops it and still writes a trace, marked truncated. " +
            "A command that leaves processes running (a daemon, a build server) is followed until they exit, which record says; " +
            "Ctrl-C then stops them and the command's trace stays whole.");
        var output = new Option<string>("--output", "-o") { Description = "The trace file.", DefaultValueFactory = _ => DefaultOutput };
        var interval = new Option<string>("--interval") { Description = "Interval of the /proc/PID/status samples (e.g. 50ms, 1s).", DefaultValueFactory = _ => "50ms" };
        var keep = new Option<bool>("--keep-perf-data") { Description = "Keep perf's data, perf's log and the samples next to the trace (OUTPUT.perf.data, .perf.log, .samples)." };
        var pid = new Option<int?>("--pid", "-p") { Description = "Attach to this running process (and its threads and children) instead of running a command." };
        var duration = new Option<string?>("--duration") { Description = "With -p: detach after this long (e.g. 10s); default: until the process exits or Ctrl-C." };
        var buffer = new Option<string>("--perf-buffer") { Description = "perf's per-CPU ring buffer (perf record -m).", DefaultValueFactory = _ => "8M" };
        var command = new Argument<string[]>("command") { Description = "The command and its arguments, after --.", Arity = ArgumentArity.ZeroOrMore };
        foreach (var o in new Option[] { output, interval, keep, pid, duration, buffer })
        {
            cmd.Options.Add(o);
        }

        cmd.Arguments.Add(command);
        cmd.SetAction(p =>
        {
            string[] argv = p.GetValue(command) ?? [];
            int? attach = p.GetValue(pid);
            if (attach is null && argv.Length == 0)
            {
                throw new UsageException("record: give a command after -- (ptlab record -- CMD ARGS...) or a process with -p PID");
            }

            if (attach is not null && argv.Length > 0)
            {
                throw new UsageException("record: give either a command or -p PID, not both");
            }

            if (attach is <= 0)
            {
                throw new UsageException($"--pid: {attach} is not a process id");
            }

            if (attach is { } target && OperatingSystem.IsLinux() && !Directory.Exists($"/proc/{target}"))
            {
                throw new UsageException($"--pid: no process {target} on this host");
            }

            // Checked before the program runs: a recording is not thrown away for want of a place to write it.
            if (ReportOptions.WhyNotWritable(p.GetValue(output)) is { } why)
            {
                throw new UsageException("record: " + why);
            }

            string? durationText = p.GetValue(duration);
            if (durationText is not null && attach is null)
            {
                throw new UsageException("--duration applies to -p PID only");
            }

            var options = new RecordOptions
            {
                Output = p.GetValue(output)!,
                Command = argv,
                AttachPid = attach,
                Duration = durationText is null ? null : Durations.Parse(durationText, "--duration"),
                Interval = Durations.Parse(p.GetValue(interval)!, "--interval"),
                KeepPerfData = p.GetValue(keep),
                PerfBuffer = p.GetValue(buffer)!,
            };
            if (options.Interval < TimeSpan.FromMilliseconds(1))
            {
                throw new UsageException($"--interval must be at least 1ms, got '{p.GetValue(interval)}'");
            }

            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                e.Cancel = true;
                cancel.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                var result = Recorder.Run(options, stderr, cancel.Token);
                long bytes = new FileInfo(result.TracePath).Length;
                stderr.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"ptlab: recorded {result.Rows:N0} rows ({bytes:N0} bytes, {(result.Rows == 0 ? 0 : (double)bytes / result.Rows):F1} B/row) into {result.TracePath}" +
                    $"{(result.Metadata.Truncated ? ", truncated" : "")}{(result.Metadata.Incomplete ? $", incomplete ({result.Metadata.LostEvents} events lost)" : "")}; exit status {result.ExitCode}"));
                return result.ExitCode;
            }
            catch (RecordException e)
            {
                throw new UsageException("record: " + e.Message);
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        });
        return cmd;
    }
}

/// <summary>Durations such as <c>50ms</c>, <c>2s</c>, <c>1.5m</c> (a bare number is milliseconds).</summary>
internal static class Durations
{
    public static TimeSpan Parse(string text, string option)
    {
        string t = text.Trim();
        (string unit, double scale) = t switch
        {
            _ when t.EndsWith("ms", StringComparison.Ordinal) => ("ms", 1.0),
            _ when t.EndsWith("us", StringComparison.Ordinal) => ("us", 0.001),
            _ when t.EndsWith('s') => ("s", 1000.0),
            _ when t.EndsWith('m') => ("m", 60_000.0),
            _ when t.EndsWith('h') => ("h", 3_600_000.0),
            _ => ("", 1.0),
        };
        string number = t[..^unit.Length];
        if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double v) || v < 0 || v * scale > TimeSpan.FromDays(365).TotalMilliseconds)
        {
            throw new UsageException($"{option}: '{text}' is not a duration (for example 50ms, 2s, 1.5m)");
        }

        return TimeSpan.FromMilliseconds(v * scale);
    }
}
