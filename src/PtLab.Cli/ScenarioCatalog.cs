using System.CommandLine;
using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;

namespace PtLab.Cli;

/// <summary>How a command wants a scenario built: CPUs and placement come from the common options.</summary>
/// <param name="Cpus">CPUs of the machine (and, for multi-CPU scenarios, CPUs running the workload).</param>
/// <param name="At">0 to let the target place the mapping, else the address for MAP_FIXED_NOREPLACE.</param>
internal readonly record struct ScenarioArgs(int Cpus, ulong At);

/// <summary>One built-in scenario as a subcommand: its options, and how to build it from a parse.</summary>
internal sealed class ScenarioDef
{
    public required string Name { get; init; }

    public string[] Aliases { get; init; } = [];

    public required string Description { get; init; }

    public required Option[] Options { get; init; }

    public required Func<ParseResult, ScenarioArgs, IScenario> Create { get; init; }

    /// <summary>Whether the scenario can run on the host kernel (single-CPU system calls and touches only).</summary>
    public bool KernelCapable { get; init; } = true;

    public int DefaultCpus { get; init; } = 1;

    /// <summary>
    /// A small run of the same scenario with the same choices (advice, calls, CPUs), used to warm the
    /// JIT and the heap before timed runs; the scenario itself when there is no smaller one.
    /// </summary>
    public Func<IScenario, IScenario> WarmUp { get; init; } = s => s;

    /// <summary>What a built scenario maps and keeps resident at its peak, for the host-memory guard.</summary>
    public required Func<IScenario, ScenarioFootprint> Footprint { get; init; }

    /// <summary>The simulated RAM a built scenario is meant for when --ram is not given; null for the usual default.</summary>
    public Func<IScenario, ulong?> DefaultRam { get; init; } = _ => null;

    /// <summary>Measured runs per design that <c>ptlab compare</c> makes when --trials is not given.</summary>
    public int DefaultTrials { get; init; } = 3;

    /// <summary>Why <see cref="DefaultTrials"/> is not the usual 3, for the option's help.</summary>
    public string DefaultTrialsWhy { get; init; } = "";
}

/// <summary>The built-in scenarios. Each call makes fresh option objects, so every parent command gets its own.</summary>
internal static class ScenarioCatalog
{
    private const ulong TwoMiB = 2UL << 20;

    public static IReadOnlyList<ScenarioDef> All() =>
        [CoverLetter(), Halves(), ZeroPage(), MunmapHoles(), Mixed(), FileMapping(), PerPageDontNeed(), MadvFreePressure(), ZeroPageFill(), Reuse(), SparseRelease(), Production()];

    /// <summary>The scenarios' names, for help and error texts.</summary>
    public static IReadOnlyList<string> Names { get; } = [.. All().Select(d => d.Name)];

    /// <summary>
    /// Refuses a mapping that cannot fit in x86-64's 128 TiB user address space (4-level paging):
    /// mmap places it between mmap_min_addr and mmap_base, TASK_SIZE less the 128 MiB stack gap.
    /// </summary>
    public static void CheckMappingSize(ulong size, string option, string? text)
    {
        const ulong largest = MmStruct.DefaultMmapBase - MmStruct.MmapMinAddr;
        if (size > largest)
        {
            throw new UsageException(
                $"{option} {text} does not fit in the 128 TiB user address space of x86-64 (4-level paging), " +
                "which also holds the 128 MiB stack gap: give a smaller size");
        }
    }

    private static ScenarioDef Production()
    {
        var scale = new Option<string>("--scale") { Description = "Fraction of the seed's sizes (VIRT 55 TiB, RES 590 GiB): above 0, at most 2.", DefaultValueFactory = _ => "1" };
        var arenas = new Option<int>("--arenas") { Description = "Allocator arenas (1-4096); VIRT is the sum of their peaks.", DefaultValueFactory = _ => 64 };
        var visits = new Option<int>("--visits") { Description = "Bursts per arena (1-64), each to a higher peak.", DefaultValueFactory = _ => 2 };
        var purge = new Option<string>("--purge") { Description = "How dirty extents are purged after the decay: dontneed (MADV_DONTNEED) or free (MADV_FREE).", DefaultValueFactory = _ => "dontneed" };
        purge.AcceptOnlyFromAmong("dontneed", "free");
        var decay = new Option<int>("--decay") { Description = "Bursts a freed extent stays dirty (and reusable as is) before it is purged (0-1000).", DefaultValueFactory = _ => 2 };
        var seed = new Option<int>("--seed") { Description = "Seed of the size choices.", DefaultValueFactory = _ => 1 };
        return new ScenarioDef
        {
            Name = "production",
            Description =
                "The seed's production process (VIRT 55 TiB, RES 590 GiB, VmPTE 110 GiB under none), times --scale: a jemalloc-like " +
                "extent allocator (size classes, dirty extents reused, purged after --decay bursts, address space retained, never " +
                "unmapped) serving bursts in --arenas arenas. Simulated RAM defaults to what the run needs. Model only.",
            Options = [scale, arenas, visits, purge, decay, seed],
            KernelCapable = false,
            Footprint = s => s is ProductionScenario ps ? new(ps.VirtTarget, ps.PeakPopulatedBytes, ps.TableHostBytes) : default,
            // Room for the written pages and the tables (a PTE table per 2 MiB of VIRT), so reclaim never runs.
            DefaultRam = s => s is ProductionScenario ps
                ? (ps.PeakPopulatedBytes + (ps.VirtTarget / 256) + (1UL << 30)) & ~((1UL << 20) - 1)
                : null,
            WarmUp = s => s is ProductionScenario ps
                ? new ProductionScenario(Math.Min(ps.Scale, 0.0005), Math.Min(ps.Arenas, 8), 1, ps.Purge, ps.Decay, ps.Seed)
                : s,
            // A full-size run takes minutes per design, and what the scenario shows (tables, VmPTE,
            // RSS on one CPU) does not change from trial to trial: one measured run per design, so
            // compare costs what the designs' single runs cost.
            DefaultTrials = 1,
            DefaultTrialsWhy = "a full-size run takes minutes per design and its tables and VmPTE are the same in every trial; give 3 or more for timing medians",
            Create = (p, a) =>
            {
                string text = p.GetValue(scale)!;
                if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double sc) || !(sc > 0 && sc <= 2))
                {
                    throw new UsageException($"--scale must be a number above 0 and at most 2, got '{text}'");
                }

                int ar = p.GetValue(arenas), vi = p.GetValue(visits), de = p.GetValue(decay);
                if (ar is < 1 or > 4096)
                {
                    throw new UsageException($"--arenas must be between 1 and 4096, got {ar}");
                }

                if (vi is < 1 or > 64)
                {
                    throw new UsageException($"--visits must be between 1 and 64, got {vi}");
                }

                if (de is < 0 or > 1000)
                {
                    throw new UsageException($"--decay must be between 0 and 1000, got {de}");
                }

                if (a.At != 0)
                {
                    throw new UsageException("--at: the production scenario maps many chunks where the model places them");
                }

                return new ProductionScenario(sc, ar, vi, p.GetValue(purge) == "free" ? Advice.Free : Advice.DontNeed, de, p.GetValue(seed));
            },
        };
    }

    private static ScenarioDef CoverLetter()
    {
        var size = new Option<string>("--size") { Description = "Bytes to map (K/M/G/T suffixes).", DefaultValueFactory = _ => "50G" };
        var chunk = new Option<string>("--chunk") { Description = "Bytes touched then advised per step.", DefaultValueFactory = _ => "2M" };
        var advice = new Option<string>("--advice")
        {
            Description =
                "dontneed (MADV_DONTNEED: pages and, with a freeing design, tables go at once), free (MADV_FREE: pages stay until " +
                "reclaim discards them, and reclaim runs only when simulated RAM runs short, so give a --ram below --size; pte-ref " +
                "then frees the emptied tables), or none (touch only: measures faults alone).",
            DefaultValueFactory = _ => "dontneed",
        };
        advice.AcceptOnlyFromAmong("dontneed", "free", "none");
        return new ScenarioDef
        {
            Name = "cover-letter",
            Description =
                "The seed cover letter's test: mmap --size of private anonymous memory (MAP_NORESERVE), then for each " +
                "--chunk touch every page and madvise it with --advice. Prints VmSize/VmRSS/VmPTE before and after, " +
                "shaped like the cover letter's table.",
            Options = [size, chunk, advice],
            Footprint = s => s is CoverLetterScenario c
                ? new(c.Size, c.Advice == Advice.DontNeed ? c.Chunk : c.Size)
                : default,
            WarmUp = s => s is CoverLetterScenario c
                ? new CoverLetterScenario(Math.Max(1, Math.Min(c.Size / c.Chunk, 32)) * c.Chunk, c.Chunk, c.Advice)
                : s,
            Create = (p, a) =>
            {
                ulong s = Cli.Size(p.GetValue(size), "--size");
                CheckMappingSize(s, "--size", p.GetValue(size));
                ulong c = Cli.Size(p.GetValue(chunk), "--chunk");
                if (c == 0 || c % 4096 != 0)
                {
                    throw new UsageException($"--chunk must be a positive multiple of 4K, got '{p.GetValue(chunk)}'");
                }

                if (s < c || s % c != 0)
                {
                    throw new UsageException($"--size must be a positive multiple of --chunk, got '{p.GetValue(size)}' and '{p.GetValue(chunk)}'");
                }

                CheckAt(a.At, s);
                var adv = p.GetValue(advice) switch { "free" => Advice.Free, "none" => Advice.Normal, _ => Advice.DontNeed };
                return new CoverLetterScenario(s, c, adv, a.At);
            },
        };
    }

    private static ScenarioDef Halves()
    {
        var calls = new Option<int>("--calls")
        {
            Description = "MADV_DONTNEED calls per 2 MiB (each covers 2M/N); must divide 512. Upstream pt-reclaim frees a table only when one call covers all of it.",
            Required = true,
        };
        var size = new Option<string>("--size") { Description = "Bytes to map: a multiple of 2M.", DefaultValueFactory = _ => "2G" };
        return new ScenarioDef
        {
            Name = "halves",
            Description =
                "The halves probe: for each 2 MiB write every page, then MADV_DONTNEED it in --calls equal calls; then one " +
                "DONTNEED over everything; then read the first 128 MiB (shared zero page) and DONTNEED it. Checkpoints: " +
                "loop, full-dontneed, zero-read, zero-dontneed.",
            Options = [calls, size],
            Footprint = s => s is HalvesScenario h ? new(h.Size, TwoMiB) : default, // each 2 MiB is written, then DONTNEEDed
            WarmUp = s => s is HalvesScenario h ? new HalvesScenario(h.CallsPer2M, Math.Min(h.Size, 32UL << 20)) : s,
            Create = (p, a) =>
            {
                int n = p.GetValue(calls);
                if (n <= 0 || 512 % n != 0)
                {
                    throw new UsageException($"--calls must divide 512 (1, 2, 4, ..., 512), got {n}");
                }

                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                CheckAt(a.At, s);
                return new HalvesScenario(n, s, a.At);
            },
        };
    }

    private static ScenarioDef ZeroPage()
    {
        var size = new Option<string>("--size") { Description = "Bytes to map and read: a multiple of 2M.", DefaultValueFactory = _ => "128M" };
        return new ScenarioDef
        {
            Name = "zeropage",
            Aliases = ["zero-page"],
            Description =
                "Read-touch --size of fresh anonymous memory (every entry maps the shared zero page: tables but no RSS), " +
                "then MADV_DONTNEED all of it. Checkpoints: read, dontneed.",
            Options = [size],
            Footprint = s => s is ZeroPageScenario z ? new(z.Size, 0) : default, // reads map the shared zero page
            WarmUp = s => s is ZeroPageScenario z ? new ZeroPageScenario(Math.Min(z.Size, 32UL << 20)) : s,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                CheckAt(a.At, s);
                return new ZeroPageScenario(s, a.At);
            },
        };
    }

    private static ScenarioDef MunmapHoles()
    {
        var size = new Option<string>("--size")
        {
            Description = "Bytes to map: a multiple of 2M, at least 16M; the whole-GiB step runs when the region holds an aligned GiB from its start + 16M.",
            DefaultValueFactory = _ => "3G",
        };
        return new ScenarioDef
        {
            Name = "munmap-holes",
            Description =
                "Write every page, then munmap holes chosen so that free_pgtables' floor/ceiling rule decides which tables " +
                "go (a hole inside a table, a whole aligned 2 MiB, a straddle, a whole GiB, then everything). One checkpoint per step.",
            Options = [size],
            Footprint = s => s is MunmapHolesScenario m ? new(m.Size, m.Size) : default,
            WarmUp = s => new MunmapHolesScenario(MunmapHolesScenario.MinimumSize),
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", MunmapHolesScenario.MinimumSize);
                CheckAt(a.At, s);
                return new MunmapHolesScenario(s, a.At);
            },
        };
    }

    private static ScenarioDef Mixed()
    {
        var ops = new Option<int>("--operations") { Description = "Operations per CPU (bounded run).", DefaultValueFactory = _ => 20_000 };
        var seed = new Option<int>("--seed") { Description = "Random seed; CPU c uses seed + c.", DefaultValueFactory = _ => 1 };
        var size = new Option<string>("--size") { Description = "Bytes of the shared region: a multiple of 2M.", DefaultValueFactory = _ => "16M" };
        return new ScenarioDef
        {
            Name = "mixed",
            Description =
                "--cpus CPUs run a seeded random mix of writes, reads, MADV_DONTNEED, MADV_FREE, zero-page reads and " +
                "munmap + mmap over one shared region (CPU c owns every page c mod --cpus, so all CPUs share every PTE " +
                "table), each checking its own data. Model only.",
            Options = [ops, seed, size],
            KernelCapable = false,
            DefaultCpus = 2,
            Footprint = s => s is MixedScenario m ? new(m.Size, m.Size) : default,
            WarmUp = s => s is MixedScenario m ? new MixedScenario(m.Cpus, Math.Min(m.Operations, 2000), m.Seed, m.Size) : s,
            Create = (p, a) =>
            {
                int n = p.GetValue(ops);
                if (n <= 0)
                {
                    throw new UsageException($"--operations must be positive, got {n}");
                }

                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                if (s / 4096 < (ulong)a.Cpus)
                {
                    throw new UsageException($"--size must hold at least one page per CPU, got '{p.GetValue(size)}' for {a.Cpus} CPUs");
                }

                CheckAt(a.At, s);
                return new MixedScenario(a.Cpus, n, p.GetValue(seed), s, a.At);
            },
        };
    }

    private static ScenarioDef FileMapping()
    {
        var size = new Option<string>("--size") { Description = "Bytes of the file and of each of the three mappings: a multiple of 4M.", DefaultValueFactory = _ => "8M" };
        return new ScenarioDef
        {
            Name = "file-mapping",
            Description =
                "A file of --size bytes (every page in the page cache) mapped private and shared, and shared anonymous " +
                "memory beside them: read fault-around, private copy-on-write and shared writes, shmem faults, " +
                "MADV_DONTNEED, MADV_REMOVE, refaults, munmap. Checkpoints: read-around, private-write, shared-write, " +
                "shmem, dontneed, remove, file-remove, refault, munmap.",
            Options = [size],
            // Three mappings of --size; the file's pages, the private copies and the shmem pages stay resident.
            Footprint = s => s is FileMappingScenario f ? new(3 * f.Size, 3 * f.Size) : default,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", 2 * TwoMiB);
                if (s % (2 * TwoMiB) != 0)
                {
                    throw new UsageException($"--size must be a multiple of 4M, got '{p.GetValue(size)}'");
                }

                CheckAt(a.At, 3 * s);
                return new FileMappingScenario(s, a.At);
            },
        };
    }

    private static ScenarioDef PerPageDontNeed()
    {
        var size = new Option<string>("--size") { Description = "Bytes of the heap: a multiple of 2M.", DefaultValueFactory = _ => "256M" };
        var seed = new Option<int>("--seed") { Description = "Seed of the block sizes, the free order and the reuse.", DefaultValueFactory = _ => 1 };
        var reuse = new Option<int>("--reuse") { Description = "Chance in percent (0-100) that a free is followed by the reuse of a block freed earlier.", DefaultValueFactory = _ => 25 };
        return new ScenarioDef
        {
            Name = "per-page-dontneed",
            Description =
                "An allocator giving memory back page by page: write --size, carve it into blocks of 4-64 KiB, free them in a " +
                "random order with one MADV_DONTNEED each; after a free, with --reuse percent chance, write a block freed " +
                "earlier again (it is freed again later). No call covers a whole 2 MiB. Checkpoints: half, freed.",
            Options = [size, seed, reuse],
            Footprint = s => s is PerPageDontNeedScenario d ? new(d.Size, d.Size) : default,
            WarmUp = s => s is PerPageDontNeedScenario d ? new PerPageDontNeedScenario(Math.Min(d.Size, 16UL << 20), d.Seed, d.ReusePercent) : s,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                int r = p.GetValue(reuse);
                if (r is < 0 or > 100)
                {
                    throw new UsageException($"--reuse must be between 0 and 100, got {r}");
                }

                CheckAt(a.At, s);
                return new PerPageDontNeedScenario(s, p.GetValue(seed), r, a.At);
            },
        };
    }

    private static ScenarioDef MadvFreePressure()
    {
        var size = new Option<string>("--size") { Description = "Bytes to map: a multiple of 2M.", DefaultValueFactory = _ => "256M" };
        var piece = Piece("MADV_FREE");
        return new ScenarioDef
        {
            Name = "madvfree-pressure",
            Description =
                "MADV_FREE churn under a memory limit: for each 2 MiB write every page and MADV_FREE it in --piece calls; " +
                "reclaim discards the lazy-free pages once simulated RAM runs short, emptying their tables. Without --ram, " +
                "RAM is a quarter of --size (at least 16M). Model only (the host has no RAM limit to run it under). Checkpoint: loop.",
            Options = [size, piece],
            KernelCapable = false,
            Footprint = s => s is MadvFreePressureScenario m ? new(m.Size, m.Size) : default,
            DefaultRam = s => s is MadvFreePressureScenario m ? m.DefaultRam : null,
            WarmUp = s => s is MadvFreePressureScenario m ? new MadvFreePressureScenario(Math.Min(m.Size, 32UL << 20), m.Piece) : s,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                CheckAt(a.At, s);
                return new MadvFreePressureScenario(s, PieceValue(p, piece), a.At);
            },
        };
    }

    private static ScenarioDef ZeroPageFill()
    {
        var size = new Option<string>("--size") { Description = "Bytes to map and read: a multiple of 2M.", DefaultValueFactory = _ => "256M" };
        var piece = Piece("MADV_DONTNEED");
        return new ScenarioDef
        {
            Name = "zeropage-fill",
            Description =
                "A virtual machine's balloon and migration: read all of --size (every entry maps the shared zero page), then " +
                "give it back in --piece MADV_DONTNEED calls. Checkpoints: read, balloon.",
            Options = [size, piece],
            Footprint = s => s is ZeroPageFillScenario z ? new(z.Size, 0) : default,
            WarmUp = s => s is ZeroPageFillScenario z ? new ZeroPageFillScenario(Math.Min(z.Size, 32UL << 20), z.Piece) : s,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                CheckAt(a.At, s);
                return new ZeroPageFillScenario(s, PieceValue(p, piece), a.At);
            },
        };
    }

    private static ScenarioDef Reuse()
    {
        var size = new Option<string>("--size") { Description = "Bytes to map: a multiple of 2M.", DefaultValueFactory = _ => "128M" };
        var rounds = new Option<int>("--rounds") { Description = "Passes over the region (at least 1).", DefaultValueFactory = _ => 4 };
        return new ScenarioDef
        {
            Name = "reuse",
            Description =
                "Memory given back and taken again at once: --rounds times, for each 2 MiB write every page, MADV_DONTNEED " +
                "all of it in one call, and write it again. Checkpoint: rounds.",
            Options = [size, rounds],
            Footprint = s => s is ReuseScenario r ? new(r.Size, r.Size) : default,
            WarmUp = s => s is ReuseScenario r ? new ReuseScenario(Math.Min(r.Size, 16UL << 20), 1) : s,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                int n = p.GetValue(rounds);
                if (n < 1)
                {
                    throw new UsageException($"--rounds must be at least 1, got {n}");
                }

                CheckAt(a.At, s);
                return new ReuseScenario(s, n, a.At);
            },
        };
    }

    private static ScenarioDef SparseRelease()
    {
        var size = new Option<string>("--size") { Description = "Bytes to map: a multiple of 2M.", DefaultValueFactory = _ => "4G" };
        return new ScenarioDef
        {
            Name = "sparse-release",
            Description =
                "A large sparse region: write one page in every 2 MiB of --size, give each back with its own 4 KiB MADV_DONTNEED, " +
                "then MADV_DONTNEED the whole region. Leaves PMD tables (one per GiB) unless the design runs with --free-pmd. " +
                "Checkpoints: touched, released, dontneed-all.",
            Options = [size],
            Footprint = s => s is SparseReleaseScenario r ? new(r.Size, r.Size / 512) : default,
            WarmUp = s => s is SparseReleaseScenario r ? new SparseReleaseScenario(Math.Min(r.Size, 64UL << 20)) : s,
            Create = (p, a) =>
            {
                ulong s = TwoMiBMultiple(p.GetValue(size), "--size", TwoMiB);
                CheckAt(a.At, s);
                return new SparseReleaseScenario(s, a.At);
            },
        };
    }

    private static Option<string> Piece(string advice) =>
        new("--piece") { Description = $"Bytes per {advice} call: a multiple of 4K that divides 2M.", DefaultValueFactory = _ => "64K" };

    private static ulong PieceValue(ParseResult p, Option<string> piece)
    {
        ulong v = Cli.Size(p.GetValue(piece), "--piece");
        if (v == 0 || v % 4096 != 0 || TwoMiB % v != 0)
        {
            throw new UsageException($"--piece must be a multiple of 4K that divides 2M, got '{p.GetValue(piece)}'");
        }

        return v;
    }

    private static ulong TwoMiBMultiple(string? text, string option, ulong minimum)
    {
        ulong s = Cli.Size(text, option);
        if (s == 0 || s % TwoMiB != 0 || s < minimum)
        {
            throw new UsageException($"{option} must be a positive multiple of 2M and at least {Sizes.Format(minimum)}, got '{text}'");
        }

        CheckMappingSize(s, option, text);

        return s;
    }

    private static void CheckAt(ulong at, ulong size)
    {
        const ulong userTop = 0x7FFF_FFFF_F000UL;
        if (at != 0 && ((at & (TwoMiB - 1)) != 0 || at > userTop || size > userTop - at))
        {
            throw new UsageException($"--at must be 0 or a 2M-aligned user address with room for the mapping, got 0x{at:x}");
        }
    }
}
