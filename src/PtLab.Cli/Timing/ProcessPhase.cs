using System.Diagnostics;
using System.Globalization;

namespace PtLab.Cli;

/// <summary>
/// What one phase of this process (one design's run) cost the host: wall time, CPU time (user and
/// system, every thread's, the garbage collector's included, as <c>/usr/bin/time</c> adds them) and
/// the peak resident set (<c>VmHWM</c>).
/// </summary>
/// <param name="WallSeconds">Wall time of the phase.</param>
/// <param name="CpuSeconds">User plus system CPU time of the whole process during the phase.</param>
/// <param name="PeakRssBytes">The most memory the process had resident during the phase.</param>
/// <param name="PeakScope">
/// "phase" when the peak was reset at the phase's start (<c>/proc/self/clear_refs</c>), so it is this
/// phase's own; "process" when it could not be reset and is the process's peak so far.
/// </param>
internal sealed record PhaseUsage(double WallSeconds, double CpuSeconds, long PeakRssBytes, string PeakScope)
{
    /// <summary>The process the phase ran in (compare's runs each have their own, unless run with --isolation shared).</summary>
    public int ProcessId { get; init; } = Environment.ProcessId;
}

/// <summary>
/// Measures a <see cref="PhaseUsage"/>: <see cref="Start"/> resets the kernel's peak-RSS mark of this
/// process (writing 5 to <c>/proc/self/clear_refs</c> sets <c>VmHWM</c> back to the current
/// <c>VmRSS</c>, Linux 4.0 and later) and notes the CPU and wall clocks; <see cref="Stop"/> reads them
/// and <c>VmHWM</c>. Several phases in one process (compare's designs) each get their own peak, as
/// long as the previous phase's memory went back to the host first (<see cref="FairTrials.Quiesce"/>).
/// </summary>
internal sealed class ProcessPhase
{
    private readonly long _start = Stopwatch.GetTimestamp();
    private readonly TimeSpan _cpu = CpuTime();
    private readonly bool _reset;

    private ProcessPhase(bool reset) => _reset = reset;

    /// <summary>Starts a phase, resetting the peak-RSS mark where the kernel allows.</summary>
    public static ProcessPhase Start() => new(ResetPeak());

    /// <summary>The phase's cost so far.</summary>
    public PhaseUsage Stop() => new(
        Math.Round(Stopwatch.GetElapsedTime(_start).TotalSeconds, 3),
        Math.Round((CpuTime() - _cpu).TotalSeconds, 3),
        PeakRss() ?? Process.GetCurrentProcess().PeakWorkingSet64,
        _reset ? "phase" : "process");

    /// <summary>Resets <c>VmHWM</c> to the current resident set; false where that is not possible (not Linux, no /proc, too old a kernel).</summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return false;
        }
    }

    /// <summary>This process's <c>VmHWM</c> in bytes, or null without /proc.</summary>
    public static long? PeakRss() => StatusKb("VmHWM:") is { } kb ? kb * 1024 : null;

    /// <summary>This process's <c>VmRSS</c> in bytes, or null without /proc.</summary>
    public static long? Rss() => StatusKb("VmRSS:") is { } kb ? kb * 1024 : null;

    private static long? StatusKb(string field)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith(field, StringComparison.Ordinal)
                    && long.TryParse(line[field.Length..].Trim().Split(' ')[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                {
                    return kb;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return null;
    }

    private static TimeSpan CpuTime()
    {
        using var p = Process.GetCurrentProcess();
        return p.TotalProcessorTime;
    }
}
