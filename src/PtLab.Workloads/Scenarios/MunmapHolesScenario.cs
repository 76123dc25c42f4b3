using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>One munmap of <see cref="MunmapHolesScenario"/>, with the table outcome <c>free_pgtables</c> must give.</summary>
/// <param name="Label">The checkpoint label.</param>
/// <param name="Start">First address unmapped.</param>
/// <param name="Length">Bytes unmapped.</param>
/// <param name="PteTablesFreed">PTE tables the floor/ceiling rule frees.</param>
/// <param name="PmdTablesFreed">PMD tables freed, or null where that depends on mappings outside the scenario's.</param>
/// <param name="Why">The floor and ceiling that decide it.</param>
public sealed record MunmapStep(string Label, ulong Start, ulong Length, int PteTablesFreed, int? PmdTablesFreed, string Why);

/// <summary>
/// Map a region, write every page, then munmap pieces of it so that the floor/ceiling rule of
/// <c>free_pgtables</c> decides which tables stay: a table is freed only when no neighbouring VMA
/// still maps through it. munmap frees tables this way under every design, so the model and the
/// kernel must agree on every step.
/// </summary>
/// <remarks>
/// <para><c>free_pgd_range(addr, end, floor, ceiling)</c> rounds <c>addr</c> down and <c>ceiling</c>
/// down to the table's span, and skips the first table if it starts below <c>floor</c> (the end of
/// the VMA before) and the last if it reaches past <c>ceiling</c> (the start of the VMA after).</para>
/// <para>With b the 2 MiB-aligned base, the steps (see <see cref="Plan"/>) are:</para>
/// <list type="number">
/// <item>[b+0.5M, b+1.5M): a 1 MiB hole inside one PTE table. floor b+0.5M and ceiling b+1.5M lie in
/// that table, so it stays: 0 tables freed.</item>
/// <item>[b+1.5M, b+2M): the rest of that table after the hole. [b, b+0.5M) still maps through it
/// (floor b+0.5M): 0 freed.</item>
/// <item>[b, b+0.5M): its last piece. The floor is now the end of a VMA below b, the ceiling b+2M:
/// the table is freed (1). The PMD table stays: [b+2M, ...) maps through it.</item>
/// <item>[b+4M, b+6M): a whole aligned 2 MiB between neighbours ending and starting exactly at its
/// edges: its table is freed (1).</item>
/// <item>[b+9M, b+11M): straddles the boundary at b+10M. Both tables keep a neighbour's 1 MiB
/// (floor b+9M, ceiling b+11M): 0 freed.</item>
/// <item>[b+8M, b+9M): the other half of the first straddled table. floor b+8M; the ceiling b+11M
/// rounds down to b+10M, past the hole: that table is freed (1); [b+10M, b+12M) keeps its table.</item>
/// <item>[g, g+1G), g the first 1 GiB boundary at or above b+16M, when the region reaches g+1G:
/// floor g and ceiling g+1G are its own edges, so its 512 PTE tables and its PMD table are freed;
/// the PUD table stays for the neighbours.</item>
/// <item>[b, b+size): everything left. Every remaining PTE table is freed; a PMD or PUD table is
/// freed unless a mapping outside the scenario's shares it (none does when the region was placed
/// in an empty 512 GiB slot).</item>
/// </list>
/// </remarks>
public sealed class MunmapHolesScenario : IScenario
{
    /// <summary>Checkpoint after writing every page.</summary>
    public const string AfterTouch = "touched";

    /// <summary>The smallest size: the first six steps use the first 12 MiB, and the 1 GiB step starts at b+16M or later.</summary>
    public const ulong MinimumSize = 16UL << 20;

    private const ulong HalfMiB = 512UL << 10;
    private const ulong OneMiB = 1UL << 20;

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes mapped: a multiple of 2 MiB, at least <see cref="MinimumSize"/>. The 1 GiB step runs
    /// when the region holds a whole aligned GiB from b+16M on, which any size of 2 GiB + 16 MiB or more guarantees.</param>
    /// <param name="at">0 to let the target place the mapping, else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE.</param>
    public MunmapHolesScenario(ulong size = 3UL << 30, ulong at = 0)
    {
        CheckSize(size, MinimumSize, nameof(size));
        CheckPlacement(at, size, nameof(at));
        Size = size;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "munmap-holes";

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

    /// <summary>The munmap steps for a region of <paramref name="size"/> bytes mapped at <paramref name="mapBase"/>.</summary>
    public static IReadOnlyList<MunmapStep> Plan(ulong mapBase, ulong size)
    {
        CheckSize(size, MinimumSize, nameof(size));
        if ((mapBase & (TwoMiB - 1)) != 0)
        {
            throw new ArgumentException($"mapBase must be 2 MiB aligned, got 0x{mapBase:x}", nameof(mapBase));
        }

        ulong b = mapBase;
        var steps = new List<MunmapStep>
        {
            new("hole-1m-inside-2m", b + HalfMiB, OneMiB, 0, 0, "floor b+0.5M and ceiling b+1.5M both inside the table"),
            new("rest-after-hole", b + HalfMiB + OneMiB, HalfMiB, 0, 0, "[b, b+0.5M) still maps through the table (floor b+0.5M)"),
            // When b+2M is a 1 GiB boundary the PMD table holds nothing of the region past it, and
            // whether it goes too depends on what else the process maps below b in that GiB.
            new("last-piece-of-2m", b, HalfMiB, 1, ((b + TwoMiB) & (OneGiB - 1)) == 0 ? null : 0,
                "no neighbour left in [b, b+2M): floor below b, ceiling b+2M"),
            new("aligned-2m", b + (4 * OneMiB), TwoMiB, 1, 0, "floor and ceiling are the range's own 2 MiB edges"),
            new("straddle-2m-boundary", b + (9 * OneMiB), TwoMiB, 0, 0, "each table keeps a neighbour's 1 MiB (floor b+9M, ceiling b+11M)"),
            new("first-half-of-straddle", b + (8 * OneMiB), OneMiB, 1, 0, "floor b+8M; ceiling b+11M rounds down to b+10M"),
        };

        int remaining = (int)(size / TwoMiB) - 3;
        ulong g = (b + MinimumSize + OneGiB - 1) & ~(OneGiB - 1);
        if (g + OneGiB <= b + size)
        {
            steps.Add(new("aligned-1g", g, OneGiB, 512, 1, "floor g and ceiling g+1G are the range's own 1 GiB edges"));
            remaining -= 512;
        }

        steps.Add(new("everything-left", b, size, remaining, null, "all PTE tables; upper tables unless a mapping outside shares them"));
        return steps;
    }

    /// <inheritdoc/>
    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        ulong p = MapAnonymous(target, Size, At);
        var before = target.Status();
        var sw = Stopwatch.StartNew();
        var checkpoints = new List<(string, MmStatus)>();
        Touch(target, p, Size, write: true);
        checkpoints.Add((AfterTouch, target.Status()));
        var plan = Plan(p, Size);
        for (int i = 0; i < plan.Count; i++)
        {
            Unmap(target, plan[i].Start, plan[i].Length);
            checkpoints.Add((plan[i].Label, target.Status()));
            progress?.Invoke((i + 1.0) / plan.Count);
        }

        sw.Stop();
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = checkpoints[^1].Item2,
            Checkpoints = checkpoints,
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
