using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// A virtual machine's pattern: migration (or a guest's kdump) reads all of <see cref="Size"/>
/// bytes of guest memory the balloon had given back, so every entry maps the shared zero page; then
/// the balloon inflates again and gives the memory back in <see cref="Piece"/>-sized
/// MADV_DONTNEED calls.
/// </summary>
/// <remarks>
/// The read fills one PTE table per 2 MiB under every design. Upstream <c>pt-reclaim</c> frees a
/// zero-page table only when one call zaps all of it, which pieces smaller than 2 MiB never do.
/// </remarks>
public sealed class ZeroPageFillScenario : IScenario
{
    /// <summary>Checkpoint after the read of the whole region.</summary>
    public const string AfterRead = "read";

    /// <summary>Checkpoint after the balloon gave every piece back.</summary>
    public const string AfterBalloon = "balloon";

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped and read: a positive multiple of 2 MiB.</param>
    /// <param name="piece">Bytes per MADV_DONTNEED call: a multiple of 4 KiB dividing 2 MiB.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public ZeroPageFillScenario(ulong size = 256UL << 20, ulong piece = 64UL << 10, ulong at = 0)
    {
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        CheckPiece(piece, nameof(piece));

        Size = size;
        Piece = piece;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "zeropage-fill";

    /// <summary>Bytes mapped and read.</summary>
    public ulong Size { get; }

    /// <summary>Bytes per MADV_DONTNEED call.</summary>
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
        var sw = Stopwatch.StartNew();
        Touch(target, p, Size, write: false);
        var read = target.Status();
        progress?.Invoke(0.5);
        for (ulong off = 0; off < Size; off += Piece)
        {
            Advise(target, p + off, Piece, Advice.DontNeed);
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
            Checkpoints = [(AfterRead, read), (AfterBalloon, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
