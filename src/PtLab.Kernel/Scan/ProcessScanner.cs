using System.Diagnostics;
using System.Globalization;
using PtLab.Reclaim;

namespace PtLab.Kernel.Scan;

/// <summary>Options of one scan.</summary>
public sealed record ScanOptions
{
    /// <summary>Report per-VMA figures.</summary>
    public bool Vmas { get; init; }

    /// <summary>"auto" (PAGEMAP_SCAN where the kernel has it, else the estimate), or a method of <see cref="ScanMethods"/>.</summary>
    public string Method { get; init; } = "auto";

    /// <summary>Whether the target is stopped while it is scanned (recorded in the result; the caller stops it).</summary>
    public bool Frozen { get; init; }

    /// <summary>Test hook: runs after the pagemap file is open and before any page table is read.</summary>
    internal Action? AfterOpen { get; init; }
}

/// <summary>
/// Counts a live process's page tables exactly with two read-only <c>PAGEMAP_SCAN</c> passes (see
/// <see cref="PagemapScanIoctl"/>), or estimates them from pagemap entries and VmPTE on kernels
/// without the ioctl. Never writes to the target.
/// </summary>
public static class ProcessScanner
{
    /// <summary>The end of the x86-64 user address space (4-level paging): VMAs above it ([vsyscall]) have no user page tables.</summary>
    public const ulong UserTop = 0x8000_0000_0000UL;

    private const ulong GiB = 1UL << 30;
    private const int PudShift = 39;
    private const int EINVAL = 22;
    private const int EFAULT = 14;

    /// <summary>Scans <paramref name="pid"/>; throws <see cref="ScanException"/> with the pid, file and reason when it cannot.</summary>
    public static ProcessScan Scan(int pid, ScanOptions? options = null)
    {
        options ??= new ScanOptions();
        if (options.Method is not ("auto" or ScanMethods.PagemapScan or ScanMethods.PagemapEstimate))
        {
            throw new ArgumentException($"unknown scan method '{options.Method}'", nameof(options));
        }

        var sw = Stopwatch.StartNew();
        string dir = $"{ProcFs.Root}/{pid.ToString(CultureInfo.InvariantCulture)}";
        var before = ReadStatus(pid, dir + "/status", firstOpen: true);
        int fd;
        try
        {
            fd = ProcFs.Open(pid, dir + "/pagemap", firstOpen: false);
        }
        catch (ScanException e) when (e.Kind == ScanFailure.Vanished)
        {
            // A zombie keeps its /proc directory but not its mm.
            throw new ScanException(ScanFailure.NoAddressSpace, pid, dir + "/pagemap", "the process has no address space (it exited and is a zombie, or it is exiting)");
        }

        try
        {
            options.AfterOpen?.Invoke();
            var vmas = ReadMaps(pid, dir + "/maps");
            ScanBody body;
            if (options.Method != ScanMethods.PagemapEstimate)
            {
                body = ScanExact(pid, dir + "/pagemap", fd, vmas, options.Method == "auto");
            }
            else
            {
                body = default;
            }

            if (body.Census is null)
            {
                body = Estimate(pid, dir + "/pagemap", fd, vmas);
            }

            var after = ReadStatus(pid, dir + "/status", firstOpen: false);
            var scan = Assemble(pid, before, after, vmas, body, options, sw.Elapsed.TotalSeconds);
            return options.Vmas ? WithVmFlags(pid, dir + "/smaps", scan) : scan;
        }
        finally
        {
            LibC.Close(fd);
        }
    }

    private static ProcessStatus ReadStatus(int pid, string path, bool firstOpen)
    {
        string text = ProcFs.ReadText(pid, path, firstOpen);
        if (!ProcStatus.TryParseProcess(text, out var st, out string? error))
        {
            if (text.Length == 0)
            {
                throw new ScanException(ScanFailure.Vanished, pid, path, "the process exited during the scan (empty status)");
            }

            throw new ScanException(ScanFailure.Malformed, pid, path, error!);
        }

        if (st.IsKernelThread)
        {
            throw new ScanException(ScanFailure.KernelThread, pid, path, $"'{st.Name}' is a kernel thread: it has no user address space to scan");
        }

        if (st.Memory is null)
        {
            throw firstOpen
                ? new ScanException(ScanFailure.NoAddressSpace, pid, path, "the process has no address space (it exited and is a zombie)")
                : new ScanException(ScanFailure.Vanished, pid, path, "the process exited during the scan");
        }

        return st;
    }

    private static List<MapsEntry> ReadMaps(int pid, string path)
    {
        string text = ProcFs.ReadText(pid, path);
        if (!ProcMaps.TryParseEntries(text, out var entries, out string? error))
        {
            throw new ScanException(ScanFailure.Malformed, pid, path, error!);
        }

        entries.RemoveAll(e => e.End > UserTop);
        return entries;
    }

    private readonly record struct ScanBody(
        TableCensus? Census, EstimateCensus? Estimate, bool GuardVisible);

    private static ScanBody ScanExact(int pid, string path, int fd, List<MapsEntry> vmas, bool fallBack)
    {
        var census = new TableCensus(vmas, FreeNowRules.All);
        var buffer = new PageRegion[PagemapScanIoctl.RegionsPerCall];
        bool guard = true;
        bool first = true;
        foreach (var (w, next) in TableCensus.Windows(vmas))
        {
            census.BeginWindow(w, next);
            int err = PagemapScanIoctl.FindTables(fd, w, next, a => census.AddTableRange(a, a + 4096));
            if (err != 0 && first && PagemapScanIoctl.IsUnsupported(err) && fallBack)
            {
                return default; // no PAGEMAP_SCAN on this kernel: the caller estimates instead
            }

            Check(pid, path, err);
            first = false;
            err = PagemapScanIoctl.Scan(fd, w, next, PagemapScanIoctl.PopulatedPass(guard), buffer, census.AddPopulated);
            if (err == EINVAL && guard)
            {
                guard = false; // before Linux 6.15 there is no PAGE_IS_GUARD: markers show as swapped
                err = PagemapScanIoctl.Scan(fd, w, next, PagemapScanIoctl.PopulatedPass(guard), buffer, census.AddPopulated);
            }

            Check(pid, path, err);
            foreach (ulong leaf in census.LeafSlots().ToList())
            {
                err = PagemapScanIoctl.Scan(fd, Math.Max(w, leaf), Math.Min(next, leaf + (2UL << 20)), PagemapScanIoctl.LeafFilePass, buffer, census.AddLeafFile);
                Check(pid, path, err);
            }

            census.EndWindow();
        }

        return new ScanBody(census, null, guard);
    }

    private static void Check(int pid, string path, int errno)
    {
        if (errno == 0 || errno == EFAULT)
        {
            // EFAULT: a range the kernel will not walk (it cannot happen below UserTop); nothing to count there.
            return;
        }

        var e = ProcFs.Failure(pid, path + " (PAGEMAP_SCAN)", errno, firstOpen: false);
        throw e.Kind == ScanFailure.Failed && PagemapScanIoctl.IsUnsupported(errno)
            ? new ScanException(ScanFailure.Failed, pid, path, $"PAGEMAP_SCAN is not supported by this kernel ({LinuxErrno.Describe(errno).Name}; it needs Linux 6.7+): use --method {ScanMethods.PagemapEstimate}")
            : e;
    }

    private static ScanBody Estimate(int pid, string path, int fd, List<MapsEntry> vmas)
    {
        var est = new EstimateCensus(vmas.Count, PagemapEstimator.ZeroPfn());
        PagemapEstimator.Read(pid, path, fd, vmas, est);
        return new ScanBody(null, est, GuardVisible: false);
    }

    private static ProcessScan Assemble(
        int pid, ProcessStatus before, ProcessStatus after, List<MapsEntry> vmas, ScanBody body, ScanOptions options, double seconds)
    {
        long vmPteKb = after.Memory!.Value.VmPteKb;
        long totalTables = vmPteKb / 4;
        var upperHigh = SpanCounts(vmas);
        var inconsistencies = new List<string>();
        if (before.Memory!.Value.VmPteKb != vmPteKb)
        {
            inconsistencies.Add(string.Create(CultureInfo.InvariantCulture,
                $"VmPTE changed during the scan ({before.Memory.Value.VmPteKb:N0} kB -> {vmPteKb:N0} kB): the process was running; use --freeze for a consistent count"));
        }

        if (body.Census is { } c)
        {
            var upperExpected = new Bounds(c.PmdTablesNeeded + c.PudTablesNeeded, upperHigh);
            long upper = totalTables - c.PteTables - c.ThpDeposits;
            if (!upperExpected.Contains(upper))
            {
                inconsistencies.Add(string.Create(CultureInfo.InvariantCulture,
                    $"PMD+PUD tables by subtraction ({totalTables:N0} - {c.PteTables:N0} PTE - {c.ThpDeposits:N0} deposits = {upper:N0}) lie outside [{upperExpected.Low:N0}, {upperExpected.High:N0}]: ") +
                    "the process changed during the scan (use --freeze), or it has tables PAGEMAP_SCAN does not walk (VM_PFNMAP mappings, or tables whose entries are all uffd-wp)");
            }

            var frees = new List<DesignFreeNow>();
            for (int r = 0; r < FreeNowRules.All.Count; r++)
            {
                var rule = FreeNowRules.All[r];
                frees.Add(new DesignFreeNow(rule.Design, c.Frees[r], c.Frees[r] * 4096, rule.Rule));
            }

            return new ProcessScan
            {
                Pid = pid,
                Comm = after.Name,
                Method = ScanMethods.PagemapScan,
                Exact = true,
                Frozen = options.Frozen,
                VmPteKb = vmPteKb,
                PteTables = c.PteTables,
                PteTablesBounds = new Bounds(c.PteTables, c.PteTables),
                EmptyPteTables = c.EmptyPteTables,
                EmptyPteTablesBounds = new Bounds(c.EmptyPteTables, c.EmptyPteTables),
                ZeroPageTables = c.ZeroPageTables,
                MarkerOnlyTables = c.MarkerOnlyTables,
                ThpDeposits = c.ThpDeposits,
                SharedTables = c.SharedTables,
                PopulatedEntries = c.PopulatedEntries,
                UpperTables = upper,
                UpperTablesExpected = upperExpected,
                FreeNow = frees,
                Inconsistencies = inconsistencies,
                Vmas = options.Vmas ? [.. vmas.Select((m, i) => VmaOf(m, c.PerVma[i]))] : null,
                ScanSeconds = Math.Round(seconds, 6),
            };
        }

        var e = body.Estimate!;
        var upperBounds = new Bounds(e.PmdTablesNeeded + e.PudTablesNeeded, upperHigh);

        // Every populated slot has a table (or a THP and its deposit, which pagemap cannot tell apart).
        long pteLow = Math.Max(e.PopulatedSlots, totalTables - upperBounds.High);
        long pteHigh = Math.Max(pteLow, totalTables - upperBounds.Low);
        var empty = new Bounds(pteLow - e.PopulatedSlots, pteHigh - e.PopulatedSlots);
        if (totalTables - upperBounds.Low < e.PopulatedSlots)
        {
            inconsistencies.Add(string.Create(CultureInfo.InvariantCulture,
                $"VmPTE ({totalTables:N0} tables) is less than the populated 2 MiB slots ({e.PopulatedSlots:N0}) plus the upper tables they need ({upperBounds.Low:N0}): the process changed during the scan (use --freeze)"));
        }

        var estFrees = FreeNowRules.All.Select((rule, r) =>
        {
            long t = e.Frees(rule) + (rule.FreesNow(default) ? empty.Low : 0);
            return new DesignFreeNow(rule.Design, t, t * 4096, rule.Rule + " (lower bound: the estimate knows only the fewest empty tables)");
        }).ToList();
        return new ProcessScan
        {
            Pid = pid,
            Comm = after.Name,
            Method = ScanMethods.PagemapEstimate,
            Exact = false,
            Frozen = options.Frozen,
            VmPteKb = vmPteKb,
            PteTables = pteLow,
            PteTablesBounds = new Bounds(pteLow, pteHigh),
            EmptyPteTables = empty.Low,
            EmptyPteTablesBounds = empty,
            ZeroPageTables = e.ZeroPageKnown ? e.ZeroPageTables : null,
            MarkerOnlyTables = e.MarkerOnlyTables,
            ThpDeposits = null,
            SharedTables = e.SharedSlots,
            PopulatedEntries = e.PopulatedEntries,
            UpperTables = totalTables - pteLow,
            UpperTablesExpected = upperBounds,
            FreeNow = estFrees,
            Inconsistencies = inconsistencies,
            Vmas = options.Vmas ? [.. vmas.Select((m, i) => new VmaScan(m.Start, m.End, m.Perms, m.Name, e.PerVmaSlots[i], null, e.ZeroPageKnown ? e.PerVmaZero[i] : null, e.PerVmaMarker[i], 0, e.PerVmaShared[i], e.PerVmaEntries[i]))] : null,
            ScanSeconds = Math.Round(seconds, 6),
        };
    }

    /// <summary>Adds smaps' VmFlags to each VMA (smaps walks every page, so only --vmas reads it); a VMA smaps no longer shows keeps none.</summary>
    private static ProcessScan WithVmFlags(int pid, string path, ProcessScan scan)
    {
        string text = ProcFs.ReadText(pid, path);
        if (!ProcSmaps.TryParse(text, out var smaps, out string? error))
        {
            throw new ScanException(ScanFailure.Malformed, pid, path, error!);
        }

        var byStart = smaps.ToDictionary(s => (s.Vma.Start, s.Vma.End), s => s.VmFlags);
        return scan with
        {
            Vmas = [.. scan.Vmas!.Select(v => byStart.TryGetValue((v.Start, v.End), out var f) ? v with { VmFlags = f } : v)],
            ScanSeconds = scan.ScanSeconds,
        };
    }

    private static VmaScan VmaOf(MapsEntry m, VmaCensus c) =>
        new(m.Start, m.End, m.Perms, m.Name, c.PteTables, c.EmptyPteTables, c.ZeroPageTables, c.MarkerOnlyTables, c.ThpDeposits, c.SharedTables, c.PopulatedEntries);

    /// <summary>The most PMD + PUD tables the VMAs can need: the 1 GiB and 512 GiB spans they overlap.</summary>
    internal static long SpanCounts(IReadOnlyList<MapsEntry> vmas)
    {
        long gibs = 0, puds = 0;
        long lastGib = -1, lastPud = -1;
        foreach (var v in vmas)
        {
            long g0 = (long)(v.Start / GiB), g1 = (long)((v.End - 1) / GiB);
            gibs += g1 - Math.Max(g0, lastGib + 1) + 1 > 0 ? g1 - Math.Max(g0, lastGib + 1) + 1 : 0;
            lastGib = Math.Max(lastGib, g1);
            long p0 = (long)(v.Start >> PudShift), p1 = (long)((v.End - 1) >> PudShift);
            puds += p1 - Math.Max(p0, lastPud + 1) + 1 > 0 ? p1 - Math.Max(p0, lastPud + 1) + 1 : 0;
            lastPud = Math.Max(lastPud, p1);
        }

        return gibs + puds;
    }
}
