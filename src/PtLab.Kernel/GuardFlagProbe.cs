using PtLab.Mm;

namespace PtLab.Kernel;

/// <summary>
/// Measures whether <c>MADV_GUARD_INSTALL</c> sets <c>VM_MAYBE_GUARD</c> on this host (smaps
/// <c>VmFlags</c> then shows <c>gu</c>), by installing a marker in one page of this process. With
/// the flag (Linux 6.19, and 6.18 builds that carry it) only an anonymous VMA gets an anon_vma
/// from the install and fork copies a flagged VMA's tables, as the model does; before it every
/// VMA got an anon_vma, which changes how file-backed and shared VMAs merge.
/// </summary>
internal static class GuardFlagProbe
{
    private const int PrivateAnonymous = (int)(MapFlags.Private | MapFlags.Anonymous);
    private const nuint Page = 4096;

    private static readonly Lazy<bool?> s_measured = new(Measure);

    /// <summary>
    /// Whether the install set <c>VM_MAYBE_GUARD</c>; null where it cannot be measured (not Linux,
    /// no guard regions, no smaps).
    /// </summary>
    public static bool? MaybeGuard => s_measured.Value;

    private static bool? Measure()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        nint p = LibC.Mmap(0, Page, (int)(Prot.Read | Prot.Write), PrivateAnonymous, -1, 0);
        if (p == LibC.MapFailed)
        {
            return null;
        }

        try
        {
            if (LibC.Madvise(p, Page, (int)Advice.GuardInstall) != 0)
            {
                return null; // EINVAL: no guard regions at all
            }

            if (!Scan.ProcSmaps.TryParse(File.ReadAllText("/proc/self/smaps"), out var vmas, out _))
            {
                return null;
            }

            ulong at = (ulong)p;
            return vmas.FirstOrDefault(v => v.Vma.Start <= at && at < v.Vma.End) is { } vma ? vma.VmFlags.Contains("gu") : null;
        }
        catch (IOException)
        {
            return null;
        }
        finally
        {
            _ = LibC.Munmap(p, Page);
        }
    }
}
