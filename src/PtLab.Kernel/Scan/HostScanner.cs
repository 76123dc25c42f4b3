using System.Diagnostics;
using System.Globalization;

namespace PtLab.Kernel.Scan;

/// <summary>A process that was not scanned, and why.</summary>
/// <param name="Pid">The process.</param>
/// <param name="Comm">Its command name, when it could be read.</param>
/// <param name="Kind">Why.</param>
/// <param name="Message">The one-line message (pid, file, reason).</param>
public sealed record ScanSkip(int Pid, string? Comm, ScanFailure Kind, string Message);

/// <summary>Every process of the host, ranked by bytes of empty PTE tables.</summary>
public sealed record HostScan
{
    /// <summary>The processes scanned, most empty-table bytes first.</summary>
    public required IReadOnlyList<ProcessScan> Processes { get; init; }

    /// <summary>Kernel threads seen and skipped.</summary>
    public required int KernelThreads { get; init; }

    /// <summary>Processes below the VmPTE floor, not scanned.</summary>
    public required int BelowMinVmPte { get; init; }

    /// <summary>Processes that vanished, denied access or could not be read; never an error of the whole scan.</summary>
    public required IReadOnlyList<ScanSkip> Skipped { get; init; }

    /// <summary>Wall time of the whole pass.</summary>
    public required double WallSeconds { get; init; }
}

/// <summary><c>ptlab scan --all</c> and the exporter's pass: scans every user process, keeps going past any that fail.</summary>
public static class HostScanner
{
    /// <summary>Scans every process under /proc (or only <paramref name="pids"/>), skipping kernel threads and those below <paramref name="minVmPteKb"/>.</summary>
    public static HostScan ScanAll(long minVmPteKb, string method = "auto", IReadOnlyCollection<int>? pids = null)
    {
        var sw = Stopwatch.StartNew();
        var scans = new List<ProcessScan>();
        var skipped = new List<ScanSkip>();
        int kthreads = 0, below = 0;
        foreach (int pid in pids ?? ProcFs.Pids())
        {
            string? comm = null;
            try
            {
                string status = ProcFs.ReadText(pid, $"{ProcFs.Root}/{pid.ToString(CultureInfo.InvariantCulture)}/status", firstOpen: true);
                if (ProcStatus.TryParseProcess(status, out var st, out _))
                {
                    comm = st.Name;
                    if (st.IsKernelThread)
                    {
                        kthreads++;
                        continue;
                    }

                    if (st.Memory is { } m && m.VmPteKb < minVmPteKb)
                    {
                        below++;
                        continue;
                    }
                }

                scans.Add(ProcessScanner.Scan(pid, new ScanOptions { Method = method }));
            }
            catch (ScanException e) when (e.Kind == ScanFailure.KernelThread)
            {
                kthreads++;
            }
            catch (ScanException e)
            {
                // A process that exits between listing and scanning is normal on a live host.
                skipped.Add(new ScanSkip(pid, comm, e.Kind == ScanFailure.NoSuchProcess ? ScanFailure.Vanished : e.Kind, e.Message));
            }
        }

        scans.Sort(static (a, b) => b.EmptyPteTables != a.EmptyPteTables ? b.EmptyPteTables.CompareTo(a.EmptyPteTables) : b.VmPteKb.CompareTo(a.VmPteKb));
        return new HostScan
        {
            Processes = scans,
            KernelThreads = kthreads,
            BelowMinVmPte = below,
            Skipped = skipped,
            WallSeconds = Math.Round(sw.Elapsed.TotalSeconds, 6),
        };
    }
}
