using System.Diagnostics;
using PtLab.Kernel.Scan;

namespace PtLab.Kernel.Tests.Scan;

/// <summary>Targets that are not there, not scannable, or change under the scanner: each a ScanException naming the pid and file, never a crash.</summary>
public sealed class ScanHostileTests
{
    private static int UnusedPid()
    {
        int max = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), System.Globalization.CultureInfo.InvariantCulture);
        for (int pid = max - 1; pid > 1; pid--)
        {
            if (!Directory.Exists($"/proc/{pid}"))
            {
                return pid;
            }
        }

        throw new InvalidOperationException("no free pid");
    }

    [LinuxFact]
    public void APidThatDoesNotExistIsNamedWithItsFile()
    {
        int pid = UnusedPid();
        var e = Assert.Throws<ScanException>(() => ProcessScanner.Scan(pid));
        Assert.Equal(ScanFailure.NoSuchProcess, e.Kind);
        Assert.Equal($"pid {pid}: /proc/{pid}/status: no such process (ENOENT)", e.Message);
    }

    [LinuxFact]
    public void AKernelThreadIsRefusedByName()
    {
        // kthreadd is pid 2 in every pid namespace that sees kernel threads; elsewhere look one up.
        int pid = Directory.EnumerateDirectories("/proc").Select(d => int.TryParse(Path.GetFileName(d), out int p) ? p : 0)
            .Where(p => p > 0).FirstOrDefault(p => File.ReadAllText($"/proc/{p}/status").Contains("Kthread:\t1"));
        if (pid == 0)
        {
            return; // no kernel thread visible (a container): nothing to refuse
        }

        var e = Assert.Throws<ScanException>(() => ProcessScanner.Scan(pid));
        Assert.Equal(ScanFailure.KernelThread, e.Kind);
        Assert.Contains($"pid {pid}: /proc/{pid}/status:", e.Message);
        Assert.Contains("kernel thread", e.Message);
    }

    [LinuxFact]
    public void AZombieHasNoAddressSpace()
    {
        using var p = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "sleep 0.2 & exec sleep 3"]) { UseShellExecute = false })!;
        // The shell's child 'sleep 0.2' becomes a zombie of the 'sleep 3' that replaced the shell: nobody reaps it.
        int zombie = 0;
        var sw = Stopwatch.StartNew();
        while (zombie == 0 && sw.Elapsed < TimeSpan.FromSeconds(2.5))
        {
            foreach (var t in Directory.EnumerateDirectories($"/proc/{p.Id}/task"))
            {
                foreach (var c in File.ReadAllText($"{t}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
                {
                    int child = int.Parse(c, System.Globalization.CultureInfo.InvariantCulture);
                    if (File.Exists($"/proc/{child}/stat") && File.ReadAllText($"/proc/{child}/stat").Contains(") Z ", StringComparison.Ordinal))
                    {
                        zombie = child;
                    }
                }
            }

            Thread.Sleep(20);
        }

        Assert.NotEqual(0, zombie);
        var e = Assert.Throws<ScanException>(() => ProcessScanner.Scan(zombie));
        Assert.Equal(ScanFailure.NoAddressSpace, e.Kind);
        Assert.StartsWith($"pid {zombie}: /proc/{zombie}/", e.Message);
        p.Kill();
        p.WaitForExit();
    }

    [PagemapScanFact]
    public void AProcessThatExitsMidScanIsReportedAsVanished()
    {
        using var child = LayoutChild.Run("halves");
        var e = Assert.Throws<ScanException>(() => ProcessScanner.Scan(child.Pid, new ScanOptions { AfterOpen = child.Kill }));
        Assert.Equal(ScanFailure.Vanished, e.Kind);
        Assert.Contains($"pid {child.Pid}: /proc/{child.Pid}/", e.Message);
    }

    [PagemapScanFact]
    public void AProcessThatExecsMidScanIsReportedAsVanished()
    {
        using var child = LayoutChild.Run("halves");
        void Exec()
        {
            child.Send("exec");
            var sw = Stopwatch.StartNew();
            while (File.ReadAllText($"/proc/{child.Pid}/comm").Trim() != "sleep" && sw.Elapsed < TimeSpan.FromSeconds(5))
            {
                Thread.Sleep(5);
            }
        }

        var e = Assert.Throws<ScanException>(() => ProcessScanner.Scan(child.Pid, new ScanOptions { AfterOpen = Exec }));
        Assert.Equal(ScanFailure.Vanished, e.Kind);
        Assert.Contains("exited or exec'd", e.Message);
        child.Kill();
    }

    [PagemapScanFact]
    public void FreezeStopsTheTargetAndAlwaysResumesIt()
    {
        using var child = LayoutChild.Run("halves");
        ProcessScan scan;
        using (var f = Freezer.Freeze(child.Pid, TimeSpan.FromSeconds(5)))
        {
            Assert.True(Freezer.AllThreadsStopped(child.Pid));
            Assert.True(f.Holding);
            scan = ProcessScanner.Scan(child.Pid, new ScanOptions { Frozen = true });
        }

        Assert.True(scan.Frozen);
        Assert.Empty(scan.Inconsistencies);
        Assert.False(Freezer.AllThreadsStopped(child.Pid));

        // An error inside the frozen section resumes too.
        static void FailWhileFrozen(int pid)
        {
            using var f = Freezer.Freeze(pid, TimeSpan.FromSeconds(5));
            throw new ScanException(ScanFailure.Failed, pid, "test", "an error while frozen");
        }

        Assert.Throws<ScanException>(() => FailWhileFrozen(child.Pid));
        Assert.False(Freezer.AllThreadsStopped(child.Pid));
    }

    [PagemapScanFact]
    public void AProcessStoppedBeforeTheFreezeIsLeftStopped()
    {
        using var child = LayoutChild.Run("halves");
        Assert.Equal(0, LibC.Kill(child.Pid, 19)); // SIGSTOP
        var sw = Stopwatch.StartNew();
        while (!Freezer.AllThreadsStopped(child.Pid) && sw.Elapsed < TimeSpan.FromSeconds(5))
        {
            Thread.Sleep(1);
        }

        using (Freezer.Freeze(child.Pid, TimeSpan.FromSeconds(5)))
        {
        }

        Assert.True(Freezer.AllThreadsStopped(child.Pid));
        LibC.Kill(child.Pid, 18); // SIGCONT
    }

    [PagemapScanFact]
    public void AnInterruptBetweenTheHandlersAndTheStopPreventsTheStop()
    {
        // The interrupt handler runs on its own thread, at any time; here it runs in the window after
        // the handlers are registered and before SIGSTOP, where a resume used to be followed by a stop
        // that nothing undid (the target stayed stopped after ptlab exited).
        using var child = LayoutChild.Run("halves");
        using (var f = Freezer.Freeze(child.Pid, TimeSpan.FromSeconds(5), beforeStop: g => g.Resume()))
        {
            Assert.False(f.Holding);
            Assert.False(f.Stopped);
        }

        Thread.Sleep(20);
        Assert.False(Freezer.AllThreadsStopped(child.Pid));

        // An interrupt after the stop resumes at once, and the dispose does not send a second SIGCONT.
        using (var f = Freezer.Freeze(child.Pid, TimeSpan.FromSeconds(5)))
        {
            Assert.True(f.Stopped);
            f.Resume();
            Assert.False(f.Holding);
            var sw = Stopwatch.StartNew();
            while (Freezer.AllThreadsStopped(child.Pid) && sw.Elapsed < TimeSpan.FromSeconds(5))
            {
                Thread.Sleep(1);
            }

            Assert.False(Freezer.AllThreadsStopped(child.Pid));
        }
    }

    [LinuxFact]
    public void PtlabRefusesToFreezeItself()
    {
        var e = Assert.Throws<ScanException>(() => Freezer.Freeze(Environment.ProcessId, TimeSpan.FromSeconds(1)));
        Assert.Contains("cannot stop itself", e.Message);
    }
}
