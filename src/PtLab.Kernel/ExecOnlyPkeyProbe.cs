using System.Globalization;
using PtLab.Mm;

namespace PtLab.Kernel;

/// <summary>
/// Measures whether the host gives PROT_EXEC-only mappings the execute-only protection key
/// (<see cref="MachineOptions.ExecOnlyPkey"/>): x86 Linux does so where the CPU has protection keys
/// and the kernel enabled them (<c>ospke</c>). One PROT_EXEC page is mapped in this process, never
/// touched, and its <c>/proc/self/smaps</c> entry read: <c>ProtectionKey</c> is shown only where the
/// kernel uses keys, and is not 0 for a VMA that got the execute-only key.
/// </summary>
internal static class ExecOnlyPkeyProbe
{
    private static readonly Lazy<bool> s_measured = new(Measure);

    /// <summary>Whether an execute-only mapping gets a protection key that denies data access (false where it cannot be measured).</summary>
    public static bool ExecOnlyPkey => s_measured.Value;

    private static bool Measure()
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        const nuint size = 4096;
        nint p = LibC.Mmap(0, size, (int)Prot.Exec, (int)(MapFlags.Private | MapFlags.Anonymous), -1, 0);
        if (p == LibC.MapFailed)
        {
            return false;
        }

        try
        {
            return KeyOf((ulong)p, File.ReadLines("/proc/self/smaps")) is > 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
        finally
        {
            _ = LibC.Munmap(p, size);
        }
    }

    /// <summary>The <c>ProtectionKey</c> of the smaps entry that starts at <paramref name="start"/>, or null where it has none.</summary>
    internal static int? KeyOf(ulong start, IEnumerable<string> smaps)
    {
        bool inside = false;
        foreach (var line in smaps)
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            if (dash > 0 && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong lo) && line.Contains(' ', StringComparison.Ordinal))
            {
                if (inside)
                {
                    return null; // the entry ended without the field
                }

                inside = lo == start;
                continue;
            }

            if (inside && line.StartsWith("ProtectionKey:", StringComparison.Ordinal))
            {
                return int.TryParse(line.AsSpan("ProtectionKey:".Length).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int key) ? key : null;
            }
        }

        return null;
    }
}
