namespace PtLab.Reclaim;

/// <summary>What a scan of a live process saw in one PTE table (or in the 2 MiB a THP maps).</summary>
/// <param name="Present">Present entries, the shared zero page included.</param>
/// <param name="ZeroPage">Present entries that map the shared zero page.</param>
/// <param name="Swapped">Non-present, non-none entries: swap, migration and marker entries (guard markers included).</param>
/// <param name="Guard">Guard-region markers (<c>MADV_GUARD_INSTALL</c>); a subset of <paramref name="Swapped"/>.</param>
/// <param name="IsThpDeposit">
/// The 2 MiB is mapped by an anonymous PMD leaf (a THP or the huge zero page): no PTE table is in use,
/// but the one deposited beside the leaf is counted in VmPTE.
/// </param>
public readonly record struct ScannedTable(int Present, int ZeroPage, int Swapped, int Guard, bool IsThpDeposit)
{
    /// <summary>Entries that are not <c>pte_none</c>.</summary>
    public int Populated => Present + Swapped;

    /// <summary>The table's state, the input of every <see cref="FreeNowRule"/>.</summary>
    public ScannedTableState State =>
        IsThpDeposit ? ScannedTableState.ThpDeposit
        : Populated == 0 ? ScannedTableState.Empty
        : Swapped == 0 && Present == ZeroPage ? ScannedTableState.ZeroPageOnly
        : Present == 0 && Swapped == Guard ? ScannedTableState.MarkerOnly
        : ScannedTableState.Populated;
}

/// <summary>The states a scanned table can be in, as far as freeing it goes.</summary>
public enum ScannedTableState
{
    /// <summary>All 512 entries are <c>pte_none</c>.</summary>
    Empty,

    /// <summary>Every populated entry maps the shared zero page.</summary>
    ZeroPageOnly,

    /// <summary>Every populated entry is a guard marker.</summary>
    MarkerOnly,

    /// <summary>At least one entry maps a page or holds a swap or migration entry.</summary>
    Populated,

    /// <summary>A table deposited beside an anonymous PMD leaf.</summary>
    ThpDeposit,
}

/// <summary>
/// How one design would treat a live process's tables as they are now: which of them it would have
/// freed already (or free at once), and the rule in one line.
/// </summary>
/// <param name="Design">The design's name, as in <see cref="Designs.Names"/>.</param>
/// <param name="Rule">The rule in one line, for reports.</param>
/// <param name="FreesNow">Whether the design frees a table in this state now.</param>
public sealed record FreeNowRule(string Design, string Rule, Func<ScannedTable, bool> FreesNow);

/// <summary>
/// The one place that says, per design, which tables of a scanned live process that design would free
/// now. Reports of <c>ptlab scan</c> and the exporter take every figure of "what each design would
/// free" from here; a new design adds its row here.
/// </summary>
public static class FreeNowRules
{
    private static readonly FreeNowRule[] s_rules =
    [
        new("none", "Linux before 6.14: no table is freed before munmap or exit", static _ => false),
        new("atomic", "frees a table when its last entry goes: every empty table; zero-page, marker-only and THP-deposit tables stay",
            static t => t.State == ScannedTableState.Empty),
        new("pte-ref", "frees a table when its percpu_ref drops to zero after DONTNEED or reclaim: every empty table; zero-page, marker-only and THP-deposit tables stay",
            static t => t.State == ScannedTableState.Empty),
        new("pt-reclaim", "frees a table only while one MADV_DONTNEED covers its whole 2 MiB: none of the tables already empty now, until such a call",
            static _ => false),
        new("occupancy", "frees a table when a zap leaves only zero-page entries in it: every empty table; zero-page-only tables stay until a zap touches them",
            static t => t.State == ScannedTableState.Empty),
        new("pte-ref-batched", "frees a table when its percpu_ref, switched to atomic after DONTNEED or MADV_FREE, drops to zero: every empty table; zero-page, marker-only and THP-deposit tables stay",
            static t => t.State == ScannedTableState.Empty),
        new("scanner", "its background scanner frees, at its next pass, every empty or zero-page-only table (once unmodified for its delay); marker-only and THP-deposit tables stay",
            static t => t.State is ScannedTableState.Empty or ScannedTableState.ZeroPageOnly),
    ];

    /// <summary>Every rule, in report order.</summary>
    public static IReadOnlyList<FreeNowRule> All => s_rules;

    /// <summary>The rule of <paramref name="design"/>, or null when it has none yet.</summary>
    public static FreeNowRule? For(string design) => Array.Find(s_rules, r => r.Design == design);
}
