using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using PtLab.Cli;
using PtLab.Kernel;

namespace PtLab.Tests;

/// <summary>A fact that needs PAGEMAP_SCAN (Linux x86-64 6.7+) and gcc, for a child with a known layout.</summary>
public sealed class ScanFactAttribute : FactAttribute
{
    public ScanFactAttribute()
    {
        if (!KernelTarget.IsSupported || KernelInfo.Probe().ReleaseVersion is not { } v || v < new Version(6, 7))
        {
            Skip = "needs Linux x86-64 6.7+ (PAGEMAP_SCAN): this test scans a child process";
        }
        else if (!NativeBuild.IsAvailable(out string reason))
        {
            Skip = reason;
        }
    }
}

/// <summary><c>ptlab scan</c> and <c>ptlab exporter</c>: refusals, output shapes, the exporter against the JSON, and Ctrl-C while frozen.</summary>
public sealed class ScanCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CommandTests.Run(args);

    /// <summary>A child holding the "halves" layout (32 empty tables); disposing it ends it.</summary>
    private sealed class Child : IDisposable
    {
        public Child(string layout)
        {
            string exe = NativeBuild.BuildEmbedded(typeof(ScanCommandTests).Assembly, "layouts.c", "ptlab-layouts");
            P = Process.Start(new ProcessStartInfo(exe, layout) { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false })!;
            Assert.StartsWith("ready ", P.StandardOutput.ReadLine());
        }

        public Process P { get; }

        public string Pid => P.Id.ToString(CultureInfo.InvariantCulture);

        public void Dispose()
        {
            P.Kill();
            P.WaitForExit();
            P.Dispose();
        }
    }

    [Theory]
    [InlineData("scan")]
    [InlineData("scan", "abc")]
    [InlineData("scan", "0")]
    [InlineData("scan", "-5")]
    [InlineData("scan", "--all", "1")]
    [InlineData("scan", "--all", "--freeze")]
    [InlineData("scan", "1", "--top", "3")]
    [InlineData("scan", "--all", "--top", "0")]
    [InlineData("scan", "--all", "--min-vmpte", "lots")]
    [InlineData("scan", "1", "--plot", "x.png")]
    [InlineData("scan", "1", "--watch", "1s", "--plot", "x.gif")]
    [InlineData("scan", "1", "2", "--watch", "1s")]
    [InlineData("scan", "1", "--watch", "banana")]
    [InlineData("scan", "1", "--watch", "1s", "--samples", "0")]
    [InlineData("scan", "1", "--format", "xml")]
    [InlineData("scan", "1", "--method", "guess")]
    [InlineData("exporter", "--listen", "nope")]
    [InlineData("exporter", "--listen", "127.0.0.1:99999")]
    [InlineData("exporter", "--listen", "example:9464")]
    [InlineData("exporter", "--interval", "0s")]
    [InlineData("exporter", "--max-processes", "0")]
    [InlineData("exporter", "--pids", "1,x")]
    public void BadScanArgumentsGetOneLineAndExitTwo(params string[] args)
    {
        var (code, output, err) = Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
    }

    [Fact]
    public void APidThatDoesNotExistIsAUsageErrorNamingThePidAndFile()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        int pid = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), CultureInfo.InvariantCulture) - 1;
        while (Directory.Exists($"/proc/{pid}"))
        {
            pid--;
        }

        var (code, output, err) = Run("scan", pid.ToString(CultureInfo.InvariantCulture), "--format", "json");
        Assert.Equal(2, code);
        Assert.Equal($"ptlab: pid {pid}: /proc/{pid}/status: no such process (ENOENT)", err.Trim());
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(0, doc.RootElement.GetProperty("processes").GetArrayLength());
        Assert.Equal("no-such-process", doc.RootElement.GetProperty("failures")[0].GetProperty("kind").GetString());
    }

    [ScanFact]
    public void JsonKeysAreCamelCaseAndNumbersAreNumbers()
    {
        using var child = new Child("halves");
        var (code, output, err) = Run("scan", child.Pid, "--format", "json", "--vmas");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var p = doc.RootElement.GetProperty("processes")[0];
        foreach (var k in new[] { "pid", "vmPteKb", "pteTables", "emptyPteTables", "emptyPteTableBytes", "zeroPageTables", "thpDeposits", "upperTables", "scanSeconds" })
        {
            Assert.Equal(JsonValueKind.Number, p.GetProperty(k).ValueKind);
        }

        Assert.True(p.GetProperty("emptyPteTables").GetInt64() >= 32);
        Assert.Equal(JsonValueKind.Number, p.GetProperty("vmas")[0].GetProperty("start").ValueKind);
        Assert.Equal(JsonValueKind.Array, p.GetProperty("vmas")[0].GetProperty("vmFlags").ValueKind);
        Assert.Equal("pte-ref", p.GetProperty("freeNow")[2].GetProperty("design").GetString());
    }

    [ScanFact]
    public void OutputSavesTheJsonWhileCsvPrints()
    {
        using var child = new Child("halves");
        string file = Path.Combine(Path.GetTempPath(), $"ptlab-scan-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = Run("scan", child.Pid, "--format", "csv", "--output", file);
            Assert.True(code == 0, err);
            Assert.StartsWith("pid,comm,method,exact,frozen,vmPteKb,pteTables", output);
            Assert.Contains("pteRefFreeNowTables", output);
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            Assert.Equal(child.P.Id, doc.RootElement.GetProperty("processes")[0].GetProperty("pid").GetInt32());
        }
        finally
        {
            File.Delete(file);
        }
    }

    [ScanFact]
    public void TheTableHasThousandsSeparatorsAndTheRules()
    {
        using var child = new Child("sparse");
        var (code, output, _) = Run("scan", child.Pid);
        Assert.Equal(0, code);
        Assert.Contains("4,096", output);
        Assert.Contains("pt-reclaim", output);
        Assert.Contains("exact, PAGEMAP_SCAN", output);
    }

    [ScanFact]
    public void TheExporterServesOverLoopbackWhatScanJsonSays()
    {
        using var child = new Child("sparse");
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        string text;
        using (new ExporterHost("127.0.0.1", port, 0, 100, "auto", [child.P.Id]))
        using (var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) })
        {
            text = http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/metrics")).GetAwaiter().GetResult();
        }

        var (code, output, _) = Run("scan", child.Pid, "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var p = doc.RootElement.GetProperty("processes")[0];
        string labels = $"{{pid=\"{child.Pid}\",comm=\"ptlab-layouts\"}}";
        double Metric(string name, string l) =>
            double.Parse(text.Split('\n').Single(line => line.StartsWith(name + l + " ", StringComparison.Ordinal)).Split(' ')[^1], CultureInfo.InvariantCulture);
        Assert.Equal(p.GetProperty("vmPteKb").GetInt64() * 1024, Metric("ptlab_vmpte_bytes", labels));
        Assert.Equal(p.GetProperty("pteTables").GetInt64(), Metric("ptlab_pte_tables", labels));
        Assert.Equal(p.GetProperty("emptyPteTables").GetInt64(), Metric("ptlab_empty_pte_tables", labels));
        Assert.Equal(p.GetProperty("zeroPageTables").GetInt64(), Metric("ptlab_zero_page_pte_tables", labels));
        Assert.Equal(p.GetProperty("thpDeposits").GetInt64(), Metric("ptlab_thp_deposit_tables", labels));
        Assert.Equal(p.GetProperty("upperTables").GetInt64(), Metric("ptlab_upper_tables", labels));
        foreach (var d in p.GetProperty("freeNow").EnumerateArray())
        {
            string l = $"{{pid=\"{child.Pid}\",comm=\"ptlab-layouts\",design=\"{d.GetProperty("design").GetString()}\"}}";
            Assert.Equal(d.GetProperty("bytes").GetInt64(), Metric("ptlab_reclaimable_bytes", l));
        }

        Assert.Equal(4096, Metric("ptlab_empty_pte_tables", labels));
        Assert.Equal(1, Metric("ptlab_scan_passes_total", ""));
        Assert.Equal(1, Metric("ptlab_scan_processes", ""));
    }

    [ScanFact]
    public void TheCardinalityCapDropsTheSmallestAndCountsThem()
    {
        using var a = new Child("halves");
        using var b = new Child("sparse");
        var m = new ScanMetrics();
        m.Update(PtLab.Kernel.Scan.HostScanner.ScanAll(0, "auto", [a.P.Id, b.P.Id]), maxProcesses: 1);
        string text = m.Text();
        Assert.Contains($"ptlab_empty_pte_tables{{pid=\"{b.Pid}\"", text);
        Assert.DoesNotContain($"pid=\"{a.Pid}\"", text);
        Assert.Contains("ptlab_scan_processes_dropped 1", text);
    }

    [ScanFact]
    public void WatchPrintsOneCsvRowPerSampleAndWritesThePlot()
    {
        using var child = new Child("halves");
        string png = Path.Combine(Path.GetTempPath(), $"ptlab-watch-{Guid.NewGuid():N}.png");
        try
        {
            var (code, output, err) = Run("scan", child.Pid, "--watch", "20ms", "--samples", "3", "--plot", png);
            Assert.True(code == 0, err);
            var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(4, lines.Length);
            Assert.StartsWith("seconds,pid,vmPteKb,tables,pteTables,emptyPteTables", lines[0]);
            Assert.True(new FileInfo(png).Length > 1000);
        }
        finally
        {
            File.Delete(png);
        }
    }

    [ScanFact]
    public void CtrlCWhileFrozenResumesTheTarget()
    {
        using var child = new Child("sparse");
        string dll = typeof(Cli.Cli).Assembly.Location;
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h ? h : "dotnet";
        using var ptlab = Process.Start(new ProcessStartInfo(dotnet, [dll, "scan", child.Pid, "--watch", "10ms", "--freeze"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        // Drain both pipes: a watch that prints every 10 ms fills an unread pipe within seconds on a
        // slow host, and a ptlab blocked writing to it cannot act on the SIGINT this test sends.
        var err = new System.Text.StringBuilder();
        ptlab.OutputDataReceived += (_, _) => { };
        ptlab.ErrorDataReceived += (_, e) => { lock (err) { err.AppendLine(e.Data); } };
        ptlab.BeginOutputReadLine();
        ptlab.BeginErrorReadLine();
        var sw = Stopwatch.StartNew();
        bool sawStopped = false;
        while (!sawStopped && sw.Elapsed < TimeSpan.FromSeconds(20))
        {
            sawStopped = State(child.P.Id) == 'T';
            Thread.Sleep(1); // a busy poll would take a core from ptlab on a 2-core host
        }

        Assert.True(sawStopped, "ptlab never stopped the target");
        Assert.Equal(0, Kill(ptlab.Id, 2)); // SIGINT, as Ctrl-C sends
        Assert.True(ptlab.WaitForExit(30_000), $"ptlab did not exit after SIGINT: {err}");
        Thread.Sleep(50);
        Assert.NotEqual('T', State(child.P.Id));
    }

    private static char State(int pid)
    {
        string s = File.ReadAllText($"/proc/{pid}/stat");
        return s[s.LastIndexOf(')') + 2];
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int sig);
}
