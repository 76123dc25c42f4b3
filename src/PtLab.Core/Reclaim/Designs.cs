using PtLab.Mm;

namespace PtLab.Reclaim;

/// <summary>The page-table reclaim designs PtLab implements, by their command-line names.</summary>
public static class Designs
{
    private static readonly Dictionary<string, (string Summary, Func<IPageTableReclaim> Create)> s_designs = new()
    {
        ["none"] = ("Linux before 6.14: tables are freed only by munmap and exit", () => new NoReclaim()),
        ["atomic"] = ("the Nov 2021 series: an atomic refcount per PTE table, freed at zero", () => new AtomicReclaim()),
        ["pte-ref"] = ("the seed RFC (Apr 2022): a percpu_ref per PTE table, switched to atomic and freed after DONTNEED, and by reclaim after MADV_FREE", () => new PteRefReclaim()),
        ["pt-reclaim"] = ("upstream 6.14+ CONFIG_PT_RECLAIM: a DONTNEED zap covering a whole empty table frees it", () => new PtReclaim()),
    };

    /// <summary>The known names.</summary>
    public static IReadOnlyCollection<string> Names => s_designs.Keys;

    /// <summary>One line per design, for help texts.</summary>
    public static string Describe() => string.Join("; ", s_designs.Select(kv => $"{kv.Key}: {kv.Value.Summary}"));

    /// <summary>A factory for the design called <paramref name="name"/>, or null if there is none.</summary>
    public static Func<IPageTableReclaim>? Factory(string name) => s_designs.TryGetValue(name, out var d) ? d.Create : null;
}
