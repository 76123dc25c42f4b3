using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using static PtLab.Workloads.Scenarios.ScenarioSteps;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// File and shared memory: a file of <see cref="Size"/> bytes, written in full so its pages are in
/// the page cache, mapped private (A) and shared (B), and a shared anonymous mapping (C) of the same
/// size, side by side. Each step leaves a checkpoint; the figures that move are VmPTE, RssFile,
/// RssAnon and RssShmem.
/// </summary>
/// <remarks>
/// <list type="number">
/// <item><c>read-around</c>: one read in every 256 KiB of A, at page 10 of the block: each maps the
/// 16 pages of its fault-around window from the page cache (RssFile).</item>
/// <item><c>private-write</c>: in every block of A, a write at page 2 (mapped read-only by the read:
/// the page is copied out of the file, RssFile to RssAnon) and at page 32 (unmapped: do_cow_fault,
/// one anonymous page, no fault-around).</item>
/// <item><c>shared-write</c>: in every block of B a write at page 0 (do_shared_fault: one page) and a
/// read at page 32 (a fault-around window).</item>
/// <item><c>shmem</c>: every page of C's first half written; one read per block of its second half
/// (a shmem read fault allocates the page; no neighbour is cached to map around it).</item>
/// <item><c>dontneed</c>: MADV_DONTNEED of the first 2 MiB of A, B and C (whole PTE tables) and of
/// 1 MiB of A's second 2 MiB.</item>
/// <item><c>remove</c>: MADV_REMOVE of C's first half beyond its first 2 MiB: the pages leave the
/// shmem file.</item>
/// <item><c>file-remove</c>: MADV_REMOVE of B's second 2 MiB: a hole punched in the file, so its
/// pages leave the page cache and every mapping, A's included, while A's private copies stay.</item>
/// <item><c>refault</c>: the reads of step 1 again, and one read in C's first 2 MiB (its pages were
/// only unmapped: fault-around maps them back).</item>
/// <item><c>munmap</c>: all three unmapped.</item>
/// </list>
/// </remarks>
public sealed class FileMappingScenario : IScenario
{
    /// <summary>The checkpoints, in order.</summary>
    public static IReadOnlyList<string> Steps { get; } =
        ["read-around", "private-write", "shared-write", "shmem", "dontneed", "remove", "file-remove", "refault", "munmap"];

    private const ulong Block = 256 * 1024;

    /// <summary>Creates the scenario.</summary>
    /// <param name="size">Bytes of the file and of each mapping: a positive multiple of 4 MiB.</param>
    /// <param name="at">0 to let the target place the mappings (in one reservation), else a 2 MiB-aligned address for MAP_FIXED_NOREPLACE (the three mappings follow each other from there).</param>
    public FileMappingScenario(ulong size = 8UL << 20, ulong at = 0)
    {
        CheckSize(size, 2 * TwoMiB, nameof(size));
        if (size % (2 * TwoMiB) != 0)
        {
            throw new ArgumentException($"size must be a multiple of 4 MiB, got {size}", nameof(size));
        }

        CheckPlacement(at, 3 * size, nameof(at));
        Size = size;
        At = at;
    }

    /// <inheritdoc/>
    public string Name => "file-mapping";

    /// <summary>Bytes of the file and of each mapping.</summary>
    public ulong Size { get; }

    /// <summary>Where the first mapping is placed, or 0 for the target's choice.</summary>
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
        if (target is not IFileTarget files)
        {
            throw new ScenarioException($"{Name} maps files, which {target.Name} cannot");
        }

        int file = files.CreateFile(Size);
        // Without a placement, reserve the three mappings' room first and map over it.
        var place = At != 0 ? MapFlags.FixedNoReplace : MapFlags.Fixed;
        ulong a = At != 0 ? At : MapAnonymous(target, 3 * Size, 0);
        Map(files, a, MapFlags.Private | place, file);
        ulong b = Map(files, a + Size, MapFlags.Shared | place, file);
        ulong c = Map(files, b + Size, MapFlags.Shared | MapFlags.Anonymous | place, -1);
        var before = target.Status();
        var checkpoints = new List<(string, MmStatus)>();
        var sw = Stopwatch.StartNew();
        void Done(string label)
        {
            checkpoints.Add((label, target.Status()));
            progress?.Invoke((double)checkpoints.Count / Steps.Count);
        }

        EveryBlock(target, a, 10, write: false);
        Done("read-around");
        EveryBlock(target, a, 2, write: true);
        EveryBlock(target, a, 32, write: true);
        Done("private-write");
        EveryBlock(target, b, 0, write: true);
        EveryBlock(target, b, 32, write: false);
        Done("shared-write");
        Touch(target, c, Size / 2, write: true);
        for (ulong off = Size / 2; off < Size; off += Block)
        {
            Touch(target, c + off, Page, write: false);
        }

        Done("shmem");
        Advise(target, a, TwoMiB, Advice.DontNeed);
        Advise(target, a + TwoMiB, TwoMiB / 2, Advice.DontNeed);
        Advise(target, b, TwoMiB, Advice.DontNeed);
        Advise(target, c, TwoMiB, Advice.DontNeed);
        Done("dontneed");
        Advise(target, c + TwoMiB, (Size / 2) - TwoMiB, Advice.Remove);
        Done("remove");
        Advise(target, b + TwoMiB, TwoMiB, Advice.Remove);
        Done("file-remove");
        EveryBlock(target, a, 10, write: false);
        Touch(target, c, Page, write: false);
        Done("refault");
        Unmap(target, a, 3 * Size);
        Done("munmap");
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

    private ulong Map(IFileTarget target, ulong at, MapFlags flags, int file)
    {
        var r = file < 0
            ? target.Mmap(at, Size, Prot.Read | Prot.Write, flags)
            : target.MmapFile(at, Size, Prot.Read | Prot.Write, flags, file, 0);
        if (!r.Ok)
        {
            throw new ScenarioException($"mmap ({flags}) of {Size} bytes{(at != 0 ? $" at 0x{at:x}" : "")} failed on {target.Name}: {r.Error}");
        }

        return r.Address;
    }

    /// <summary>One touch at page <paramref name="page"/> of every 256 KiB block of a mapping.</summary>
    private void EveryBlock(IMemoryTarget target, ulong start, ulong page, bool write)
    {
        for (ulong off = 0; off < Size; off += Block)
        {
            Touch(target, start + off + (page * Page), Page, write);
        }
    }
}
