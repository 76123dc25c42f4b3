using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// An allocator that returns memory page by page (the pattern of a database that moved from munmap
/// to per-page MADV_DONTNEED): map <see cref="Size"/> bytes, write all of them, carve them into
/// blocks of 4-64 KiB, then free the blocks in a random order with MADV_DONTNEED, one call per
/// block; after each free, with probability <see cref="ReusePercent"/>/100, one block freed earlier
/// is allocated again (written) and goes back in the queue to be freed later. At the end every
/// block is free.
/// </summary>
/// <remarks>
/// No call covers a whole 2 MiB, so upstream <c>pt-reclaim</c> keeps every table, like <c>none</c>;
/// designs that free a table when its last entry goes free them all.
/// </remarks>
public sealed class PerPageDontNeedScenario : IScenario
{
    /// <summary>Checkpoint after half the frees.</summary>
    public const string AfterHalf = "half";

    /// <summary>Checkpoint after every block was freed.</summary>
    public const string AfterAll = "freed";

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes of the heap: a positive multiple of 2 MiB.</param>
    /// <param name="seed">Seed of the block sizes, the free order and the reuse.</param>
    /// <param name="reusePercent">Chance in percent (0-100) that a free is followed by the reuse of a block freed earlier.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public PerPageDontNeedScenario(ulong size = 256UL << 20, int seed = 1, int reusePercent = 25, ulong at = 0)
    {
        CheckSize(size, TwoMiB, nameof(size));
        CheckPlacement(at, size, nameof(at));
        if (reusePercent is < 0 or > 100)
        {
            throw new ArgumentException($"reusePercent must be between 0 and 100, got {reusePercent}", nameof(reusePercent));
        }

        Size = size;
        Seed = seed;
        ReusePercent = reusePercent;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "per-page-dontneed";

    /// <summary>Bytes of the heap.</summary>
    public ulong Size { get; }

    /// <summary>The seed.</summary>
    public int Seed { get; }

    /// <summary>Chance in percent that a free is followed by a reuse.</summary>
    public int ReusePercent { get; }

    /// <summary>Where the mapping is placed, or 0 for the target's choice.</summary>
    public ulong At { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["size"] = Size.ToString(CultureInfo.InvariantCulture),
        ["seed"] = Seed.ToString(CultureInfo.InvariantCulture),
        ["reuse-percent"] = ReusePercent.ToString(CultureInfo.InvariantCulture),
        ["at"] = Hex(At),
    };

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        var rng = new Random(Seed);
        var blocks = new List<(ulong Start, ulong Length)>();
        for (ulong off = 0; off < Size;)
        {
            ulong len = Math.Min((ulong)rng.Next(1, 17) * Page, Size - off);
            blocks.Add((p + off, len));
            off += len;
        }

        // Fisher-Yates: the order the allocator gives the blocks back.
        for (int i = blocks.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (blocks[i], blocks[j]) = (blocks[j], blocks[i]);
        }

        var sw = Stopwatch.StartNew();
        Touch(target, p, Size, write: true);
        var queue = new Queue<(ulong Start, ulong Length)>(blocks);
        var freed = new List<(ulong Start, ulong Length)>();
        var checkpoints = new List<(string, MmStatus)>();
        long frees = 0;
        long half = blocks.Count / 2;
        long reportEvery = Math.Max(1, blocks.Count / 100);
        while (queue.Count > 0)
        {
            var b = queue.Dequeue();
            Advise(target, b.Start, b.Length, Advice.DontNeed);
            freed.Add(b);
            if (++frees == half)
            {
                checkpoints.Add((AfterHalf, target.Status()));
            }

            if (rng.Next(100) < ReusePercent)
            {
                int k = rng.Next(freed.Count);
                var again = freed[k];
                freed[k] = freed[^1];
                freed.RemoveAt(freed.Count - 1);
                Touch(target, again.Start, again.Length, write: true);
                queue.Enqueue(again);
            }

            if (progress is not null && frees % reportEvery == 0)
            {
                progress(Math.Min(0.99, (double)frees / (blocks.Count * (1 + (ReusePercent / 100.0)))));
            }
        }

        sw.Stop();
        var after = target.Status();
        checkpoints.Add((AfterAll, after));
        progress?.Invoke(1);
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = after,
            Checkpoints = checkpoints,
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
