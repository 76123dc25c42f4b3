using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// Read-touch <see cref="Size"/> bytes of fresh private anonymous memory, so every entry maps the
/// shared zero page (tables, but no RSS), then MADV_DONTNEED the whole range.
/// </summary>
/// <remarks>
/// The read allocates one PTE table per 2 MiB under every design. The DONTNEED frees them under
/// <c>pt-reclaim</c> (zero-page entries are zapped like any other) and keeps them under <c>none</c>.
/// </remarks>
public sealed class ZeroPageScenario : IScenario
{
    /// <summary>Checkpoint after the read-touch.</summary>
    public const string AfterRead = "read";

    /// <summary>Checkpoint after the DONTNEED.</summary>
    public const string AfterDontNeed = "dontneed";

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped and read: a positive multiple of 2 MiB.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public ZeroPageScenario(ulong size = 128UL << 20, ulong at = 0)
    {
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        Size = size;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "zero-page";

    /// <summary>Bytes mapped and read.</summary>
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
        Touch(target, p, Size, write: false);
        var read = target.Status();
        progress?.Invoke(0.5);
        Advise(target, p, Size, Advice.DontNeed);
        var advised = target.Status();
        sw.Stop();
        progress?.Invoke(1);
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = advised,
            Checkpoints = [(AfterRead, read), (AfterDontNeed, advised)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
