using PtLab.Mm;

namespace PtLab.Reclaim;

/// <summary>How to build a design: its options, and the protocol break a tester asks for.</summary>
public sealed record DesignOptions
{
    /// <summary>
    /// For designs that switch a table's reference to atomic mode after MADV_DONTNEED: switch a
    /// table that could not be freed back to percpu mode (the seed's patch 14), or leave it atomic.
    /// </summary>
    public bool SwitchBack { get; init; } = true;

    /// <summary>A break of the design's protocol that the systematic tester must catch; <see cref="Mutation.None"/> normally.</summary>
    public Mutation Mutation { get; init; }

    /// <summary>
    /// For designs that free PTE tables inside the zap: MADV_DONTNEED also frees each PMD table it
    /// left empty (<c>--free-pmd</c>; see <c>MmStruct.FreeEmptyPmdTables</c>). Ignored by the others.
    /// </summary>
    public bool FreePmd { get; init; }

    /// <summary>The <c>scanner</c> design: scan passes a table must go unmodified before it is freed (0: any pass after the one that modified it).</summary>
    public int ScanDelay { get; init; }

    /// <summary>The <c>scanner</c> design: scan an address space every this many madvise calls as well as under memory pressure (0: never by period).</summary>
    public int ScanPeriod { get; init; }
}

/// <summary>
/// The page-table reclaim designs PtLab implements, by their command-line names: the one place
/// that knows which designs exist, what options and mutations each takes, and how to build one.
/// </summary>
public static class Designs
{
    /// <summary>Linux before 6.14, which frees tables only in munmap and exit: the baseline every ratio is to, and the default.</summary>
    public const string Baseline = "none";

    /// <summary>The seed RFC's design, which the checker and the soak explore by default.</summary>
    public const string Seed = "pte-ref";

    // Upstream's CONFIG_PT_RECLAIM.
    private const string Upstream = "pt-reclaim";

    /// <summary>The design whose tables a background thread reclaims (<see cref="Kscand"/>).</summary>
    public const string Scanner = "scanner";

    // Mutations of the address space rather than of a design apply to every design.
    private static readonly Mutation[] s_everyDesign = [Mutation.None, Mutation.SkipGatherFlush, Mutation.SkipTableFlush];

    // Breaks of the PMD-table free, for the designs that take --free-pmd; they need it on.
    private static readonly Mutation[] s_pmdFreeMutations = [Mutation.SkipPudRecheck, Mutation.SkipPmdRcu];

    private static readonly Design[] s_designs =
    [
        new(
            Baseline,
            "Linux before 6.14: tables are freed only by munmap and exit",
            _ => new NoReclaim(),
            []),
        new(
            "atomic",
            "the Nov 2021 series: an atomic refcount per PTE table, freed at zero",
            o => new AtomicReclaim
            {
                SkipTryGetForTesting = o.Mutation == Mutation.SkipTryGet,
                SkipTrackClearForTesting = o.Mutation == Mutation.SkipTrackClear,
                SkipRcuDeferralForTesting = o.Mutation == Mutation.SkipRcuDeferral,
            },
            [Mutation.SkipTryGet, Mutation.SkipTrackClear, Mutation.SkipRcuDeferral]),
        new(
            Seed,
            "the seed RFC (Apr 2022): a percpu_ref per PTE table, switched to atomic and freed after DONTNEED, and by reclaim after MADV_FREE",
            o => new PteRefReclaim
            {
                SwitchBack = o.SwitchBack,
                SkipTryGetForTesting = o.Mutation == Mutation.SkipTryGet,
                SkipTrackClearForTesting = o.Mutation == Mutation.SkipTrackClear,
                SkipRcuDeferralForTesting = o.Mutation == Mutation.SkipRcuDeferral,
                SkipSwitchGracePeriodForTesting = o.Mutation == Mutation.SkipSwitchGracePeriod,
            },
            [Mutation.SkipTryGet, Mutation.SkipTrackClear, Mutation.SkipRcuDeferral, Mutation.SkipSwitchGracePeriod],
            o => [new("switchBack", o.SwitchBack ? "on" : "off")]),
        new(
            Upstream,
            "upstream 6.14+ CONFIG_PT_RECLAIM: a DONTNEED zap covering a whole empty table frees it",
            o => new PtReclaim { SkipPmdRecheckForTesting = o.Mutation == Mutation.SkipPmdRecheck, FreesPmdTables = PmdFreeing(o) },
            [Mutation.SkipPmdRecheck, .. s_pmdFreeMutations],
            FreePmdReported,
            TakesFreePmd: true),
        new(
            "occupancy",
            "Qi's Aug 2022 RFC: a plain count per PTE table of mapped and zero-page entries under the PTE lock; any zap that leaves only zero-page entries frees the table",
            o => new OccupancyReclaim
            {
                SkipPmdRecheckForTesting = o.Mutation == Mutation.SkipPmdRecheck,
                SkipTrackClearForTesting = o.Mutation == Mutation.SkipTrackClear,
                SkipCountRecheckForTesting = o.Mutation == Mutation.SkipCountRecheck,
                FreesPmdTables = PmdFreeing(o),
            },
            [Mutation.SkipPmdRecheck, Mutation.SkipTrackClear, Mutation.SkipCountRecheck, .. s_pmdFreeMutations],
            FreePmdReported,
            TakesFreePmd: true),
        new(
            "pte-ref-batched",
            "the seed's pte_ref with the switch to atomic started asynchronously: the switches of one madvise call share one grace period, and a table that stays atomic is freed at once when it empties",
            o => new PteRefBatchedReclaim
            {
                SkipTryGetForTesting = o.Mutation == Mutation.SkipTryGet,
                SkipTrackClearForTesting = o.Mutation == Mutation.SkipTrackClear,
                SkipRcuDeferralForTesting = o.Mutation == Mutation.SkipRcuDeferral,
                SkipSwitchGracePeriodForTesting = o.Mutation == Mutation.SkipSwitchGracePeriod,
                SkipSwitchConfirmForTesting = o.Mutation == Mutation.SkipSwitchConfirm,
            },
            [Mutation.SkipTryGet, Mutation.SkipTrackClear, Mutation.SkipRcuDeferral, Mutation.SkipSwitchGracePeriod, Mutation.SkipSwitchConfirm]),
        new(
            Scanner,
            "Hildenbrand's asynchronous reclaim: a background scanner reads tables locklessly under RCU and frees the empty and zero-page-only ones after the locked recheck, under memory pressure (and by period); zaps keep pt-reclaim's whole-table rule",
            o => new ScannerReclaim
            {
                ScanDelay = o.ScanDelay,
                ScanPeriod = o.ScanPeriod,
                SkipPmdRecheckForTesting = o.Mutation == Mutation.SkipPmdRecheck,
                SkipScanRecheckForTesting = o.Mutation == Mutation.SkipScanRecheck,
                SkipScanPmdSameForTesting = o.Mutation == Mutation.SkipScanPmdSame,
            },
            [Mutation.SkipPmdRecheck, Mutation.SkipScanRecheck, Mutation.SkipScanPmdSame],
            o => [new("scanDelay", o.ScanDelay.ToString(System.Globalization.CultureInfo.InvariantCulture)), new("scanPeriod", o.ScanPeriod.ToString(System.Globalization.CultureInfo.InvariantCulture))],
            Background: true),
    ];

    /// <summary>The known names.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. s_designs.Select(d => d.Name)];

    /// <summary>One line per design, for help texts.</summary>
    public static string Describe() => string.Join("; ", s_designs.Select(d => $"{d.Name}: {d.Summary}"));

    /// <summary>
    /// A factory for the design called <paramref name="name"/> built with <paramref name="options"/>
    /// (the defaults when null), or null if there is no such design.
    /// </summary>
    /// <exception cref="ArgumentException">The options ask for a mutation the design does not have.</exception>
    public static Func<IPageTableReclaim>? Factory(string name, DesignOptions? options = null)
    {
        if (Find(name) is not { } design)
        {
            return null;
        }

        var o = options ?? new DesignOptions();
        if (!design.Supports(o.Mutation))
        {
            throw new ArgumentException($"mutation {Mutations.NameOf(o.Mutation)} does not apply to design {name}", nameof(options));
        }

        if (s_pmdFreeMutations.Contains(o.Mutation) && !o.FreePmd)
        {
            throw new ArgumentException($"mutation {Mutations.NameOf(o.Mutation)} breaks the PMD-table free: it needs --free-pmd", nameof(options));
        }

        o = o with { FreePmd = o.FreePmd && design.TakesFreePmd };

        return () => design.Create(o);
    }

    /// <summary>Whether the design called <paramref name="name"/> frees empty PMD tables with <see cref="DesignOptions.FreePmd"/>.</summary>
    public static bool TakesFreePmd(string name) => Find(name)?.TakesFreePmd == true;

    /// <summary>Whether <paramref name="mutation"/> only applies with <see cref="DesignOptions.FreePmd"/>.</summary>
    public static bool NeedsFreePmd(Mutation mutation) => s_pmdFreeMutations.Contains(mutation);

    /// <summary>Whether <paramref name="mutation"/> can be applied to the design called <paramref name="name"/>.</summary>
    public static bool Supports(string name, Mutation mutation) => Find(name) is { } d && d.Supports(mutation);

    /// <summary>
    /// Whether the design called <paramref name="name"/> has a background thread (<see cref="Kscand"/>)
    /// that a run must give a CPU, or idle time, to do its work.
    /// </summary>
    public static bool RunsInBackground(string name) => Find(name) is { Background: true };

    /// <summary>The options the design called <paramref name="name"/> takes, as a run reports them (camelCase keys).</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> ReportedOptions(string name, DesignOptions options) =>
        Find(name)?.Reported?.Invoke(options) ?? [];

    /// <summary>
    /// The design that behaves like a kernel: upstream's <c>pt-reclaim</c> where
    /// <paramref name="ptReclaim"/> (Linux 6.14+ with <c>CONFIG_PT_RECLAIM=y</c>), else the baseline.
    /// </summary>
    public static string MatchingKernel(bool ptReclaim) => ptReclaim ? Upstream : Baseline;

    private static Design? Find(string name) => Array.Find(s_designs, d => d.Name == name);

    private static PmdTableFreeing? PmdFreeing(DesignOptions o) => o.FreePmd
        ? new PmdTableFreeing(SkipRecheckForTesting: o.Mutation == Mutation.SkipPudRecheck, SkipRcuForTesting: o.Mutation == Mutation.SkipPmdRcu)
        : null;

    // Reported only when on, so that the runs without it report what they always did.
    private static KeyValuePair<string, string>[] FreePmdReported(DesignOptions o) => o.FreePmd ? [new("freePmd", "on")] : [];

    private sealed record Design(
        string Name,
        string Summary,
        Func<DesignOptions, IPageTableReclaim> Create,
        Mutation[] Mutations,
        Func<DesignOptions, KeyValuePair<string, string>[]>? Reported = null,
        bool TakesFreePmd = false,
        bool Background = false)
    {
        public bool Supports(Mutation m) => s_everyDesign.Contains(m) || Mutations.Contains(m);
    }
}
