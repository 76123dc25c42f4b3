using PtLab.Mm;

namespace PtLab.Kernel;

/// <summary>
/// Measures whether the host kernel maps the shared zero pages on a read fault of private
/// anonymous memory, by making one in this process and reading its <c>/proc/self/pagemap</c>
/// entry (flags need no privilege): a private page is present, anonymous (bit 61 clear) and
/// mapped exclusively (bit 56); the 4 KiB zero page is not a normal page, so it is never
/// exclusive; the huge zero folio is not anonymous, so it reads as file-backed. The kernel ships
/// with both zero pages on x86-64, but a host may be built to take private pages on read faults
/// (<c>mm_forbids_zeropage</c>, or a fault-path option), whatever <c>use_zero_page</c> says.
/// </summary>
internal static unsafe class ZeroPageProbe
{
    private const int PrivateAnonymous = (int)(MapFlags.Private | MapFlags.Anonymous);
    private const nuint Small = 4096;
    private const nuint Huge = 2 << 20;

    private static readonly Lazy<(bool? Small, bool? Huge, ulong ZeroPfn)> s_measured = new(Measure);

    /// <summary>
    /// Whether a read fault maps the 4 KiB zero page; null where it cannot be measured (not Linux,
    /// no pagemap).
    /// </summary>
    public static bool? SmallZeroPage => s_measured.Value.Small;

    /// <summary>
    /// Whether a read fault in a <c>MADV_HUGEPAGE</c> range maps the huge zero page; null where no
    /// PMD mapping could be made (THP off or unavailable), when only <c>use_zero_page</c> can say.
    /// </summary>
    public static bool? HugeZeroPage => s_measured.Value.Huge;

    /// <summary>The PFN the 4 KiB read fault mapped, when it was the zero page and PFNs are visible (root); else 0.</summary>
    public static ulong ZeroPfn => s_measured.Value.ZeroPfn;

    private static (bool?, bool?, ulong) Measure()
    {
        if (!OperatingSystem.IsLinux())
        {
            return (null, null, 0);
        }

        int fd = LibC.Open("/proc/self/pagemap", LibC.OpenReadOnly);
        if (fd < 0)
        {
            return (null, null, 0);
        }

        try
        {
            var (small, zeroPfn) = MeasureSmall(fd);
            return (small, MeasureHuge(fd), zeroPfn);
        }
        finally
        {
            LibC.Close(fd);
        }
    }

    // One read-only page of its own VMA, never huge: the read fault is do_anonymous_page's.
    // Also the frame it mapped, where that is the zero page (0 when PFNs are hidden).
    private static (bool?, ulong) MeasureSmall(int fd)
    {
        nint p = LibC.Mmap(0, Small, (int)Prot.Read, PrivateAnonymous, -1, 0);
        if (p == LibC.MapFailed)
        {
            return (null, 0);
        }

        try
        {
            _ = LibC.Madvise(p, Small, (int)Advice.NoHugePage);
            _ = Volatile.Read(ref *(byte*)p);
            if (Entry(fd, (ulong)p) is not { } e || (e & PagemapBits.Present) == 0)
            {
                return (null, 0);
            }

            bool zero = (e & PagemapBits.Exclusive) == 0;
            return (zero, zero ? e & PagemapBits.PfnMask : 0);
        }
        finally
        {
            _ = LibC.Munmap(p, Small);
        }
    }

    // A 2 MiB-aligned range inside a 4 MiB mapping, advised huge: the read fault is
    // do_huge_pmd_anonymous_page's when its last page turns up present too (only a PMD maps it).
    private static bool? MeasureHuge(int fd)
    {
        nuint length = 2 * Huge;
        nint p = LibC.Mmap(0, length, (int)(Prot.Read | Prot.Write), PrivateAnonymous, -1, 0);
        if (p == LibC.MapFailed)
        {
            return null;
        }

        try
        {
            nint aligned = (nint)(((ulong)p + Huge - 1) & ~(ulong)(Huge - 1));
            if (LibC.Madvise(aligned, Huge, (int)Advice.HugePage) != 0)
            {
                return null;
            }

            _ = Volatile.Read(ref *(byte*)aligned);
            if (Entry(fd, (ulong)aligned) is not { } first || (first & PagemapBits.Present) == 0 ||
                Entry(fd, (ulong)aligned + Huge - Small) is not { } last || (last & PagemapBits.Present) == 0)
            {
                return null;
            }

            return (first & PagemapBits.File) != 0 || (first & PagemapBits.Exclusive) == 0;
        }
        finally
        {
            _ = LibC.Munmap(p, length);
        }
    }

    private static ulong? Entry(int fd, ulong address)
    {
        ulong entry = 0;
        return LibC.Pread(fd, (byte*)&entry, 8, (long)(address / Small) * 8) == 8 ? entry : null;
    }
}
