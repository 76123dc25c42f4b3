using System.CommandLine;
using System.Globalization;
using System.Net;
using Prometheus;
using PtLab.Kernel.Scan;
using PtLab.Reclaim;

namespace PtLab.Cli;

/// <summary>
/// The Prometheus metrics of a host scan: per-process gauges labelled pid and comm (at most
/// <c>maxProcesses</c> processes, those with the most empty-table bytes), and scan-health counters.
/// One registry per instance: no global state.
/// </summary>
internal sealed class ScanMetrics
{
    private static readonly string[] s_procLabels = ["pid", "comm"];

    private readonly Gauge _vmpte, _pteTables, _empty, _zero, _deposits, _upper, _exact, _reclaimable;
    private readonly Counter _passes, _errors;
    private readonly Gauge _duration, _scanned, _dropped, _inconsistent, _lastTimestamp;
    private readonly HashSet<(string Pid, string Comm)> _exported = [];
    private readonly Lock _lock = new();

    public ScanMetrics()
    {
        Registry = Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);
        _vmpte = f.CreateGauge("ptlab_vmpte_bytes", "VmPTE of the process: its PTE, PMD and PUD tables (bytes).", s_procLabels);
        _pteTables = f.CreateGauge("ptlab_pte_tables", "PTE tables in use (mapped by a pmd entry).", s_procLabels);
        _empty = f.CreateGauge("ptlab_empty_pte_tables", "PTE tables with no present, swap or marker entry.", s_procLabels);
        _zero = f.CreateGauge("ptlab_zero_page_pte_tables", "PTE tables whose populated entries all map the shared zero page.", s_procLabels);
        _deposits = f.CreateGauge("ptlab_thp_deposit_tables", "PTE tables deposited beside anonymous PMD leaves (THPs), counted in VmPTE.", s_procLabels);
        _upper = f.CreateGauge("ptlab_upper_tables", "PMD and PUD tables, by subtraction from VmPTE.", s_procLabels);
        _exact = f.CreateGauge("ptlab_scan_exact", "1 when the counts are exact (PAGEMAP_SCAN), 0 for the pagemap estimate (lower bounds).", s_procLabels);
        _reclaimable = f.CreateGauge("ptlab_reclaimable_bytes", "Page-table bytes the design would free now (rules: ptlab scan --help).", ["pid", "comm", "design"]);
        _passes = f.CreateCounter("ptlab_scan_passes_total", "Host scan passes completed.");
        _errors = f.CreateCounter("ptlab_scan_process_errors_total", "Processes that could not be scanned, by reason (vanished, permission-denied, ...).", ["reason"]);
        _duration = f.CreateGauge("ptlab_scan_duration_seconds", "Wall time of the last host scan pass.");
        _scanned = f.CreateGauge("ptlab_scan_processes", "Processes scanned in the last pass.");
        _dropped = f.CreateGauge("ptlab_scan_processes_dropped", "Processes scanned but not exported in the last pass (the cardinality cap).");
        _inconsistent = f.CreateGauge("ptlab_scan_inconsistent_processes", "Processes whose figures did not add up in the last pass (they changed while scanned).");
        _lastTimestamp = f.CreateGauge("ptlab_scan_last_timestamp_seconds", "Unix time the last pass ended.");
    }

    /// <summary>The registry the server exports.</summary>
    public CollectorRegistry Registry { get; }

    /// <summary>Replaces the per-process series with <paramref name="scan"/>'s top <paramref name="maxProcesses"/> and counts the pass.</summary>
    public void Update(HostScan scan, int maxProcesses)
    {
        lock (_lock)
        {
            var now = new HashSet<(string, string)>();
            foreach (var p in scan.Processes.Take(maxProcesses))
            {
                string pid = p.Pid.ToString(CultureInfo.InvariantCulture);
                var key = (pid, p.Comm);
                now.Add(key);
                _vmpte.WithLabels(pid, p.Comm).Set(p.VmPteKb * 1024.0);
                _pteTables.WithLabels(pid, p.Comm).Set(p.PteTables);
                _empty.WithLabels(pid, p.Comm).Set(p.EmptyPteTables);
                _zero.WithLabels(pid, p.Comm).Set(p.ZeroPageTables ?? double.NaN);
                _deposits.WithLabels(pid, p.Comm).Set(p.ThpDeposits ?? double.NaN);
                _upper.WithLabels(pid, p.Comm).Set(p.UpperTables);
                _exact.WithLabels(pid, p.Comm).Set(p.Exact ? 1 : 0);
                foreach (var d in p.FreeNow)
                {
                    _reclaimable.WithLabels(pid, p.Comm, d.Design).Set(d.Bytes);
                }
            }

            foreach (var (pid, comm) in _exported.Except(now))
            {
                foreach (var g in new[] { _vmpte, _pteTables, _empty, _zero, _deposits, _upper, _exact })
                {
                    g.RemoveLabelled(pid, comm);
                }

                foreach (var r in FreeNowRules.All)
                {
                    _reclaimable.RemoveLabelled(pid, comm, r.Design);
                }
            }

            _exported.Clear();
            _exported.UnionWith(now);
            foreach (var s in scan.Skipped)
            {
                _errors.WithLabels(ScanFailureReport.KindName(s.Kind)).Inc();
            }

            _passes.Inc();
            _duration.Set(scan.WallSeconds);
            _scanned.Set(scan.Processes.Count);
            _dropped.Set(Math.Max(0, scan.Processes.Count - maxProcesses));
            _inconsistent.Set(scan.Processes.Count(p => p.Inconsistencies.Count > 0));
            _lastTimestamp.Set(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0);
        }
    }

    /// <summary>The Prometheus text exposition of the registry now.</summary>
    public string Text()
    {
        using var ms = new MemoryStream();
        Registry.CollectAndExportAsTextAsync(ms).GetAwaiter().GetResult();
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }
}

/// <summary>
/// <c>ptlab exporter</c>: scans the host every interval and serves the result on <c>/metrics</c>
/// with prometheus-net's standalone <see cref="MetricServer"/>.
/// </summary>
internal sealed class ExporterHost : IDisposable
{
    private readonly ScanMetrics _metrics = new();
    private readonly IMetricServer _server;
    private readonly long _minVmPteKb;
    private readonly int _maxProcesses;
    private readonly string _method;
    private readonly IReadOnlyCollection<int>? _pids;

    public ExporterHost(string host, int port, long minVmPteKb, int maxProcesses, string method, IReadOnlyCollection<int>? pids)
    {
        _minVmPteKb = minVmPteKb;
        _maxProcesses = maxProcesses;
        _method = method;
        _pids = pids;
        ScanOnce(); // the first scrape already has figures
        _server = new MetricServer(host, port, "metrics/", _metrics.Registry);
        _server.Start();
    }

    /// <summary>One host scan pass into the metrics.</summary>
    public HostScan ScanOnce()
    {
        var scan = HostScanner.ScanAll(_minVmPteKb, _method, _pids);
        _metrics.Update(scan, _maxProcesses);
        return scan;
    }

    public void Dispose() => _server.Dispose();

    /// <summary>Parses "HOST:PORT" ("127.0.0.1:9464", "[::1]:9464", "localhost:9464", "*:9464" for every address).</summary>
    public static (string Host, int Port) ParseListen(string? text)
    {
        string t = (text ?? "").Trim();
        int colon = t.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(t.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
        {
            throw new UsageException($"--listen: '{text}' is not HOST:PORT with a port from 1 to 65535 (for example 127.0.0.1:9464)");
        }

        string host = t[..colon];
        if (host is "*" or "+" or "0.0.0.0")
        {
            return ("+", port);
        }

        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }

        if (host != "localhost" && !IPAddress.TryParse(host, out _))
        {
            throw new UsageException($"--listen: '{host}' is not an IP address, localhost or * (in '{text}')");
        }

        return (host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host, port);
    }

    public static Command Command(TextWriter stdout, TextWriter stderr)
    {
        var listen = new Option<string>("--listen") { Description = "Address and port to serve /metrics on.", DefaultValueFactory = _ => "127.0.0.1:9464" };
        var interval = new Option<string>("--interval") { Description = "Time between host scans (e.g. 15s, 1m, 500ms).", DefaultValueFactory = _ => "15s" };
        var max = new Option<int>("--max-processes") { Description = "Cardinality cap: export at most this many processes, those with the most empty-table bytes.", DefaultValueFactory = _ => 100 };
        var minVmPte = new Option<string>("--min-vmpte") { Description = "Skip processes whose VmPTE is below this size (K/M/G suffixes).", DefaultValueFactory = _ => "0" };
        var pids = new Option<string?>("--pids") { Description = "Comma-separated pids to watch instead of every process." };
        var method = Scan.MethodOption();
        var cmd = new Command(
            "exporter",
            "Serve Prometheus metrics of every process's page tables (ptlab_vmpte_bytes, ptlab_pte_tables, ptlab_empty_pte_tables, " +
            "ptlab_reclaimable_bytes{design}, ...) and scan-health counters, rescanning the host every --interval.")
        {
            listen, interval, max, minVmPte, pids, method,
        };
        cmd.SetAction(p =>
        {
            var (host, port) = ParseListen(p.GetValue(listen));
            var every = Scan.ParseInterval(p.GetValue(interval), "--interval");
            int cap = p.GetValue(max);
            if (cap < 1)
            {
                throw new UsageException($"--max-processes must be at least 1, got {cap}");
            }

            long minKb = (long)(Cli.Size(p.GetValue(minVmPte), "--min-vmpte") / 1024);
            var only = p.GetValue(pids) is { } list ? Scan.ParsePids(list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), "--pids") : null;
            using var stop = new StopSignals();
            ExporterHost exporter;
            try
            {
                exporter = new ExporterHost(host, port, minKb, cap, p.GetValue(method)!, only);
            }
            catch (HttpListenerException e)
            {
                stderr.WriteLine($"ptlab: --listen {p.GetValue(listen)}: cannot serve there: {e.Message}");
                return Cli.ExitFailure;
            }

            using (exporter)
            {
                stdout.WriteLine($"ptlab exporter: serving http://{p.GetValue(listen)}/metrics, scanning every {every.TotalSeconds:0.###} s (Ctrl-C stops)");
                while (!stop.Token.WaitHandle.WaitOne(every))
                {
                    exporter.ScanOnce();
                }
            }

            return Cli.ExitOk;
        });
        return cmd;
    }
}
