using System.Globalization;
using PtLab.Traces;

namespace PtLab.Kernel;

/// <summary>
/// The file systems behind device numbers, as this host's mount table says: what a recording
/// keeps of the devices its mapped files live on (<see cref="TraceMetadata.FileSystems"/>), so
/// that a replay knows which files get large folios and which are tmpfs.
/// </summary>
public static class FileSystemProbe
{
    /// <summary>
    /// The mount table's fact for each of <paramref name="devices"/> that it lists (the first
    /// mount of a device: all mounts of one super block share its type and options); devices it
    /// does not list (a memfd's or a SysV segment's internal mount, a file system unmounted since)
    /// are left out.
    /// </summary>
    public static Dictionary<DeviceNumber, FileSystemFact> For(IEnumerable<DeviceNumber> devices, string mountInfo = "/proc/self/mountinfo")
    {
        ArgumentNullException.ThrowIfNull(devices);
        var wanted = devices.ToHashSet();
        var facts = new Dictionary<DeviceNumber, FileSystemFact>();
        if (wanted.Count == 0 || !File.Exists(mountInfo))
        {
            return facts;
        }

        string[] lines;
        try
        {
            lines = File.ReadAllLines(mountInfo);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return facts;
        }

        foreach (string line in lines)
        {
            if (ParseMountInfoLine(line) is not { } m || !wanted.Contains(m.Device) || facts.ContainsKey(m.Device))
            {
                continue;
            }

            int? ra = m.Device.Major == 0 ? null : ReadAhead.KbForDevice($"{m.Device.Major}:{m.Device.Minor}");
            facts[m.Device] = new FileSystemFact(m.Type, m.Options, ra);
        }

        return facts;
    }

    /// <summary>
    /// One line of mountinfo ("36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root
    /// rw,errors=continue"): the device (field 3, decimal), the type and the super block options
    /// (after the " - " separator). Null for a line of another shape.
    /// </summary>
    public static (DeviceNumber Device, string Type, string Options)? ParseMountInfoLine(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        string[] f = line.Split(' ');
        int sep = f.Length < 7 ? -1 : Array.IndexOf(f, "-", 6);
        if (sep < 0 || sep + 1 >= f.Length)
        {
            return null;
        }

        int colon = f[2].IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0
            || !uint.TryParse(f[2].AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out uint major)
            || !uint.TryParse(f[2].AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out uint minor)
            || f[sep + 1].Length == 0)
        {
            return null;
        }

        return (new DeviceNumber(major, minor), f[sep + 1], sep + 3 < f.Length ? f[sep + 3] : "");
    }
}
