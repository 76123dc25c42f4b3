using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// The <c>halves.c</c> probe: map <see cref="Size"/> bytes 2 MiB aligned; for each 2 MiB, write every
/// page and then madvise it away in <see cref="CallsPer2M"/> equal MADV_DONTNEED calls; then one
/// DONTNEED over everything; then read the first 128 MiB (or all of a smaller mapping: the shared
/// zero page) and DONTNEED that range.
/// </summary>
/// <remarks>
/// It separates the reclaim designs. Upstream <c>pt-reclaim</c> frees a PTE table only when one zap
/// call covers its whole 2 MiB, so N = 1 frees every table and N = 2 or 512 free none until the
/// full-range call; <c>none</c> frees no table at all; zero-page tables are freed by a zap only
/// under <c>pt-reclaim</c>. See KERNEL-FACTS.md for the kernel's figures.
/// </remarks>
public sealed class HalvesScenario : IScenario
{
    /// <summary>Checkpoint after the per-2 MiB touch-and-advise loop.</summary>
    public const string AfterLoop = "loop";

    /// <summary>Checkpoint after one DONTNEED over the whole mapping.</summary>
    public const string AfterFullDontNeed = "full-dontneed";

    /// <summary>Checkpoint after read-touching the first 128 MiB (zero-page entries).</summary>
    public const string AfterZeroPageRead = "zero-read";

    /// <summary>Checkpoint after the DONTNEED of the zero-page range.</summary>
    public const string AfterZeroPageDontNeed = "zero-dontneed";

    /// <summary>The most read-touched in the zero-page phase: 64 PTE tables.</summary>
    public const ulong ZeroPageBytes = 128UL << 20;

    /// <summary>Creates the scenario.</summary>
    /// <param name="callsPer2M">MADV_DONTNEED calls per 2 MiB; must divide 512 so each call covers whole pages.</param>
    /// <param name="size">Bytes mapped: a positive multiple of 2 MiB.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public HalvesScenario(int callsPer2M, ulong size = 2UL << 30, ulong at = 0)
    {
        if (callsPer2M <= 0 || 512 % callsPer2M != 0)
        {
            throw new ArgumentException($"callsPer2M must divide 512 (1, 2, 4, ..., 512), got {callsPer2M}", nameof(callsPer2M));
        }

        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        CallsPer2M = callsPer2M;
        Size = size;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "halves";

    /// <summary>MADV_DONTNEED calls per 2 MiB chunk.</summary>
    public int CallsPer2M { get; }

    /// <summary>Bytes mapped.</summary>
    public ulong Size { get; }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["calls-per-2m"] = CallsPer2M.ToString(CultureInfo.InvariantCulture),
        ["size"] = Size.ToString(CultureInfo.InvariantCulture),
        ["at"] = Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        var checkpoints = new List<(string, MmStatus)>();
        ulong chunks = Size / TwoMiB;
        ulong step = TwoMiB / (ulong)CallsPer2M;
        ulong reportEvery = Math.Max(1, chunks / 100);
        var sw = Stopwatch.StartNew();
        for (ulong i = 0; i < chunks; i++)
        {
            ulong q = p + (i * TwoMiB);
            Touch(target, q, TwoMiB, write: true);
            for (int c = 0; c < CallsPer2M; c++)
            {
                Advise(target, q + ((ulong)c * step), step, Advice.DontNeed);
            }

            if (progress is not null && i % reportEvery == 0)
            {
                progress(0.9 * i / chunks);
            }
        }

        checkpoints.Add((AfterLoop, target.Status()));
        Advise(target, p, Size, Advice.DontNeed);
        checkpoints.Add((AfterFullDontNeed, target.Status()));
        ulong zero = Math.Min(Size, ZeroPageBytes);
        Touch(target, p, zero, write: false);
        checkpoints.Add((AfterZeroPageRead, target.Status()));
        Advise(target, p, zero, Advice.DontNeed);
        checkpoints.Add((AfterZeroPageDontNeed, target.Status()));
        sw.Stop();
        progress?.Invoke(1);
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = target.Status(),
            Checkpoints = checkpoints,
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
