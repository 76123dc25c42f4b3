using System.Diagnostics;
using PtLab.Kernel;

namespace PtLab.Kernel.Tests;

/// <summary>
/// A 256 MiB swap area switched on for the length of one test, on a file under a disk-backed
/// temporary directory or on a loop device over such a file (a block device), and switched off and
/// removed when disposed. <see cref="TryStart"/> says why not where the host does not allow it (not
/// root, no <c>mkswap</c>/<c>losetup</c>, <c>swapon</c> refused) or another swap area is on already
/// (the host's figures would then depend on it).
/// </summary>
internal sealed class HostSwap : IDisposable
{
    public const long Bytes = 256L << 20;

    private readonly string _file;
    private readonly string? _loop;
    private readonly string _device;

    private HostSwap(string file, string? loop)
    {
        _file = file;
        _loop = loop;
        _device = loop ?? file;
    }

    /// <summary>Switches a swap area on; null, with the reason, when it cannot be.</summary>
    public static HostSwap? TryStart(bool blockDevice, out string reason)
    {
        reason = "";
        if (!Environment.IsPrivilegedProcess)
        {
            reason = "swapon needs root";
            return null;
        }

        string[] active = File.ReadAllLines("/proc/swaps").Skip(1).Where(l => l.Trim().Length > 0).ToArray();
        if (active.Length > 0)
        {
            reason = $"a swap area is on already ({active[0].Split(' ')[0]})";
            return null;
        }

        string file = Path.Combine(KernelTarget.DiskBackedTempDirectory(), $"ptlab-swap-{Environment.ProcessId}-{Guid.NewGuid():N}");
        using (var fs = new FileStream(file, FileMode.CreateNew, FileAccess.Write))
        {
            var zeros = new byte[1 << 20];
            for (long done = 0; done < Bytes; done += zeros.Length)
            {
                fs.Write(zeros); // written, not sparse: swapon refuses a file with holes
            }
        }

        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        string? loop = null;
        if (blockDevice && !Run("losetup", out loop, "-f", "--show", file))
        {
            reason = $"losetup failed: {loop}";
            File.Delete(file);
            return null;
        }

        var swap = new HostSwap(file, loop?.Trim());
        string on = "";
        if (!Run("mkswap", out string mk, swap._device) || !Run("swapon", out on, swap._device))
        {
            reason = $"mkswap or swapon of {swap._device} refused: {(mk + on).Trim()}";
            swap.Dispose();
            return null;
        }

        return swap;
    }

    public void Dispose()
    {
        Run("swapoff", out _, _device);
        if (_loop is not null)
        {
            Run("losetup", out _, "-d", _loop);
        }

        File.Delete(_file);
    }

    private static bool Run(string program, out string output, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        try
        {
            using var p = Process.Start(psi)!;
            output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            output = e.Message;
            return false;
        }
    }
}
