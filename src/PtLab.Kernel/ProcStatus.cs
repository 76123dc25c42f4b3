using System.Globalization;
using PtLab.Mm;

namespace PtLab.Kernel;

/// <summary>
/// Reads the memory lines of <c>/proc/PID/status</c> (<c>task_mem()</c> in
/// <c>fs/proc/task_mmu.c</c>) into an <see cref="MmStatus"/>.
/// </summary>
/// <remarks>
/// /proc gives only the sum of all table levels (<c>VmPTE</c> = <c>mm-&gt;pgtables_bytes</c>), so
/// <see cref="MmStatus.Tables"/> is left at zero: no per-level split can be derived honestly.
/// <see cref="TotalTables"/> gives the exact total, every PTE, PMD and PUD table being one 4 KiB page.
/// </remarks>
public static class ProcStatus
{
    /// <summary>The fields read, in the order <c>task_mem()</c> prints them.</summary>
    public static IReadOnlyList<string> Fields { get; } = ["VmSize", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPTE", "VmSwap"];

    /// <summary>Reads <c>/proc/self/status</c> now.</summary>
    public static MmStatus ReadSelf() => Parse(File.ReadAllText("/proc/self/status"));

    /// <summary>Parses status text; throws <see cref="FormatException"/> naming the field that is missing or malformed.</summary>
    public static MmStatus Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryParse(text, out var status, out string? error) ? status : throw new FormatException(error);
    }

    /// <summary>Parses status text; on failure <paramref name="error"/> says which field is missing or malformed.</summary>
    public static bool TryParse(string text, out MmStatus status, out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        status = default;
        var kb = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var rawLine in text.Split('\n'))
        {
            string line = rawLine.TrimEnd('\r');
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }

            string key = line[..colon];
            if (!Fields.Contains(key) && key != "VmLck")
            {
                continue;
            }

            // "VmPTE:\t     240 kB": a decimal count of kB, then the unit.
            var value = line.AsSpan(colon + 1).Trim();
            if (!value.EndsWith(" kB", StringComparison.Ordinal) ||
                !long.TryParse(value[..^3].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long v))
            {
                error = $"/proc status field {key} is not a kB figure: \"{line}\"";
                return false;
            }

            kb[key] = v;
        }

        foreach (string f in Fields)
        {
            if (!kb.ContainsKey(f))
            {
                error = $"/proc status text has no {f} line (a kernel thread, or not Linux 4.5+ status text)";
                return false;
            }
        }

        status = new MmStatus(
            VmSizeKb: kb["VmSize"],
            VmRssKb: kb["VmRSS"],
            RssAnonKb: kb["RssAnon"],
            RssFileKb: kb["RssFile"],
            RssShmemKb: kb["RssShmem"],
            VmSwapKb: kb["VmSwap"],
            VmPteKb: kb["VmPTE"],
            Tables: default)
        {
            VmLckKb = kb.GetValueOrDefault("VmLck"),
        };
        error = null;
        return true;
    }

    /// <summary>
    /// Parses the identity lines of status text (Name, Tgid, Kthread) and, for a process with an mm,
    /// its memory lines. A kernel thread (<c>Kthread: 1</c>, or no memory lines at all) parses with
    /// <see cref="ProcessStatus.Memory"/> null. <paramref name="error"/> names the line that is malformed.
    /// </summary>
    public static bool TryParseProcess(string text, out ProcessStatus status, out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        status = default;
        string? name = null;
        int tgid = -1;
        bool? kthread = null;
        bool anyMemoryLine = false;
        int lineNo = 0;
        foreach (var rawLine in text.Split('\n'))
        {
            lineNo++;
            string line = rawLine.TrimEnd('\r');
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }

            var key = line.AsSpan(0, colon);
            var value = line.AsSpan(colon + 1).Trim();
            if (key is "Name")
            {
                name = value.ToString();
            }
            else if (key is "Tgid")
            {
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out tgid))
                {
                    error = $"line {lineNo}: Tgid is not a number: \"{ProcMaps.Shorten(line)}\"";
                    return false;
                }
            }
            else if (key is "Kthread")
            {
                kthread = value is "1";
            }
            else if (Fields.Contains(key.ToString()))
            {
                anyMemoryLine = true;
            }
        }

        if (name is null || tgid < 0)
        {
            error = $"status text has no {(name is null ? "Name" : "Tgid")} line";
            return false;
        }

        MmStatus? memory = null;
        if (kthread != true && anyMemoryLine)
        {
            if (!TryParse(text, out var mm, out error))
            {
                return false;
            }

            memory = mm;
        }

        status = new ProcessStatus(name, tgid, kthread ?? !anyMemoryLine, memory);
        error = null;
        return true;
    }

    /// <summary>
    /// Page-table pages of all levels together: <c>VmPTE</c> / 4 kB. Exact on x86-64, where PTE,
    /// PMD and PUD tables are each one 4 KiB page and the PGD (and a runtime-folded P4D) is not counted.
    /// </summary>
    public static long TotalTables(MmStatus status) => status.VmPteKb / 4;
}

/// <summary>The lines of <c>/proc/PID/status</c> that say who a process is and what its mm holds.</summary>
/// <param name="Name">The command name (<c>comm</c>).</param>
/// <param name="Tgid">The thread-group id: the process id.</param>
/// <param name="IsKernelThread">A kernel thread, which has no user address space.</param>
/// <param name="Memory">The memory lines; null for a kernel thread (and a zombie, whose mm is gone).</param>
public readonly record struct ProcessStatus(string Name, int Tgid, bool IsKernelThread, MmStatus? Memory);
