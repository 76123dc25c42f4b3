using System.Diagnostics;
using PtLab.Kernel.Record;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// A test that runs the recorder's tracer as root with CAP_SYS_ADMIN dropped (<c>setpriv</c>):
/// it needs Linux x86-64, a C compiler, root (dropping a capability from the bounding set needs
/// CAP_SETPCAP) and <c>setpriv</c> on the PATH.
/// </summary>
public sealed class DroppedCapabilityFactAttribute : FactAttribute
{
    public DroppedCapabilityFactAttribute() =>
        Skip = RootNativeFactAttribute.SkipReason() ?? (TracerNoNewPrivsTests.Setpriv() is null ? "needs setpriv (util-linux) on the PATH" : null);
}

/// <summary>
/// The tracer's process_madvise capture without CAP_SYS_ADMIN. Installing a seccomp filter takes
/// CAP_SYS_ADMIN or no_new_privs (the kernel answers EACCES otherwise), so the tracer's child,
/// before it execs the command, sets PR_SET_NO_NEW_PRIVS and tries again. That is the path every
/// user who is not root takes; here it runs as root with CAP_SYS_ADMIN dropped from the bounding
/// set, which exec then takes from the tracer and its child alike. The command (a shell that
/// prints its NoNewPrivs line and execs tests/Programs/pmadv.c) must run under no_new_privs, and
/// every one of pmadv's seven process_madvise calls must still stop for the tracer and have its
/// ranges read; as plain root it runs without no_new_privs and gives the same calls.
/// </summary>
public sealed class TracerNoNewPrivsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-nnp-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The path of setpriv, or null when it is not on the PATH.</summary>
    public static string? Setpriv() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':')
            .Select(d => Path.Combine(d, "setpriv")).FirstOrDefault(File.Exists);

    [DroppedCapabilityFact]
    public void WithoutCapSysAdminTheFilterIsInstalledUnderNoNewPrivsAndTheCallsAreCaptured()
    {
        var dropped = RunTracer(dropCapSysAdmin: true);
        Assert.Contains("NoNewPrivs:\t1", dropped.Stdout);
        Assert.Contains(dropped.Lines, l => l.StartsWith("F ", StringComparison.Ordinal) && l.Split(' ')[2] == "on");
        Assert.Equal(7, dropped.Lines.Count(l => l.StartsWith("V ", StringComparison.Ordinal)));

        var root = RunTracer(dropCapSysAdmin: false);
        Assert.Contains("NoNewPrivs:\t0", root.Stdout); // with CAP_SYS_ADMIN the filter goes in without it
        Assert.Contains(root.Lines, l => l.StartsWith("F ", StringComparison.Ordinal) && l.Split(' ')[2] == "on");
        // The same calls: each V line's advice, flags, vlen, count and range lengths (the addresses move with ASLR).
        Assert.Equal(root.Lines.Where(l => l.StartsWith("V ", StringComparison.Ordinal)).Select(Ranges),
                     dropped.Lines.Where(l => l.StartsWith("V ", StringComparison.Ordinal)).Select(Ranges));
    }

    /// <summary>A V line's advice, flags, vlen, range count and range lengths.</summary>
    private static string Ranges(string v)
    {
        var w = v.Split(' ');
        return string.Join(' ', new[] { w[6], w[7], w[9], w[10] }.Concat(w.Skip(11).Select(r => r[(r.IndexOf(':', StringComparison.Ordinal) + 1)..])));
    }

    private (string Stdout, string[] Lines) RunTracer(bool dropCapSysAdmin)
    {
        string tracer = NativeBuild.BuildEmbedded(typeof(Recorder).Assembly, "Record.tracer.c", "ptlab-tracer");
        string pmadv = TestPrograms.Build("pmadv");
        string tag = dropCapSysAdmin ? "dropped" : "root";
        string outFile = Path.Combine(_dir, tag + ".tracer");
        string stdoutFile = Path.Combine(_dir, tag + ".out");
        string work = Directory.CreateDirectory(Path.Combine(_dir, tag)).FullName;
        var psi = new ProcessStartInfo(dropCapSysAdmin ? Setpriv()! : tracer) { RedirectStandardError = true, UseShellExecute = false };
        if (dropCapSysAdmin)
        {
            foreach (string a in new[] { "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--", tracer })
            {
                psi.ArgumentList.Add(a);
            }
        }

        foreach (string a in new[] { "-o", stdoutFile, outFile, "20", "exec", "/bin/sh", "-c", "grep NoNewPrivs /proc/self/status; exec \"$0\" \"$@\"", pmadv, work })
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the tracer did not finish within two minutes");
        string stdout = File.ReadAllText(stdoutFile);
        var lines = File.ReadAllLines(outFile);
        output.WriteLine($"{tag}: tracer exit {p.ExitCode}; command output:\n{stdout}");
        output.WriteLine(string.Join('\n', lines.Where(l => l[0] is 'F' or 'V' or 'E')));
        Assert.True(p.ExitCode == 0, $"the tracer ({tag}) exited with {p.ExitCode}: {stderr}");
        return (stdout, lines);
    }
}
