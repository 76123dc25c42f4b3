using System.Globalization;
using System.Text.Json;

namespace PtLab.Traces;

/// <summary>
/// What a trace says about itself and the host it was recorded on: the Parquet footer's key-value
/// metadata (<c>ptlab.trace.*</c>, <c>ptlab.host.*</c>, <c>ptlab.note.*</c>).
/// </summary>
public sealed record TraceMetadata
{
    /// <summary>How the trace was made: "record" (a command run under ptlab record), "attach" (ptlab record -p) or "import" (from perf script text).</summary>
    public string Source { get; init; } = "record";

    /// <summary>The recorded command line (empty for an attach or an import).</summary>
    public IReadOnlyList<string> Command { get; init; } = [];

    /// <summary>The process the recording started from (the command, or the attached pid), when known.</summary>
    public int? RootPid { get; init; }

    /// <summary>The root process's wait status (exit code × 256, or the terminating signal), when it ended while recorded.</summary>
    public int? ExitStatus { get; init; }

    /// <summary>The interval of the periodic status samples in milliseconds (none for an import).</summary>
    public int? IntervalMs { get; init; }

    /// <summary>The recording was stopped before the command ended (Ctrl-C, or a duration): the last events are missing.</summary>
    public bool Truncated { get; init; }

    /// <summary>perf lost events (<see cref="LostEvents"/> &gt; 0), or the trace is known to miss some for another reason: figures derived from it are lower bounds.</summary>
    public bool Incomplete { get; init; }

    /// <summary>Events perf reported lost.</summary>
    public long LostEvents { get; init; }

    /// <summary>
    /// The recorder read the ranges of every process_madvise call (<see cref="TraceEventKind.MadviseRange"/>
    /// rows). False for an attached recording (no filter can be put into a running process), an
    /// import (perf has only the iovec's address) and a version 1 trace: there the calls are counted, not replayed.
    /// </summary>
    public bool ProcessMadviseRanges { get; init; }

    /// <summary>
    /// Which files' page-cache residency the trace holds (<see cref="TraceEventKind.FileCache"/> rows):
    /// <see cref="PageCacheMapped"/> (every regular file, when it first appeared: at exec for the
    /// layout, at the entry of the first mmap of it otherwise), <see cref="PageCacheLayout"/> (only
    /// the files of the layouts read at exec or attach: an attached recording, or one whose
    /// seccomp filter could not be installed) or <see cref="PageCacheNone"/> (an import, a trace
    /// before version 4): a file without a row replays as cold.
    /// </summary>
    public string PageCache { get; init; } = PageCacheNone;

    /// <summary><see cref="PageCache"/>: every mapped regular file's residency when it first appeared.</summary>
    public const string PageCacheMapped = "mapped";

    /// <summary><see cref="PageCache"/>: the residency of the files of the initial layouts only.</summary>
    public const string PageCacheLayout = "layout";

    /// <summary><see cref="PageCache"/>: no residency recorded.</summary>
    public const string PageCacheNone = "none";

    /// <summary>
    /// Whether the trace holds the page-cache changes after each file first appeared
    /// (<see cref="TraceEventKind.CacheAdd"/> and <see cref="TraceEventKind.CacheDelete"/> rows, from
    /// version 5): <see cref="PageCacheChangesRecorded"/> (every folio added to or deleted from the
    /// cache of a file the tree mapped, by any process, from the moment the file first appeared) or
    /// <see cref="PageCacheChangesNone"/> (not recorded: an import, an older trace, a recording
    /// without system-wide tracepoints); without them the residency is the one of each file's first
    /// appearance, changed only by the replay's own faults.
    /// </summary>
    public string PageCacheChanges { get; init; } = PageCacheChangesNone;

    /// <summary><see cref="PageCacheChanges"/>: recorded.</summary>
    public const string PageCacheChangesRecorded = "recorded";

    /// <summary><see cref="PageCacheChanges"/>: not recorded.</summary>
    public const string PageCacheChangesNone = "none";

    /// <summary>
    /// Whether the recorder could read the folio orders of the cached runs (<c>/proc/kpageflags</c>,
    /// root only): false when its <see cref="TraceEventKind.CacheRange"/> rows carry none and the
    /// replay takes them as order-0 pages; null where the trace does not say (before version 5).
    /// </summary>
    public bool? FolioOrders { get; init; }

    /// <summary>The format version of the file read (<see cref="TraceSchema.Version"/> for a trace written now).</summary>
    public int Version { get; init; } = TraceSchema.Version;

    /// <summary>Facts about the host the trace was recorded on (<c>ptlab.host.*</c>): see <see cref="HostFacts"/> for the keys.</summary>
    public IReadOnlyDictionary<string, string> Host { get; init; } = new Dictionary<string, string>();

    /// <summary>Free-form notes (<c>ptlab.note.*</c>): perf's version, importer counts, recorder warnings.</summary>
    public IReadOnlyDictionary<string, string> Notes { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// The note of an attached recording that counts the anonymous pages the process had swapped
    /// out at the attach (its <see cref="TraceEventKind.Resident"/> rows with
    /// <see cref="TraceKinds.PageIsSwapped"/>): the replay gives its machine the swap to hold them.
    /// </summary>
    public const string AttachSwappedPagesNote = "attach_swapped_pages";

    /// <summary>
    /// The file systems of the mapped files (<c>ptlab.fs.MAJ:MIN.*</c>, from version 3): for each
    /// device a mapping row names, what the recording host's mount table said of it. A device
    /// missing here was not found (or the trace predates version 3).
    /// </summary>
    public IReadOnlyDictionary<DeviceNumber, FileSystemFact> FileSystems { get; init; } = new Dictionary<DeviceNumber, FileSystemFact>();

    internal Dictionary<string, string> ToKeyValues(long rows, string checksum)
    {
        var kv = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [TraceKeys.Version] = TraceSchema.Version.ToString(CultureInfo.InvariantCulture),
            [TraceKeys.Checksum] = checksum,
            [TraceKeys.Rows] = rows.ToString(CultureInfo.InvariantCulture),
            [TraceKeys.Source] = Source,
            [TraceKeys.Command] = JsonSerializer.Serialize(Command),
            [TraceKeys.Truncated] = Truncated ? "true" : "false",
            [TraceKeys.Incomplete] = Incomplete ? "true" : "false",
            [TraceKeys.LostEvents] = LostEvents.ToString(CultureInfo.InvariantCulture),
            [TraceKeys.ProcessMadviseRanges] = ProcessMadviseRanges ? "true" : "false",
            [TraceKeys.PageCache] = PageCache,
            [TraceKeys.PageCacheChanges] = PageCacheChanges,
        };
        if (FolioOrders is { } orders)
        {
            kv[TraceKeys.FolioOrders] = orders ? "true" : "false";
        }

        if (RootPid is { } root)
        {
            kv[TraceKeys.RootPid] = root.ToString(CultureInfo.InvariantCulture);
        }

        if (ExitStatus is { } status)
        {
            kv[TraceKeys.ExitStatus] = status.ToString(CultureInfo.InvariantCulture);
        }

        if (IntervalMs is { } interval)
        {
            kv[TraceKeys.IntervalMs] = interval.ToString(CultureInfo.InvariantCulture);
        }

        foreach (var (k, v) in Host)
        {
            kv[TraceKeys.HostPrefix + k] = v;
        }

        foreach (var (k, v) in Notes)
        {
            kv[TraceKeys.NotePrefix + k] = v;
        }

        foreach (var (dev, fs) in FileSystems)
        {
            string prefix = TraceKeys.FsPrefix + dev + ".";
            kv[prefix + "type"] = fs.Type;
            kv[prefix + "options"] = fs.Options;
            if (fs.ReadAheadKb is { } ra)
            {
                kv[prefix + "read_ahead_kb"] = ra.ToString(CultureInfo.InvariantCulture);
            }
        }

        return kv;
    }

    /// <summary>Parses footer metadata; on failure <paramref name="error"/> names the key.</summary>
    internal static TraceMetadata? FromKeyValues(IReadOnlyDictionary<string, string> kv, out string? error)
    {
        error = null;
        if (!kv.TryGetValue(TraceKeys.Version, out string? version))
        {
            error = $"no '{TraceKeys.Version}' metadata: not a PtLab trace (or rewritten by a tool that dropped its metadata)";
            return null;
        }

        if (!int.TryParse(version, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < TraceSchema.MinVersion || v > TraceSchema.Version ||
            version != v.ToString(CultureInfo.InvariantCulture))
        {
            error = $"trace format version '{Trim(version)}'; this ptlab reads versions {TraceSchema.MinVersion} to {TraceSchema.Version}";
            return null;
        }

        string? Get(string key) => kv.TryGetValue(key, out string? v) ? v : null;

        bool? Bool(string key)
        {
            switch (Get(key))
            {
                case "true": return true;
                case "false": return false;
                default:
                    return null;
            }
        }

        long? Long(string key, bool required, long min, long max, ref string? err)
        {
            string? v = Get(key);
            if (v is null)
            {
                if (required)
                {
                    err ??= $"metadata '{key}' is missing";
                }

                return null;
            }

            if (!long.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long x) || x < min || x > max)
            {
                err ??= $"metadata '{key}' is '{Trim(v)}', not an integer in [{min}, {max}]";
                return null;
            }

            return x;
        }

        var truncated = Bool(TraceKeys.Truncated);
        var incomplete = Bool(TraceKeys.Incomplete);
        if (truncated is null || incomplete is null)
        {
            error = $"metadata '{(truncated is null ? TraceKeys.Truncated : TraceKeys.Incomplete)}' must be 'true' or 'false'";
            return null;
        }

        // Version 1 has no such key (and no ranges); from version 2 it is required.
        var ranges = v == 1 && Get(TraceKeys.ProcessMadviseRanges) is null ? false : Bool(TraceKeys.ProcessMadviseRanges);
        if (ranges is null)
        {
            error = $"metadata '{TraceKeys.ProcessMadviseRanges}' must be 'true' or 'false'";
            return null;
        }

        // Before version 4 there is no such key (and no residency); from version 4 it is required.
        string? pageCache = v < 4 && Get(TraceKeys.PageCache) is null ? PageCacheNone : Get(TraceKeys.PageCache);
        if (pageCache is not (PageCacheMapped or PageCacheLayout or PageCacheNone))
        {
            error = $"metadata '{TraceKeys.PageCache}' is '{Trim(pageCache ?? "")}', not {PageCacheMapped}, {PageCacheLayout} or {PageCacheNone}";
            return null;
        }

        // Before version 5 there are no such keys (and no changes); from version 5 the first is required.
        string? changes = v < 5 && Get(TraceKeys.PageCacheChanges) is null ? PageCacheChangesNone : Get(TraceKeys.PageCacheChanges);
        if (changes is not (PageCacheChangesRecorded or PageCacheChangesNone))
        {
            error = $"metadata '{TraceKeys.PageCacheChanges}' is '{Trim(changes ?? "")}', not {PageCacheChangesRecorded} or {PageCacheChangesNone}";
            return null;
        }

        bool? folioOrders = Get(TraceKeys.FolioOrders) is null ? null : Bool(TraceKeys.FolioOrders);
        if (Get(TraceKeys.FolioOrders) is { } fo && folioOrders is null)
        {
            error = $"metadata '{TraceKeys.FolioOrders}' is '{Trim(fo)}', not true or false";
            return null;
        }

        long? lost = Long(TraceKeys.LostEvents, true, 0, long.MaxValue, ref error);
        long? root = Long(TraceKeys.RootPid, false, 1, int.MaxValue, ref error);
        long? status = Long(TraceKeys.ExitStatus, false, 0, 0xffff, ref error);
        long? interval = Long(TraceKeys.IntervalMs, false, 1, int.MaxValue, ref error);
        string? source = Get(TraceKeys.Source);
        if (source is not ("record" or "attach" or "import"))
        {
            error ??= $"metadata '{TraceKeys.Source}' is '{Trim(source ?? "")}', not record, attach or import";
        }

        string[]? command = null;
        try
        {
            command = JsonSerializer.Deserialize<string[]>(Get(TraceKeys.Command) ?? "[]");
        }
        catch (JsonException)
        {
        }

        if (command is null || command.Any(c => c is null))
        {
            error ??= $"metadata '{TraceKeys.Command}' is not a JSON array of strings";
        }

        if (error is not null)
        {
            return null;
        }

        var fileSystems = FileSystemsOf(kv, ref error);
        if (error is not null)
        {
            return null;
        }

        if (lost > 0 && incomplete == false)
        {
            error = $"metadata says {lost} events were lost but the trace is not marked incomplete";
            return null;
        }

        return new TraceMetadata
        {
            Source = source!,
            Command = command!,
            RootPid = (int?)root,
            ExitStatus = (int?)status,
            IntervalMs = (int?)interval,
            Truncated = truncated.Value,
            Incomplete = incomplete.Value,
            LostEvents = lost!.Value,
            ProcessMadviseRanges = ranges.Value,
            PageCache = pageCache,
            PageCacheChanges = changes,
            FolioOrders = folioOrders,
            Version = v,
            Host = Prefixed(kv, TraceKeys.HostPrefix),
            Notes = Prefixed(kv, TraceKeys.NotePrefix),
            FileSystems = fileSystems,
        };
    }

    /// <summary>The <c>ptlab.fs.MAJ:MIN.{type,options,read_ahead_kb}</c> keys: every device with a type, nothing else under the prefix.</summary>
    private static Dictionary<DeviceNumber, FileSystemFact> FileSystemsOf(IReadOnlyDictionary<string, string> kv, ref string? error)
    {
        var types = new Dictionary<DeviceNumber, string>();
        var options = new Dictionary<DeviceNumber, string>();
        var readAhead = new Dictionary<DeviceNumber, int>();
        foreach (var (key, value) in kv)
        {
            if (!key.StartsWith(TraceKeys.FsPrefix, StringComparison.Ordinal))
            {
                continue;
            }

            string rest = key[TraceKeys.FsPrefix.Length..];
            int dot = rest.IndexOf('.', StringComparison.Ordinal);
            if (dot < 0 || !DeviceNumber.TryParse(rest[..dot], out var dev))
            {
                error ??= $"metadata '{Trim(key)}': not ptlab.fs.MAJ:MIN.FIELD with a hex device";
                continue;
            }

            switch (rest[(dot + 1)..])
            {
                case "type" when value.Length is > 0 and <= 64 && !value.Any(char.IsWhiteSpace):
                    types[dev] = value;
                    break;
                case "options" when value.Length <= 4096:
                    options[dev] = value;
                    break;
                case "read_ahead_kb" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int kb) && kb <= 1 << 20:
                    readAhead[dev] = kb;
                    break;
                default:
                    error ??= $"metadata '{Trim(key)}' is '{Trim(value)}': not a file system type, its options or read_ahead_kb";
                    break;
            }
        }

        foreach (var dev in options.Keys.Concat(readAhead.Keys).Where(d => !types.ContainsKey(d)))
        {
            error ??= $"metadata '{TraceKeys.FsPrefix}{dev}.*' has no type";
        }

        return types.ToDictionary(p => p.Key, p => new FileSystemFact(p.Value, options.GetValueOrDefault(p.Key, ""), readAhead.TryGetValue(p.Key, out int ra) ? ra : null));
    }

    private static Dictionary<string, string> Prefixed(IReadOnlyDictionary<string, string> kv, string prefix) =>
        kv.Where(p => p.Key.StartsWith(prefix, StringComparison.Ordinal) && p.Key.Length > prefix.Length)
          .ToDictionary(p => p.Key[prefix.Length..], p => p.Value, StringComparer.Ordinal);

    internal static string Trim(string s) => s.Length <= 40 ? s : s[..40] + "...";
}

/// <summary>The host fact keys (<c>ptlab.host.KEY</c>) the recorder writes.</summary>
public static class HostFacts
{
    /// <summary><c>uname -r</c>.</summary>
    public const string KernelRelease = "kernel_release";
    /// <summary><c>CONFIG_PT_RECLAIM</c>: y, n or unknown.</summary>
    public const string PtReclaim = "config_pt_reclaim";
    /// <summary>The model design that behaves like the host kernel (none or pt-reclaim).</summary>
    public const string MatchingDesign = "matching_design";
    /// <summary>/sys/kernel/mm/transparent_hugepage/enabled: always, madvise or never.</summary>
    public const string ThpEnabled = "thp_enabled";
    /// <summary>/sys/kernel/mm/transparent_hugepage/defrag.</summary>
    public const string ThpDefrag = "thp_defrag";
    /// <summary>/sys/kernel/mm/transparent_hugepage/shmem_enabled.</summary>
    public const string ThpShmemEnabled = "thp_shmem_enabled";
    /// <summary>/sys/kernel/mm/transparent_hugepage/hpage_pmd_size in bytes.</summary>
    public const string HugePageSize = "hpage_pmd_size";
    /// <summary>/proc/sys/vm/overcommit_memory: 0, 1 or 2.</summary>
    public const string OvercommitMemory = "overcommit_memory";
    /// <summary>The base page size in bytes.</summary>
    public const string PageSize = "page_size";
    /// <summary>Online CPUs.</summary>
    public const string Cpus = "cpus";
    /// <summary><c>perf --version</c>.</summary>
    public const string PerfVersion = "perf_version";
    /// <summary><c>read_ahead_kb</c> of the block device holding the root file system: the readahead window of file faults.</summary>
    public const string ReadAheadKb = "read_ahead_kb";
    /// <summary>
    /// 1 where a read fault on private anonymous memory maps the shared zero page, 0 where it takes a
    /// private page, as measured by the recorder; absent: 1.
    /// </summary>
    public const string ZeroPage = "zero_page";
    /// <summary>
    /// /sys/kernel/mm/transparent_hugepage/use_zero_page as the host behaves: 0 where a read fault
    /// in a huge-page range was measured to take a private huge page; absent: 1.
    /// </summary>
    public const string ThpUseZeroPage = "thp_use_zero_page";

    /// <summary>
    /// 1 where PROT_EXEC-only mappings get the execute-only protection key (a CPU with protection
    /// keys enabled), so data access there is SEGV_PKUERR, as measured by the recorder; absent: 0.
    /// </summary>
    public const string ExecOnlyPkey = "exec_only_pkey";

    /// <summary>
    /// The hugetlb page sizes, the default first, each with the pages a reservation could still
    /// take when the recording began (free less reserved, plus overcommit room), from
    /// <c>/sys/kernel/mm/hugepages/</c>: <c>SHIFT:PAGES</c> comma-separated ("21:0,30:0"); absent:
    /// unknown (recorded before it was kept).
    /// </summary>
    public const string HugetlbPools = "hugetlb_pools";
}

/// <summary>A device number (<c>st_dev</c>) as the trace's <c>dev</c> column and mount tables give it: major and minor.</summary>
/// <param name="Major">The major number.</param>
/// <param name="Minor">The minor number.</param>
public readonly record struct DeviceNumber(uint Major, uint Minor)
{
    /// <summary>Parses hex <c>major:minor</c> (the <c>dev</c> column's form, "fe:00").</summary>
    public static bool TryParse(string? text, out DeviceNumber dev)
    {
        dev = default;
        int colon = text?.IndexOf(':', StringComparison.Ordinal) ?? -1;
        if (colon <= 0 || colon > 8 || text!.Length - colon - 1 is <= 0 or > 8
            || !uint.TryParse(text.AsSpan(0, colon), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint major)
            || !uint.TryParse(text.AsSpan(colon + 1), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint minor))
        {
            return false;
        }

        dev = new DeviceNumber(major, minor);
        return true;
    }

    /// <summary>Hex <c>major:minor</c>, two digits at least each (as /proc/PID/maps writes it).</summary>
    public override string ToString() => $"{Major:x2}:{Minor:x2}";
}

/// <summary>
/// What the recording host's mount table (<c>/proc/self/mountinfo</c>) said of a device that
/// holds mapped files: its file system type, its super block options, and its block device's
/// <c>read_ahead_kb</c> where it has one.
/// </summary>
/// <param name="Type">The file system type ("ext4", "xfs", "tmpfs", "btrfs", …).</param>
/// <param name="Options">The super block options, comma-separated ("rw,size=…,huge=within_size"), or empty.</param>
/// <param name="ReadAheadKb">The device's <c>read_ahead_kb</c>, or null where it has no block device.</param>
public sealed record FileSystemFact(string Type, string Options, int? ReadAheadKb);
