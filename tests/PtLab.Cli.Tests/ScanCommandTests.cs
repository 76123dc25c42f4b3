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

/// <summary><c>ptlab scan</c> and <c>ptlab exporter</c>: refusals, output shapes, the exporter against the JSON, and Ctrl-C or SIGTERM while frozen.</summary>
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
        using var ptlab = Watch.Start(child, "default");
        ptlab.StopWhileHoldingTheTarget(child.P.Id);
        Assert.True(SignalMask(ptlab.P.Id, "SigCgt", LibC.SIGINT), "ptlab has no SIGINT handler while it holds the target stopped");
        Assert.Equal(0, LibC.Kill(ptlab.P.Id, LibC.SIGINT)); // Ctrl-C, pending while the target is held
        Assert.Equal(0, LibC.Kill(ptlab.P.Id, SIGCONT));
        ptlab.AssertExitsZero("SIGINT");
        AssertRunning(child.P.Id);
    }

    /// <summary>
    /// A watch started as a background job of a script inherits SIGINT ignored, and ptlab keeps it so
    /// (a Ctrl-C at the terminal is for the foreground); SIGTERM, what <c>kill PID</c> sends, ends the
    /// watch like a Ctrl-C: the target is resumed, the series is written and ptlab exits 0.
    /// </summary>
    [ScanFact]
    public void SigtermWhileFrozenEndsAWatchThatInheritedCtrlCIgnored()
    {
        using var child = new Child("sparse");
        string json = Path.Combine(Path.GetTempPath(), $"ptlab-watch-{Guid.NewGuid():N}.json");
        try
        {
            using (var ptlab = Watch.Start(child, "ignore", "--output", json))
            {
                ptlab.StopWhileHoldingTheTarget(child.P.Id);
                Assert.True(SignalMask(ptlab.P.Id, "SigIgn", LibC.SIGINT), "ptlab does not ignore the SIGINT it inherited ignored");
                Assert.True(SignalMask(ptlab.P.Id, "SigCgt", SIGTERM), "ptlab has no SIGTERM handler while it holds the target stopped");
                Assert.Equal(0, LibC.Kill(ptlab.P.Id, SIGTERM));
                Assert.Equal(0, LibC.Kill(ptlab.P.Id, SIGCONT));
                ptlab.AssertExitsZero("SIGTERM");
            }

            AssertRunning(child.P.Id);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            Assert.True(doc.RootElement.GetArrayLength() >= 1);
            Assert.Equal(child.P.Id, doc.RootElement[0].GetProperty("pid").GetInt32());
        }
        finally
        {
            File.Delete(json);
        }
    }

    private const int SIGTERM = 15;
    private const int SIGCONT = 18;
    private const int SIGSTOP = 19;

    /// <summary>
    /// <c>ptlab scan CHILD --watch 10ms --freeze</c> as a process of its own, started through a
    /// launcher that sets SIGINT's disposition first. Without it ptlab would inherit the test
    /// runner's, which is "ignored" when the suite itself was started as a background job of a
    /// script; a ptlab that ignores SIGINT rightly never sees one (this test once waited 30 s for it so).
    /// </summary>
    private sealed class Watch : IDisposable
    {
        private readonly System.Text.StringBuilder _err = new();

        private Watch(Process p) => P = p;

        public Process P { get; }

        public static Watch Start(Child child, string sigint, params string[] more)
        {
            string launcher = NativeBuild.BuildEmbedded(typeof(ScanCommandTests).Assembly, "sigdisposition.c", "ptlab-sigdisposition");
            string dll = typeof(Cli.Cli).Assembly.Location;
            string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h ? h : "dotnet";
            var w = new Watch(Process.Start(new ProcessStartInfo(launcher, [sigint, dotnet, dll, "scan", child.Pid, "--watch", "10ms", "--freeze", .. more])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            })!);

            // Drain both pipes: a watch that prints every 10 ms fills an unread pipe within seconds on
            // a slow host, and a ptlab blocked writing to it cannot act on a signal.
            w.P.OutputDataReceived += (_, _) => { };
            w.P.ErrorDataReceived += (_, e) => { lock (w._err) { w._err.AppendLine(e.Data); } };
            w.P.BeginOutputReadLine();
            w.P.BeginErrorReadLine();
            return w;
        }

        /// <summary>
        /// Stops ptlab itself (SIGSTOP, every thread) at a moment its freezer holds the target stopped,
        /// so that a signal sent now arrives while the target is held, whatever the point of the sample.
        /// Seeing the target stopped and then signalling ptlab leaves a window in which the sample ends
        /// first and the signal comes between samples.
        /// </summary>
        public void StopWhileHoldingTheTarget(int target)
        {
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < TimeSpan.FromSeconds(20) && !P.HasExited)
            {
                if (State(target) == 'T')
                {
                    Assert.Equal(0, LibC.Kill(P.Id, SIGSTOP));
                    while (!PtLab.Kernel.Scan.Freezer.AllThreadsStopped(P.Id) && sw.Elapsed < TimeSpan.FromSeconds(20))
                    {
                        Thread.Sleep(1);
                    }

                    if (State(target) == 'T')
                    {
                        return; // a stopped ptlab cannot resume it: the freezer holds it now
                    }

                    Assert.Equal(0, LibC.Kill(P.Id, SIGCONT)); // the sample ended meanwhile: the next one
                }

                Thread.Sleep(1); // a busy poll would take a core from ptlab on a 2-core host
            }

            Assert.Fail($"ptlab never held the target stopped: {Err()}");
        }

        public void AssertExitsZero(string signal)
        {
            Assert.True(P.WaitForExit(30_000), $"ptlab did not exit after {signal}: {Err()}");
            P.WaitForExit(); // the stderr reader's last lines
            Assert.True(P.ExitCode == 0, $"ptlab exited {P.ExitCode} after {signal}: {Err()}");
        }

        public void Dispose()
        {
            if (!P.HasExited)
            {
                P.Kill(); // a failed test leaves no watch behind
                P.WaitForExit();
            }

            P.Dispose();
        }

        private string Err()
        {
            lock (_err)
            {
                return _err.ToString();
            }
        }
    }

    /// <summary>Whether <paramref name="sig"/> is in the mask <paramref name="field"/> (SigIgn, SigCgt) of /proc/PID/status.</summary>
    private static bool SignalMask(int pid, string field, int sig)
    {
        string line = File.ReadLines($"/proc/{pid}/status").Single(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        ulong mask = ulong.Parse(line[(field.Length + 1)..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        return (mask & (1UL << (sig - 1))) != 0;
    }

    /// <summary>The target is not left stopped: ptlab sent SIGCONT before it exited, and SIGCONT wakes a stopped process at once.</summary>
    private static void AssertRunning(int pid) => Assert.NotEqual('T', State(pid));

    private static char State(int pid)
    {
        string s = File.ReadAllText($"/proc/{pid}/stat");
        return s[s.LastIndexOf(')') + 2];
    }
}
