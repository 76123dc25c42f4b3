using System.Globalization;

namespace PtLab.Kernel;

/// <summary>
/// The host's readahead setting for the device a path lives on: <c>read_ahead_kb</c>, which sets the
/// mmap read-around window a cold file fault reads in (<c>ra_pages</c>).
/// </summary>
public static class ReadAhead
{
    /// <summary>
    /// <c>read_ahead_kb</c> of the block device under <paramref name="path"/> (found through
    /// /proc/self/mountinfo and /sys/dev/block, the partition's disk for a partition), or null when
    /// there is none to read (not Linux, a file system without a block device).
    /// </summary>
    public static int? KbFor(string path)
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/self/mountinfo"))
        {
            return null;
        }

        string full = Path.GetFullPath(path);
        string? device = null;
        int bestLength = -1;
        foreach (string line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw": field 3 is
            // the device, field 5 the mount point.
            string[] f = line.Split(' ');
            if (f.Length < 5)
            {
                continue;
            }

            string mount = f[4];
            bool under = full == mount || full.StartsWith(mount.EndsWith('/') ? mount : mount + "/", StringComparison.Ordinal);
            if (under && mount.Length > bestLength)
            {
                bestLength = mount.Length;
                device = f[2];
            }
        }

        return device is null ? null : KbForDevice(device);
    }

    /// <summary>
    /// <c>read_ahead_kb</c> of the block device <paramref name="device"/> (decimal
    /// <c>major:minor</c>, as mountinfo writes it; the partition's disk for a partition), or null
    /// where there is none (a file system without a block device).
    /// </summary>
    public static int? KbForDevice(string device)
    {
        foreach (string candidate in new[] { $"/sys/dev/block/{device}/queue/read_ahead_kb", $"/sys/dev/block/{device}/../queue/read_ahead_kb" })
        {
            try
            {
                if (int.TryParse(File.ReadAllText(candidate).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int kb))
                {
                    return kb;
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return null;
    }
}
