using System.Globalization;
using PtLab.Traces;

namespace PtLab.Kernel.Record;

/// <summary>The host facts that change how a trace replays (see <see cref="HostFacts"/> for the keys).</summary>
internal static class HostProbe
{
    private const string Thp = "/sys/kernel/mm/transparent_hugepage/";

    public static Dictionary<string, string> Facts(string? perfVersion)
    {
        var kernel = KernelInfo.Probe();
        var facts = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [HostFacts.KernelRelease] = kernel.Release,
            [HostFacts.PtReclaim] = kernel.PtReclaimText,
            [HostFacts.MatchingDesign] = kernel.MatchingDesign,
            [HostFacts.PageSize] = Environment.SystemPageSize.ToString(CultureInfo.InvariantCulture),
            [HostFacts.Cpus] = Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture),
        };
        Add(facts, HostFacts.ThpEnabled, Selected(Read(Thp + "enabled")));
        Add(facts, HostFacts.ThpDefrag, Selected(Read(Thp + "defrag")));
        Add(facts, HostFacts.ThpShmemEnabled, Selected(Read(Thp + "shmem_enabled")));
        Add(facts, HostFacts.HugePageSize, Read(Thp + "hpage_pmd_size"));
        Add(facts, HostFacts.OvercommitMemory, Read("/proc/sys/vm/overcommit_memory"));
        Add(facts, HostFacts.PerfVersion, perfVersion);
        Add(facts, HostFacts.ReadAheadKb, ReadAhead.KbFor("/")?.ToString(CultureInfo.InvariantCulture));
        Add(facts, HostFacts.ZeroPage, kernel.ZeroPage is { } z ? (z ? "1" : "0") : null);
        Add(facts, HostFacts.ThpUseZeroPage, kernel.Thp is { } thp ? (thp.UseZeroPage ? "1" : "0") : null);
        Add(facts, HostFacts.ExecOnlyPkey, kernel.ExecOnlyPkey ? "1" : "0");
        Add(facts, HostFacts.HugetlbPools, kernel.HugetlbPools is { } pools ? PtLab.Mm.HugetlbPool.Format(pools) : null);
        return facts;
    }

    /// <summary>The bracketed choice of a sysfs selector ("always [madvise] never" gives "madvise").</summary>
    internal static string? Selected(string? text)
    {
        if (text is null)
        {
            return null;
        }

        int open = text.IndexOf('[', StringComparison.Ordinal);
        int close = text.IndexOf(']', StringComparison.Ordinal);
        return open >= 0 && close > open ? text[(open + 1)..close] : text.Trim();
    }

    private static void Add(Dictionary<string, string> facts, string key, string? value)
    {
        if (!string.IsNullOrWhiteSpace(value))
        {
            facts[key] = value.Trim();
        }
    }

    private static string? Read(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
