namespace PtLab.Mm;

/// <summary><c>/sys/kernel/mm/transparent_hugepage/enabled</c>.</summary>
public enum ThpEnabled
{
    /// <summary><c>always</c>: every eligible anonymous VMA.</summary>
    Always,
    /// <summary><c>madvise</c>: only VMAs with VM_HUGEPAGE (<c>MADV_HUGEPAGE</c>).</summary>
    Madvise,
    /// <summary><c>never</c>.</summary>
    Never,
}

/// <summary><c>/sys/kernel/mm/transparent_hugepage/defrag</c>: when a huge page fault may reclaim to find a block.</summary>
public enum ThpDefrag
{
    /// <summary><c>always</c>: direct reclaim for every THP fault.</summary>
    Always,
    /// <summary><c>defer</c>: only wake kswapd.</summary>
    Defer,
    /// <summary><c>defer+madvise</c>: direct reclaim in VM_HUGEPAGE VMAs, kswapd for the others.</summary>
    DeferMadvise,
    /// <summary><c>madvise</c>: direct reclaim in VM_HUGEPAGE VMAs only.</summary>
    Madvise,
    /// <summary><c>never</c>.</summary>
    Never,
}

/// <summary>
/// The host's transparent huge page mode, the machine-wide settings under
/// <c>/sys/kernel/mm/transparent_hugepage/</c> that decide whether an anonymous fault maps a
/// 2 MiB PMD leaf. A replay passes the recorded host's mode.
/// </summary>
/// <param name="Enabled"><c>enabled</c>.</param>
/// <param name="Defrag"><c>defrag</c>.</param>
/// <param name="UseZeroPage"><c>use_zero_page</c>: a read fault in an eligible range maps the huge zero page.</param>
public sealed record ThpSettings(ThpEnabled Enabled, ThpDefrag Defrag, bool UseZeroPage)
{
    /// <summary>The kernel's usual configuration (and the measured host's): madvise, madvise, use_zero_page 1.</summary>
    public static ThpSettings Default { get; } = new(ThpEnabled.Madvise, ThpDefrag.Madvise, UseZeroPage: true);

    /// <summary>No transparent huge pages.</summary>
    public static ThpSettings Never { get; } = new(ThpEnabled.Never, ThpDefrag.Madvise, UseZeroPage: true);

    /// <summary>The sysfs word of each value, bracketed as the kernel prints the choice.</summary>
    public override string ToString() =>
        $"enabled={Word(Enabled)} defrag={Word(Defrag)} use_zero_page={(UseZeroPage ? 1 : 0)}";

    /// <summary>The sysfs word for <paramref name="e"/>.</summary>
    public static string Word(ThpEnabled e) => e switch
    {
        ThpEnabled.Always => "always",
        ThpEnabled.Madvise => "madvise",
        _ => "never",
    };

    /// <summary>The sysfs word for <paramref name="d"/>.</summary>
    public static string Word(ThpDefrag d) => d switch
    {
        ThpDefrag.Always => "always",
        ThpDefrag.Defer => "defer",
        ThpDefrag.DeferMadvise => "defer+madvise",
        ThpDefrag.Madvise => "madvise",
        _ => "never",
    };

    /// <summary>Parses the text of a sysfs <c>enabled</c> file (the bracketed word, or a bare word).</summary>
    public static ThpEnabled? ParseEnabled(string text) => Selected(text) switch
    {
        "always" => ThpEnabled.Always,
        "madvise" => ThpEnabled.Madvise,
        "never" => ThpEnabled.Never,
        _ => null,
    };

    /// <summary>Parses the text of a sysfs <c>defrag</c> file (the bracketed word, or a bare word).</summary>
    public static ThpDefrag? ParseDefrag(string text) => Selected(text) switch
    {
        "always" => ThpDefrag.Always,
        "defer" => ThpDefrag.Defer,
        "defer+madvise" => ThpDefrag.DeferMadvise,
        "madvise" => ThpDefrag.Madvise,
        "never" => ThpDefrag.Never,
        _ => null,
    };

    private static string Selected(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int open = text.IndexOf('[', StringComparison.Ordinal);
        int close = open < 0 ? -1 : text.IndexOf(']', open);
        return (open >= 0 && close > open ? text[(open + 1)..close] : text).Trim();
    }
}
