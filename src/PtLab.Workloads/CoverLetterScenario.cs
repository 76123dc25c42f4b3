using System.Diagnostics;
using PtLab.Mm;

namespace PtLab.Workloads;

/// <summary>
/// The seed cover letter's test: mmap <see cref="Size"/> of anonymous memory, then for each
/// <see cref="Chunk"/> touch every page and madvise it away. It mirrors the <c>cover.c</c> probe.
/// </summary>
public sealed class CoverLetterScenario : IScenario
{
    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped: a positive multiple of <paramref name="chunk"/>.</param>
    /// <param name="chunk">Bytes touched and advised per step: a positive multiple of 4 KiB.</param>
    /// <param name="advice">MADV_DONTNEED or MADV_FREE; MADV_NORMAL means touch only, no madvise (to measure faults alone).</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public CoverLetterScenario(ulong size = 50UL << 30, ulong chunk = 2UL << 20, Advice advice = Advice.DontNeed, ulong at = 0)
    {
        if (chunk == 0 || (chunk & 4095) != 0)
        {
            throw new ArgumentException($"chunk must be a positive multiple of 4 KiB, got {chunk}", nameof(chunk));
        }

        if (size < chunk || size % chunk != 0)
        {
            throw new ArgumentException($"size must be a positive multiple of the chunk ({chunk} bytes), got {size}", nameof(size));
        }

        if (advice is not (Advice.DontNeed or Advice.Free or Advice.Normal))
        {
            throw new ArgumentException($"advice must be dontneed, free or none, got {advice}", nameof(advice));
        }

        Scenarios.ScenarioSteps.CheckPlacement(at, size, nameof(at));
        Size = size;
        Chunk = chunk;
        Advice = advice;
        At = at;
    }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <summary>The checkpoint taken after the loop.</summary>
    public const string AfterLoop = "loop";

    /// <inheritdoc/>
    public string Name => "cover-letter";

    /// <summary>Bytes mapped.</summary>
    public ulong Size { get; }

    /// <summary>Bytes touched and advised per step.</summary>
    public ulong Chunk { get; }

    /// <summary>MADV_DONTNEED or MADV_FREE.</summary>
    public Advice Advice { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["size"] = Size.ToString(),
        ["chunk"] = Chunk.ToString(),
        ["advice"] = Advice switch { Advice.DontNeed => "dontneed", Advice.Free => "free", _ => "none" },
        ["at"] = Scenarios.ScenarioSteps.Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        var flags = MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve | (At != 0 ? MapFlags.FixedNoReplace : 0);
        var map = target.Mmap(At, Size, Prot.Read | Prot.Write, flags);
        if (!map.Ok)
        {
            throw new ScenarioException($"mmap of {Size} bytes failed: {map.Error}");
        }

        var before = target.Status();
        ulong steps = Size / Chunk;
        ulong reportEvery = Math.Max(1, steps / 200);
        var sw = Stopwatch.StartNew();
        for (ulong i = 0; i < steps; i++)
        {
            ulong q = map.Address + (i * Chunk);
            var touch = target.TouchPages(q, Chunk, write: true);
            if (!touch.Ok)
            {
                throw new ScenarioException($"touching chunk {i} at 0x{q:x} failed: {touch}");
            }

            var err = Advice == Advice.Normal ? Errno.None : target.Madvise(q, Chunk, Advice);
            if (err != Errno.None)
            {
                throw new ScenarioException($"madvise of chunk {i} at 0x{q:x} failed: {err}");
            }

            if (progress is not null && i % reportEvery == 0)
            {
                progress((double)i / steps);
            }
        }

        sw.Stop();
        progress?.Invoke(1);
        var after = target.Status();
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
