using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// Memory given back and taken again at once, the case where freeing tables eagerly costs most:
/// <see cref="Rounds"/> times over <see cref="Size"/> bytes, for each 2 MiB write every page,
/// MADV_DONTNEED the whole 2 MiB in one call, and write every page again.
/// </summary>
/// <remarks>
/// Every table ends populated under every design; a design that frees the table at the DONTNEED
/// pays a table free, a grace period's deferral and a fresh table allocation per 2 MiB per round.
/// </remarks>
public sealed class ReuseScenario : IScenario
{
    /// <summary>Checkpoint after the last round.</summary>
    public const string AfterRounds = "rounds";

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped: a positive multiple of 2 MiB.</param>
    /// <param name="rounds">Passes over the region (at least 1).</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public ReuseScenario(ulong size = 128UL << 20, int rounds = 4, ulong at = 0)
    {
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        if (rounds < 1)
        {
            throw new ArgumentException($"rounds must be at least 1, got {rounds}", nameof(rounds));
        }

        Size = size;
        Rounds = rounds;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "reuse";

    /// <summary>Bytes mapped.</summary>
    public ulong Size { get; }

    /// <summary>Passes over the region.</summary>
    public int Rounds { get; }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["size"] = Size.ToString(CultureInfo.InvariantCulture),
        ["rounds"] = Rounds.ToString(CultureInfo.InvariantCulture),
        ["at"] = Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        ulong chunks = Size / TwoMiB;
        var sw = Stopwatch.StartNew();
        for (int r = 0; r < Rounds; r++)
        {
            for (ulong i = 0; i < chunks; i++)
            {
                ulong q = p + (i * TwoMiB);
                Touch(target, q, TwoMiB, write: true);
                Advise(target, q, TwoMiB, Advice.DontNeed);
                Touch(target, q, TwoMiB, write: true);
            }

            progress?.Invoke((double)(r + 1) / Rounds);
        }

        sw.Stop();
        var after = target.Status();
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = after,
            Checkpoints = [(AfterRounds, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
