using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// MADV_FREE churn under a memory limit: for each 2 MiB of <see cref="Size"/> bytes, write every
/// page and give it back with MADV_FREE in <see cref="Piece"/>-sized calls, as jemalloc and tcmalloc
/// purge. The pages stay mapped until the machine runs short of memory; then reclaim discards them,
/// which empties their tables. Meant for a RAM well below <see cref="Size"/>.
/// </summary>
/// <remarks>
/// Only designs that free tables from the reclaim path (the seed's <c>pte-ref</c>, and the
/// <c>occupancy</c> design's reclaim hook) free those tables; a MADV_FREE zaps nothing.
/// </remarks>
public sealed class MadvFreePressureScenario : IScenario
{
    /// <summary>Checkpoint after the loop.</summary>
    public const string AfterLoop = "loop";

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped: a positive multiple of 2 MiB.</param>
    /// <param name="piece">Bytes per MADV_FREE call: a multiple of 4 KiB dividing 2 MiB.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public MadvFreePressureScenario(ulong size = 256UL << 20, ulong piece = 64UL << 10, ulong at = 0)
    {
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        CheckPiece(piece, nameof(piece));

        Size = size;
        Piece = piece;
        At = at;
    }

    /// <summary>The RAM this scenario is meant for when none is given: a quarter of its size, and at least 16 MiB.</summary>
    public ulong DefaultRam => Math.Max(Size / 4, 16UL << 20);

    /// <inheritdoc/>
    public string Name => "madvfree-pressure";

    /// <summary>Bytes mapped.</summary>
    public ulong Size { get; }

    /// <summary>Bytes per MADV_FREE call.</summary>
    public ulong Piece { get; }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["size"] = Size.ToString(CultureInfo.InvariantCulture),
        ["piece"] = Piece.ToString(CultureInfo.InvariantCulture),
        ["at"] = Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        ulong chunks = Size / TwoMiB;
        ulong reportEvery = Math.Max(1, chunks / 100);
        var sw = Stopwatch.StartNew();
        for (ulong i = 0; i < chunks; i++)
        {
            ulong q = p + (i * TwoMiB);
            Touch(target, q, TwoMiB, write: true);
            for (ulong off = 0; off < TwoMiB; off += Piece)
            {
                Advise(target, q + off, Piece, Advice.Free);
            }

            if (progress is not null && i % reportEvery == 0)
            {
                progress((double)i / chunks);
            }
        }

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
            Checkpoints = [(AfterLoop, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
