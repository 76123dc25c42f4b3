using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using PtLab.Reclaim;

namespace PtLab.Kernel;

/// <summary>What the kernel configuration says about an option.</summary>
public enum ConfigState
{
    /// <summary>No configuration could be read (neither /proc/config.gz nor /boot/config-RELEASE).</summary>
    Unknown,
    /// <summary><c>=y</c>.</summary>
    Enabled,
    /// <summary>Absent or <c># ... is not set</c> in a configuration that was read.</summary>
    Disabled,
}

/// <summary>
/// The host kernel as far as PtLab cares: release, whether it is Linux x86-64, whether
/// <c>CONFIG_PT_RECLAIM</c> is on, and which model design matches it.
/// </summary>
public sealed partial record KernelInfo
{
    /// <summary>The first release with <c>mm/pt_reclaim.c</c>.</summary>
    public static readonly Version PtReclaimSince = new(6, 14);

    /// <summary>
    /// The first release whose guard regions (<c>MADV_GUARD_INSTALL</c>, 6.13) are the model's:
    /// in file-backed and read-only mappings too (6.15), with pagemap's guard bit (6.14).
    /// </summary>
    public static readonly Version GuardRegionsSince = new(6, 15);

    /// <summary>
    /// The first release whose <c>mseal</c> is the model's: the call came in 6.10, but until 6.12
    /// munmap, mprotect and madvise checked the whole range for a seal before acting; since, each
    /// VMA is checked as it is reached, so the VMAs before a sealed one are changed.
    /// </summary>
    public static readonly Version MsealSince = new(6, 12);

    /// <summary>The first release with MAP_DROPPABLE.</summary>
    public static readonly Version DroppableSince = new(6, 11);

    /// <summary>Whether the host has MAP_DROPPABLE (<see cref="DroppableSince"/>, x86-64).</summary>
    public bool HasDroppable => IsLinux && IsX64 && ReleaseVersion is { } v && v >= DroppableSince;

    /// <summary>Whether the host has <c>mseal</c> as the model has it (<see cref="MsealSince"/>).</summary>
    public bool HasMseal => IsLinux && IsX64 && ReleaseVersion is { } v && v >= MsealSince;

    /// <summary>
    /// Whether the host has guard regions as the model has them: <see cref="GuardRegionsSince"/>,
    /// and an install that sets <c>VM_MAYBE_GUARD</c> (<see cref="MaybeGuard"/>) where that could
    /// be measured.
    /// </summary>
    public bool HasGuardRegions => IsLinux && ReleaseVersion is { } v && v >= GuardRegionsSince && MaybeGuard is not false;

    /// <summary>
    /// Whether <c>MADV_GUARD_INSTALL</c> sets <c>VM_MAYBE_GUARD</c> (smaps <c>gu</c>), as measured
    /// in this process; null where it was not measured.
    /// </summary>
    public bool? MaybeGuard { get; init; }

    /// <summary>Whether the host runs Linux.</summary>
    public required bool IsLinux { get; init; }

    /// <summary>Whether the OS and this process are x86-64 (the constants PtLab passes are x86-64's).</summary>
    public required bool IsX64 { get; init; }

    /// <summary>Whether the host is Linux on x86-64, where <see cref="KernelTarget"/> can run.</summary>
    public bool IsLinuxX64 => IsLinux && IsX64;

    /// <summary><c>uname -r</c> on Linux; the OS description elsewhere.</summary>
    public required string Release { get; init; }

    /// <summary>The major.minor.patch of <see cref="Release"/>, or null when it has none.</summary>
    public Version? ReleaseVersion => ParseRelease(Release);

    /// <summary><c>CONFIG_PT_RECLAIM</c>.</summary>
    public required ConfigState PtReclaim { get; init; }

    /// <summary>
    /// The host's transparent huge page mode from <c>/sys/kernel/mm/transparent_hugepage/</c>, or
    /// null where it cannot be read (not Linux, no THP support).
    /// </summary>
    public PtLab.Mm.ThpSettings? Thp { get; init; }

    /// <summary>
    /// Whether a read fault on private anonymous memory maps the shared zero page, as measured in
    /// this process (<see cref="ZeroPageProbe"/>); null where it could not be measured. The model's
    /// <c>MachineOptions.ZeroPage</c> for this host.
    /// </summary>
    public bool? ZeroPage { get; init; }

    /// <summary>Whether the model should map zero pages to behave like this host: <see cref="ZeroPage"/>, true where unknown.</summary>
    public bool ModelZeroPage => ZeroPage ?? true;

    /// <summary>
    /// Whether execute-only mappings get a protection key that denies data access on this host, as
    /// measured in this process (<see cref="ExecOnlyPkeyProbe"/>); the model's
    /// <c>MachineOptions.ExecOnlyPkey</c> for this host.
    /// </summary>
    public bool ExecOnlyPkey { get; init; }

    /// <summary>
    /// The host's hugetlb page sizes, the default first, and the pages a reservation could take
    /// now (<see cref="ReadHugetlbPools"/>); null where they cannot be read.
    /// </summary>
    public IReadOnlyList<PtLab.Mm.HugetlbPool>? HugetlbPools { get; init; }

    /// <summary>
    /// Whether every hugetlb pool of the host is empty with no overcommit and its sizes are the
    /// model's default (<see cref="PtLab.Mm.HugetlbPool.Empty"/>), so that every MAP_HUGETLB mmap
    /// that reserves is refused, on the host as in the model.
    /// </summary>
    public bool HugetlbPoolsEmpty => HugetlbPools is { } p && p.SequenceEqual(PtLab.Mm.HugetlbPool.Empty);

    /// <summary>Where the configuration was read from, or null.</summary>
    public string? ConfigSource { get; init; }

    /// <summary><c>CONFIG_PT_RECLAIM</c> as "y", "n" or "unknown".</summary>
    public string PtReclaimText => PtReclaim switch
    {
        ConfigState.Enabled => "y",
        ConfigState.Disabled => "n",
        _ => "unknown",
    };

    /// <summary>
    /// The model design that behaves like this kernel: upstream's pt-reclaim on Linux x86-64 6.14+
    /// with <c>CONFIG_PT_RECLAIM=y</c>, otherwise the baseline (<see cref="Designs.MatchingKernel"/>).
    /// </summary>
    public string MatchingDesign =>
        Designs.MatchingKernel(IsLinuxX64 && ReleaseVersion is { } v && v >= PtReclaimSince && PtReclaim == ConfigState.Enabled);

    /// <summary>Probes the host this process runs on.</summary>
    public static KernelInfo Probe()
    {
        bool isX64 = RuntimeInformation.OSArchitecture == Architecture.X64 &&
                     RuntimeInformation.ProcessArchitecture == Architecture.X64;
        if (!OperatingSystem.IsLinux())
        {
            return new KernelInfo
            {
                IsLinux = false,
                IsX64 = isX64,
                Release = RuntimeInformation.OSDescription,
                PtReclaim = ConfigState.Unknown,
            };
        }

        return ForLinux(UnameRelease(), isX64, "/proc/config.gz", "/boot") with
        {
            Thp = Measured(ReadThp("/sys/kernel/mm/transparent_hugepage"), ZeroPageProbe.HugeZeroPage),
            ZeroPage = ZeroPageProbe.SmallZeroPage,
            ExecOnlyPkey = ExecOnlyPkeyProbe.ExecOnlyPkey,
            MaybeGuard = GuardFlagProbe.MaybeGuard,
            HugetlbPools = ReadHugetlbPools("/sys/kernel/mm/hugepages", "/proc/meminfo"),
        };
    }

    /// <summary>
    /// Reads the hugetlb sizes from a sysfs folder (<c>hugepages-NkB</c>, each with
    /// <c>free_hugepages</c>, <c>resv_hugepages</c>, <c>nr_overcommit_hugepages</c> and
    /// <c>surplus_hugepages</c>) and the default size from meminfo (<c>Hugepagesize:</c>): per
    /// size, the pages a reservation could take now, free less reserved plus the overcommit room.
    /// The default size comes first, the others by size. Null where the folder or a file is
    /// missing or malformed (no hugetlb support).
    /// </summary>
    public static IReadOnlyList<PtLab.Mm.HugetlbPool>? ReadHugetlbPools(string folder, string meminfo)
    {
        try
        {
            if (!Directory.Exists(folder))
            {
                return null;
            }

            long defaultKb = 0;
            foreach (var line in File.ReadLines(meminfo))
            {
                if (line.StartsWith("Hugepagesize:", StringComparison.Ordinal))
                {
                    _ = long.TryParse(line.AsSpan("Hugepagesize:".Length).Trim().TrimEnd("kB").Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out defaultKb);
                }
            }

            var pools = new List<(long Kb, PtLab.Mm.HugetlbPool Pool)>();
            foreach (var dir in Directory.GetDirectories(folder, "hugepages-*kB"))
            {
                string name = Path.GetFileName(dir);
                if (!long.TryParse(name.AsSpan("hugepages-".Length, name.Length - "hugepages-".Length - 2), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long kb)
                    || kb <= 0 || (kb & (kb - 1)) != 0)
                {
                    return null;
                }

                long Count(string file) => long.Parse(File.ReadAllText(Path.Combine(dir, file)).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture);
                long available = Math.Max(0, Count("free_hugepages") - Count("resv_hugepages")) + Math.Max(0, Count("nr_overcommit_hugepages") - Count("surplus_hugepages"));
                pools.Add((kb, new PtLab.Mm.HugetlbPool(System.Numerics.BitOperations.Log2((ulong)kb) + 10, available)));
            }

            return pools.Count == 0 || pools.All(p => p.Kb != defaultKb) ? null
                : [.. pools.OrderBy(p => p.Kb == defaultKb ? 0 : 1).ThenBy(p => p.Kb).Select(p => p.Pool)];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or OverflowException)
        {
            return null;
        }
    }

    /// <summary>
    /// The THP mode with <c>use_zero_page</c> as the host behaves: a kernel that never maps the huge
    /// zero page (<paramref name="hugeZeroPageMeasured"/> false) acts as if it were 0 whatever sysfs says.
    /// </summary>
    internal static PtLab.Mm.ThpSettings? Measured(PtLab.Mm.ThpSettings? thp, bool? hugeZeroPageMeasured) =>
        thp is null || hugeZeroPageMeasured is not false ? thp : thp with { UseZeroPage = false };

    /// <summary>
    /// Reads the THP mode from a sysfs folder (<c>enabled</c>, <c>defrag</c>, <c>use_zero_page</c>);
    /// null when a file is missing or unreadable, or holds a word this version does not know.
    /// </summary>
    public static PtLab.Mm.ThpSettings? ReadThp(string folder)
    {
        try
        {
            var enabled = PtLab.Mm.ThpSettings.ParseEnabled(File.ReadAllText(Path.Combine(folder, "enabled")));
            var defrag = PtLab.Mm.ThpSettings.ParseDefrag(File.ReadAllText(Path.Combine(folder, "defrag")));
            string zero = File.ReadAllText(Path.Combine(folder, "use_zero_page")).Trim();
            return enabled is { } e && defrag is { } d && zero is "0" or "1" ? new PtLab.Mm.ThpSettings(e, d, zero == "1") : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The Linux half of <see cref="Probe"/>, with the configuration locations as parameters (for tests).</summary>
    internal static KernelInfo ForLinux(string release, bool isX64, string procConfigGz, string bootDir)
    {
        var (config, source) = ReadConfig(release, procConfigGz, bootDir);
        return new KernelInfo
        {
            IsLinux = true,
            IsX64 = isX64,
            Release = release,
            PtReclaim = config is null ? ConfigState.Unknown : ConfigOption(config, "CONFIG_PT_RECLAIM"),
            ConfigSource = source,
        };
    }

    /// <summary>The state of <paramref name="option"/> in kernel configuration text.</summary>
    public static ConfigState ConfigOption(string configText, string option)
    {
        ArgumentNullException.ThrowIfNull(configText);
        ArgumentException.ThrowIfNullOrEmpty(option);
        string set = option + "=";
        foreach (var line in configText.Split('\n'))
        {
            if (line.StartsWith(set, StringComparison.Ordinal))
            {
                return line.AsSpan(set.Length).Trim() is "y" ? ConfigState.Enabled : ConfigState.Disabled;
            }
        }

        return ConfigState.Disabled; // "# CONFIG_X is not set", or an option this kernel does not have
    }

    /// <summary>The major.minor[.patch] at the start of a kernel release string, or null.</summary>
    public static Version? ParseRelease(string release)
    {
        ArgumentNullException.ThrowIfNull(release);
        var m = ReleasePattern().Match(release);
        if (!m.Success)
        {
            return null;
        }

        int major = int.Parse(m.Groups[1].ValueSpan, provider: null);
        int minor = int.Parse(m.Groups[2].ValueSpan, provider: null);
        return m.Groups[3].Success ? new Version(major, minor, int.Parse(m.Groups[3].ValueSpan, provider: null)) : new Version(major, minor);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        IsLinuxX64
            ? $"Linux {Release} x86-64, CONFIG_PT_RECLAIM={PtReclaimText}{(ConfigSource is null ? "" : $" (from {ConfigSource})")}, matching design: {MatchingDesign}"
            : $"{Release}: not Linux x86-64, the kernel target cannot run here; matching design: {MatchingDesign}";

    [GeneratedRegex(@"^(\d+)\.(\d+)(?:\.(\d+))?")]
    private static partial Regex ReleasePattern();

    private static unsafe string UnameRelease()
    {
        byte* buf = stackalloc byte[LibC.UtsnameSize];
        if (LibC.Uname(buf) == 0)
        {
            var release = new ReadOnlySpan<byte>(buf + (2 * LibC.UtsFieldLength), LibC.UtsFieldLength);
            int nul = release.IndexOf((byte)0);
            return Encoding.ASCII.GetString(nul < 0 ? release : release[..nul]);
        }

        return File.Exists("/proc/sys/kernel/osrelease") ? File.ReadAllText("/proc/sys/kernel/osrelease").Trim() : "unknown";
    }

    /// <summary>
    /// /proc/config.gz (CONFIG_IKCONFIG_PROC), else /boot/config-RELEASE, else nothing. One that
    /// exists but cannot be read counts as absent: the answer is then "unknown", not an error.
    /// </summary>
    private static (string? Text, string? Source) ReadConfig(string release, string procConfigGz, string bootDir)
    {
        try
        {
            if (File.Exists(procConfigGz))
            {
                using var file = File.OpenRead(procConfigGz);
                using var gz = new GZipStream(file, CompressionMode.Decompress);
                using var reader = new StreamReader(gz, Encoding.ASCII);
                return (reader.ReadToEnd(), procConfigGz);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
        }

        string boot = Path.Combine(bootDir, "config-" + release);
        try
        {
            return File.Exists(boot) ? (File.ReadAllText(boot), boot) : (null, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (null, null);
        }
    }
}
