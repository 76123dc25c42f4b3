using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel;
using PtLab.Kernel.Scan;

namespace PtLab.Kernel.Tests.Scan;

/// <summary>A fact that needs what <c>ptlab scan</c>'s exact method needs: Linux x86-64 6.7+ (PAGEMAP_SCAN) and gcc.</summary>
public sealed class PagemapScanFactAttribute : FactAttribute
{
    public PagemapScanFactAttribute() => Skip = LayoutChild.SkipReason();

    /// <summary>A file the test needs (a shared library to LD_PRELOAD); the test skips, naming the package, without it.</summary>
    public string? NeedsFile
    {
        get => null;
        init
        {
            if (Skip is null && value is not null && !File.Exists(value))
            {
                Skip = $"{value} is missing (Debian: apt-get install -y libjemalloc2 libtcmalloc-minimal4)";
            }
        }
    }

    /// <summary>A newer kernel the test needs ("6.13" for guard regions).</summary>
    public string? MinKernel
    {
        get => null;
        init
        {
            if (Skip is null && value is not null && KernelInfo.Probe().ReleaseVersion is { } v && v < Version.Parse(value))
            {
                Skip = $"needs Linux {value}+; the host runs {KernelInfo.Probe().Release}";
            }
        }
    }
}

/// <summary>The theory form of <see cref="PagemapScanFactAttribute"/>.</summary>
public sealed class PagemapScanTheoryAttribute : TheoryAttribute
{
    public PagemapScanTheoryAttribute() => Skip = LayoutChild.SkipReason();
}

/// <summary>
/// A child process running <c>Programs/layouts.c</c>: it builds one page-table layout, reports its
/// 2 MiB-aligned region and waits; disposing it closes its stdin and reaps it.
/// </summary>
internal sealed class LayoutChild : IDisposable
{
    private readonly Process _process;

    private LayoutChild(Process process, ulong start, ulong end)
    {
        _process = process;
        Start = start;
        End = end;
    }

    public int Pid => _process.Id;

    public ulong Start { get; }

    public ulong End { get; }

    /// <summary>Null where the exact scan can run, else why not.</summary>
    public static string? SkipReason()
    {
        if (!KernelTarget.IsSupported)
        {
            return "needs Linux on x86-64: this test scans a child process's page tables";
        }

        if (KernelInfo.Probe().ReleaseVersion is not { } v || v < new Version(6, 7))
        {
            return $"needs PAGEMAP_SCAN (Linux 6.7+); the host runs {KernelInfo.Probe().Release}";
        }

        return NativeBuild.IsAvailable(out string reason) ? null : reason;
    }

    /// <summary>The program, built once per source.</summary>
    public static string Executable() => NativeBuild.BuildEmbedded(typeof(LayoutChild).Assembly, "layouts.c", "ptlab-layouts");

    /// <summary>Starts Programs/allocchurn.c (an allocator under churn) with <paramref name="environment"/> (LD_PRELOAD).</summary>
    public static LayoutChild Churn(IDictionary<string, string> environment) =>
        Launch(NativeBuild.BuildEmbedded(typeof(LayoutChild).Assembly, "allocchurn.c", "ptlab-allocchurn", "-pthread"), "churn", environment);

    /// <summary>Starts the layout and waits for its "ready" line.</summary>
    public static LayoutChild Run(string layout, IDictionary<string, string>? environment = null) => Launch(Executable(), layout, environment);

    private static LayoutChild Launch(string exe, string layout, IDictionary<string, string>? environment)
    {
        var psi = new ProcessStartInfo(exe, layout)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }

        var p = Process.Start(psi)!;
        string line = p.StandardOutput.ReadLine() ?? "";
        var parts = line.Split(' ');
        if (parts.Length != 3 || parts[0] != "ready")
        {
            p.Kill();
            p.WaitForExit();
            throw new InvalidOperationException($"layout {layout} did not start: '{line}' (exit {p.ExitCode})");
        }

        return new LayoutChild(p, ulong.Parse(parts[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture), ulong.Parse(parts[2], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
    }

    /// <summary>Sends one command line ("exec").</summary>
    public void Send(string line)
    {
        _process.StandardInput.WriteLine(line);
        _process.StandardInput.Flush();
    }

    /// <summary>The VMAs of the layout's region.</summary>
    public IEnumerable<VmaScan> RegionVmas(ProcessScan scan) =>
        scan.Vmas!.Where(v => v.Start >= Start && v.End <= End);

    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
        }

        _process.WaitForExit();
    }

    public void Dispose()
    {
        try
        {
            _process.StandardInput.Close();
            if (!_process.WaitForExit(5000))
            {
                _process.Kill();
                _process.WaitForExit();
            }
        }
        catch (InvalidOperationException)
        {
        }

        _process.Dispose();
    }
}
