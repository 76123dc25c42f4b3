using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// A large sparse region: one page written in every 2 MiB of <see cref="Size"/> bytes (a sparse
/// heap, a hash table of huge buckets, a guest's scattered pages), then each of those pages given
/// back with its own 4 KiB MADV_DONTNEED, then one MADV_DONTNEED over the whole region.
/// </summary>
/// <remarks>
/// The writes build one PTE table per 2 MiB and one PMD table per GiB. A design that frees a table
/// when a zap empties it frees every PTE table at the per-page step, upstream <c>pt-reclaim</c>
/// only at the whole-region step; the PMD tables, which nobody but munmap frees upstream, go only
/// in a design run with <c>--free-pmd</c>.
/// </remarks>
public sealed class SparseReleaseScenario : IScenario
{
    /// <summary>Checkpoint after one page was written in every 2 MiB.</summary>
    public const string AfterTouch = "touched";

    /// <summary>Checkpoint after every written page was given back by its own 4 KiB call.</summary>
    public const string AfterRelease = "released";

    /// <summary>Checkpoint after the MADV_DONTNEED over the whole region.</summary>
    public const string AfterDontNeedAll = "dontneed-all";

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped: a positive multiple of 2 MiB.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public SparseReleaseScenario(ulong size = 4UL << 30, ulong at = 0)
    {
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        Size = size;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "sparse-release";

    /// <summary>Bytes mapped.</summary>
    public ulong Size { get; }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["size"] = Size.ToString(CultureInfo.InvariantCulture),
        ["at"] = Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        var sw = Stopwatch.StartNew();
        for (ulong off = 0; off < Size; off += TwoMiB)
        {
            Touch(target, p + off, Page, write: true);
        }

        var touched = target.Status();
        progress?.Invoke(1.0 / 3);
        for (ulong off = 0; off < Size; off += TwoMiB)
        {
            Advise(target, p + off, Page, Advice.DontNeed);
        }

        var released = target.Status();
        progress?.Invoke(2.0 / 3);
        Advise(target, p, Size, Advice.DontNeed);
        sw.Stop();
        var after = target.Status();
        progress?.Invoke(1);
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = after,
            Checkpoints = [(AfterTouch, touched), (AfterRelease, released), (AfterDontNeedAll, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
