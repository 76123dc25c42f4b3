using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Systematic;

/// <summary>What one scenario run has to hand: the machine, its address space and the scheduler.</summary>
public sealed class ScenarioContext
{
    /// <summary>The base of the scenario's fixed mapping.</summary>
    public const ulong Base = 0x40000000;

    internal ScenarioContext(Machine machine, MmStruct mm, DeterministicScheduler scheduler)
    {
        Machine = machine;
        Mm = mm;
        Scheduler = scheduler;
    }

    /// <summary>The simulated machine.</summary>
    public Machine Machine { get; }

    /// <summary>The one address space.</summary>
    public MmStruct Mm { get; }

    /// <summary>The scheduler interleaving the CPUs.</summary>
    public DeterministicScheduler Scheduler { get; }

    /// <summary>The percpu_ref the percpu-switch scenario works on.</summary>
    public PercpuRef? Ref { get; internal set; }

    /// <summary>References the scenario holds on <see cref="Ref"/> once every CPU finished.</summary>
    public long RefExpected { get; internal set; }

    /// <summary>End of the range the invariants scan (TLBs).</summary>
    public ulong End { get; internal set; } = Base + (4UL << 20);

    internal Cpu Cpu(int id) => Machine.Cpus[id];

    internal void Map(ulong length, MapFlags extra = 0)
    {
        var sharing = (extra & MapFlags.Shared) != 0 ? 0 : MapFlags.Private;
        var r = Mm.Mmap(Cpu(0), Base, length, Prot.Read | Prot.Write, sharing | MapFlags.Anonymous | MapFlags.Fixed | extra);
        if (!r.Ok)
        {
            throw new InvalidOperationException($"set-up mmap failed: {r.Error}");
        }

        End = Base + length;
    }

    internal void Read(ulong va)
    {
        var r = Cpu(0).ReadByte(va, out _);
        if (!r.Ok)
        {
            throw new InvalidOperationException($"set-up read of 0x{va:x} failed: {r}");
        }
    }

    internal void Touch(ulong va)
    {
        var r = Cpu(0).Touch(va);
        if (!r.Ok)
        {
            throw new InvalidOperationException($"set-up touch of 0x{va:x} failed: {r}");
        }
    }
}

/// <summary>
/// One small race for the systematic tester: a set-up on the test's own thread, then one short
/// program per CPU run under the scheduler, then the invariants.
/// </summary>
/// <param name="Name">The name on the command line.</param>
/// <param name="Description">One line saying what races.</param>
/// <param name="EstimatedSteps">Typical scheduling points per schedule, where PCT places its priority changes.</param>
/// <param name="RamBytes">RAM of the machine.</param>
/// <param name="Setup">Runs before the CPUs start, unscheduled.</param>
/// <param name="Programs">One program per CPU.</param>
public sealed record SystematicScenario(
    string Name,
    string Description,
    long EstimatedSteps,
    long RamBytes,
    Action<ScenarioContext> Setup,
    IReadOnlyList<Action<ScenarioContext, Cpu>> Programs)
{
    /// <summary>
    /// Whether the programs go through the address space, and so through the design under test.
    /// A scenario that drives a primitive directly tests a design only through the mutations in
    /// <see cref="Catches"/> that the design has.
    /// </summary>
    public bool UsesDesign { get; init; } = true;

    /// <summary>The mutations this scenario is shown to catch (the mutation tests of the default run), for designs that have them.</summary>
    public IReadOnlyList<Mutation> Catches { get; init; } = [];

    /// <summary>Whether the designs that take it run with <see cref="DesignOptions.FreePmd"/> (empty PMD tables freed).</summary>
    public bool FreePmd { get; init; }

    /// <summary>
    /// Whether one of the programs runs the table scanner's thread (<see cref="Kscand"/>) itself; in
    /// the others, a design with a background thread gets one more CPU running it.
    /// </summary>
    public bool RunsKscand { get; init; }

    /// <summary>
    /// Whether the steps of table storage given back and of table-entry cache fills are
    /// scheduling points too (<see cref="PtLab.Sync.SchedulingPointKind.TableStorage"/>): off in
    /// the catalogue, whose schedules stay as they are.
    /// </summary>
    public bool StorageSteps { get; init; }

    /// <summary>
    /// What must hold once every program has finished, whatever the schedule: null when it holds,
    /// else the violation. Checked before the general invariants.
    /// </summary>
    public Func<ScenarioContext, string?>? Final { get; init; }
}

/// <summary>The catalogue of races the systematic tester explores.</summary>
public static class SystematicScenarios
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const ulong G1 = 1UL << 30;
    private const ulong Base = ScenarioContext.Base;

    /// <summary>Every scenario, in catalogue order.</summary>
    public static IReadOnlyList<SystematicScenario> All { get; } = Described(
    [
        new(
            "walker-dontneed-fault",
            "slow GUP and mprotect walk a PTE table while MADV_DONTNEED zaps (and may free) it and a fault allocates a new one",
            400,
            64L << 20,
            c => MapTouchingFirstPages(c, 2 * M2),
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("get_user_pages(2 pages)");
                    Span<long> pages = stackalloc long[2];
                    long got = c.Mm.GetUserPages(cpu, Base, 2, write: false, pages);
                    if (got > 0)
                    {
                        c.Mm.PutUserPages(cpu, pages[..(int)got]);
                    }

                    c.Scheduler.Note("mprotect(RO) of 4 pages");
                    c.Mm.Mprotect(cpu, Base, 4 * K4, Prot.Read);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, 2 MiB)");
                    c.Mm.Madvise(cpu, Base, M2, Advice.DontNeed);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write page 2");
                    cpu.Touch(Base + (2 * K4));
                    c.Scheduler.Note("fault: read page 5");
                    cpu.ReadByte(Base + (5 * K4), out _);
                },
            ]),
        new(
            "gup-fast-free",
            "lockless GUP-fast walks a PTE table while MADV_DONTNEED zaps and frees it",
            250,
            64L << 20,
            c => MapAndTouch(c, M2, 4),
            [
                (c, cpu) => GupFastTwice(c, cpu, 4),
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, 2 MiB)");
                    c.Mm.Madvise(cpu, Base, M2, Advice.DontNeed);
                },
            ]),
        new(
            "madvfree-refault",
            "MADV_FREE and reclaim of the lazy-free pages under a small RAM, against a refault of the same range",
            300,
            8L << 20,
            c =>
            {
                c.Map(M2);
                for (ulong i = 0; i < 6; i++)
                {
                    c.Touch(Base + (i * K4));
                }
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(FREE, 2 MiB)");
                    c.Mm.Madvise(cpu, Base, M2, Advice.Free);
                    c.Scheduler.Note("reclaim 8 pages");
                    c.Machine.Vmscan.Reclaim(cpu.Id, 8);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("write page 1 (redirty or refault)");
                    cpu.Touch(Base + K4);
                    c.Scheduler.Note("read page 4");
                    cpu.ReadByte(Base + (4 * K4), out _);
                },
            ]),
        new(
            "munmap-dontneed",
            "munmap of one table's range against MADV_DONTNEED of both and faults in both",
            400,
            64L << 20,
            c =>
            {
                c.Map(2 * M2);
                c.Touch(Base);
                c.Touch(Base + M2 + K4);
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("munmap(second 2 MiB)");
                    c.Mm.Munmap(cpu, Base + M2, M2);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, 4 MiB)");
                    c.Mm.Madvise(cpu, Base, 2 * M2, Advice.DontNeed);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write first table");
                    cpu.Touch(Base + K4);
                    c.Scheduler.Note("fault: write second table (may SIGSEGV)");
                    cpu.Touch(Base + M2 + (2 * K4));
                },
            ]),
        new(
            "percpu-switch",
            "a percpu_ref switched to atomic (synchronously) and back, against get/put and tryget/put on other CPUs",
            300,
            16L << 20,
            c =>
            {
                var r = new PercpuRef(c.Machine.Rcu, release: null, PercpuRefInit.AllowReinit);
                r.Put(0); // start at zero, as pte_ref_init
                r.Get(0); // one entry's reference, held throughout
                c.Ref = r;
                c.RefExpected = 1;
            },
            [
                (c, cpu) =>
                {
                    var r = c.Ref!;
                    c.Scheduler.Note("switch_to_atomic_sync");
                    r.SwitchToAtomicSync(cpu.Id);
                    if (r.IsPercpu || r.TrueCount < 1)
                    {
                        throw new InvalidOperationException($"after switch_to_atomic_sync: percpu {r.IsPercpu}, count {r.TrueCount}");
                    }

                    c.Scheduler.Note("switch_to_percpu");
                    r.SwitchToPercpu(cpu.Id);
                    c.Scheduler.Note("switch_to_atomic_sync");
                    r.SwitchToAtomicSync(cpu.Id);
                },
                (c, cpu) =>
                {
                    var r = c.Ref!;
                    for (int i = 0; i < 2; i++)
                    {
                        r.Get(cpu.Id);
                        r.Put(cpu.Id);
                    }
                },
                (c, cpu) =>
                {
                    var r = c.Ref!;
                    for (int i = 0; i < 2; i++)
                    {
                        if (r.TryGet(cpu.Id))
                        {
                            r.Put(cpu.Id);
                        }
                    }
                },
            ]),
        new(
            "ptreclaim-trylock",
            "a whole-table DONTNEED (pt-reclaim's trylock of the pmd lock under the PTE lock) against a fault waiting on the PTE lock and a fault installing a neighbour table under the pmd lock",
            350,
            64L << 20,
            c =>
            {
                c.Map(2 * M2);
                for (ulong i = 0; i < 3; i++)
                {
                    c.Touch(Base + (i * K4));
                }
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, first 2 MiB)");
                    c.Mm.Madvise(cpu, Base, M2, Advice.DontNeed);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write page 1 (waits on the PTE lock)");
                    cpu.Touch(Base + K4);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write the neighbour table (pmd lock)");
                    cpu.Touch(Base + M2 + K4);
                },
            ]),
        new(
            "fork-reclaim",
            "fork copies a table of lazy-free pages while reclaim discards them through the reverse map and the parent redirties one; the child then writes a copied page",
            450,
            8L << 20,
            c =>
            {
                c.Map(M2);
                for (ulong i = 0; i < 6; i++)
                {
                    c.Touch(Base + (i * K4));
                }

                c.Mm.Madvise(c.Cpu(0), Base, M2, Advice.Free);
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("fork");
                    var child = c.Mm.Fork(cpu);
                    if (child is not null)
                    {
                        c.Scheduler.Note("child: write page 1");
                        cpu.SwitchMm(child);
                        cpu.Touch(Base + K4);
                        cpu.SwitchMm(c.Mm);
                    }
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("reclaim 8 pages");
                    c.Machine.Vmscan.Reclaim(cpu.Id, 8);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("parent: write page 2 (redirty or refault)");
                    cpu.Touch(Base + (2 * K4));
                    c.Scheduler.Note("parent: read page 4");
                    cpu.ReadByte(Base + (4 * K4), out _);
                },
            ]),
        new(
            "occupancy-partial-zap",
            "two partial MADV_DONTNEEDs of one PTE table (the last one leaves only a zero-page entry, so occupancy frees the table) against a zero-page read and write faults in it and faults installing three neighbour tables under the pmd lock",
            600,
            64L << 20,
            c =>
            {
                c.Map(4 * M2);
                for (ulong i = 0; i < 4; i++)
                {
                    c.Touch(Base + (i * K4));
                }

                c.Read(Base + (8 * K4)); // the shared zero page
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, pages 0-1)");
                    c.Mm.Madvise(cpu, Base, 2 * K4, Advice.DontNeed);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, pages 2-3)");
                    c.Mm.Madvise(cpu, Base + (2 * K4), 2 * K4, Advice.DontNeed);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: read page 5 (zero page)");
                    cpu.ReadByte(Base + (5 * K4), out _);
                    c.Scheduler.Note("fault: write page 1");
                    cpu.Touch(Base + K4);
                    c.Scheduler.Note("fault: write page 3");
                    cpu.Touch(Base + (3 * K4));
                },
                (c, cpu) =>
                {
                    for (ulong t = 1; t < 4; t++)
                    {
                        c.Scheduler.Note($"fault: write neighbour table {t} (pmd lock)");
                        cpu.Touch(Base + (t * M2) + K4);
                    }
                },
            ]),
        new(
            "table-reuse-walk",
            "a whole-table MADV_DONTNEED frees a PTE table whose pmd entry another CPU's paging-structure cache holds, a grace period passes and a fault takes a new table (perhaps the same frame), while that CPU reads the freed range again",
            150,
            64L << 20,
            c =>
            {
                c.Map(2 * M2);
                c.Touch(Base);
                c.Touch(Base + K4);
            },
            [
                (c, cpu) =>
                {
                    for (int round = 0; round < 3; round++)
                    {
                        c.Scheduler.Note("read pages 0 and 1 (the walk may start at the cached pmd entry)");
                        cpu.ReadByte(Base, out _);
                        cpu.ReadByte(Base + K4, out _);
                        c.Scheduler.Note("synchronize_rcu (time passes)");
                        c.Machine.Rcu.SynchronizeRcu(cpu.Id);
                    }
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, first 2 MiB)");
                    c.Mm.Madvise(cpu, Base, M2, Advice.DontNeed);
                    c.Scheduler.Note("rcu_barrier (the deferred table frees run)");
                    c.Machine.Rcu.Barrier(cpu.Id);
                    c.Scheduler.Note("fault: write the second table's range (a new PTE table)");
                    cpu.Touch(Base + M2 + K4);
                },
            ]),
        new(
            PmdFreeGupFast,
            "MADV_DONTNEED of a whole GiB empties its PTE tables and then its PMD table (with --free-pmd, freed under mmap_lock for write after a pud recheck and a grace period) against lockless GUP-fast reading pud then pmd, and a fault that needs the PMD table",
            350,
            64L << 20,
            c =>
            {
                // The base is GiB-aligned: one PMD table maps the whole region. NORESERVE: the
                // machine's small RAM could not back a commit of 1 GiB.
                c.Map(G1, MapFlags.NoReserve);
                c.Touch(Base);
                c.Touch(Base + K4);
                c.Touch(Base + M2);
                c.End = Base + (2 * M2); // the TLB invariant scans where pages were mapped, not the whole GiB
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, 1 GiB)");
                    c.Mm.Madvise(cpu, Base, G1, Advice.DontNeed);
                },
                (c, cpu) => GupFastTwice(c, cpu, 2),
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write the second table (needs the PMD table)");
                    cpu.Touch(Base + M2 + K4);
                    c.Scheduler.Note("fault: read page 0");
                    cpu.ReadByte(Base, out _);
                },
            ]),
        new(
            "scanner-fault-zap",
            "the table scanner's thread scans three tables (two emptied by partial DONTNEEDs, one of zero-page entries only) while a fault refills the first and writes over the zero page, and a whole-table DONTNEED frees the second (pt-reclaim's rule) before a fault installs a new one there",
            700,
            64L << 20,
            c =>
            {
                c.Map(3 * M2);
                for (ulong t = 0; t < 2; t++)
                {
                    for (ulong i = 0; i < 4; i++)
                    {
                        c.Touch(Base + (t * M2) + (i * K4));
                    }

                    if (c.Mm.Madvise(c.Cpu(0), Base + (t * M2), 4 * K4, Advice.DontNeed) != Errno.None)
                    {
                        throw new InvalidOperationException("set-up madvise(DONTNEED) failed");
                    }
                }

                c.Read(Base + (2 * M2)); // the shared zero page
            },
            [
                KscandPasses,
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write page 1 of the emptied table");
                    cpu.Touch(Base + K4);
                    c.Scheduler.Note("fault: write page 3 of the second table (after its free, a new table)");
                    cpu.Touch(Base + M2 + (3 * K4));
                    c.Scheduler.Note("fault: write over the zero page");
                    cpu.Touch(Base + (2 * M2));
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, second table whole)");
                    c.Mm.Madvise(cpu, Base + M2, M2, Advice.DontNeed);
                    c.Scheduler.Note("madvise(DONTNEED, pages 1-2 of the first table)");
                    c.Mm.Madvise(cpu, Base + K4, 2 * K4, Advice.DontNeed);
                },
            ]),
        new(
            "occupancy-count-set-clear",
            "one PTE table's entries set and cleared on three CPUs at once: partial DONTNEEDs, MADV_FREE and reclaim discarding through the reverse map, a write over a zero-page entry, a zero-page read and refaults; its counts must equal its entries, and a table left with only zero-page entries may be freed between them",
            700,
            8L << 20,
            c =>
            {
                c.Map(2 * M2);
                for (ulong i = 0; i < 6; i++)
                {
                    c.Touch(Base + (i * K4));
                }

                c.Read(Base + (8 * K4)); // the shared zero page
            },
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, pages 0-1)");
                    c.Mm.Madvise(cpu, Base, 2 * K4, Advice.DontNeed);
                    c.Scheduler.Note("madvise(FREE, pages 2-3)");
                    c.Mm.Madvise(cpu, Base + (2 * K4), 2 * K4, Advice.Free);
                    c.Scheduler.Note("reclaim 4 pages");
                    c.Machine.Vmscan.Reclaim(cpu.Id, 4);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write over the zero page (page 8)");
                    cpu.Touch(Base + (8 * K4));
                    c.Scheduler.Note("fault: read page 9 (zero page)");
                    cpu.ReadByte(Base + (9 * K4), out _);
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write page 1 (refault)");
                    cpu.Touch(Base + K4);
                    c.Scheduler.Note("madvise(DONTNEED, pages 4-5)");
                    c.Mm.Madvise(cpu, Base + (4 * K4), 2 * K4, Advice.DontNeed);
                },
            ]),
        new(
            "batched-switch-tryget",
            "a partial DONTNEED that empties a table starts its switch to atomic mode without waiting, while GUP-fast and a fault try-get the table's reference during the pending switch and a second DONTNEED finds it atomic or gone",
            450,
            64L << 20,
            c => MapTouchingFirstPages(c, M2),
            [
                (c, cpu) =>
                {
                    c.Scheduler.Note("madvise(DONTNEED, pages 0-3)");
                    c.Mm.Madvise(cpu, Base, 4 * K4, Advice.DontNeed);
                    c.Scheduler.Note("madvise(DONTNEED, pages 5-6)");
                    c.Mm.Madvise(cpu, Base + (5 * K4), 2 * K4, Advice.DontNeed);
                },
                (c, cpu) =>
                {
                    Span<long> pages = stackalloc long[4];
                    for (int round = 0; round < 2; round++)
                    {
                        c.Scheduler.Note("get_user_pages_fast(4 pages)");
                        long got = c.Mm.GetUserPagesFast(cpu, Base, 4, write: true, pages);
                        if (got > 0)
                        {
                            c.Mm.PutUserPages(cpu, pages[..(int)got]);
                        }
                    }
                },
                (c, cpu) =>
                {
                    c.Scheduler.Note("fault: write page 2 (try-get during the switch)");
                    cpu.Touch(Base + (2 * K4));
                    c.Scheduler.Note("fault: write page 6");
                    cpu.Touch(Base + (6 * K4));
                },
            ]),
        new(
            CollapseGupFastFault,
            "MADV_COLLAPSE unhooks a PTE table, frees it and maps a huge page while lockless GUP-fast pins its pages and a fault and reclaim wait to use it",
            400,
            64L << 20,
            c => MapAndTouch(c, 2 * M2, 4),
            CollapseRace("split")),
    ]);

    /// <summary>The race of MADV_COLLAPSE against GUP-fast, a fault and reclaim.</summary>
    public const string CollapseGupFastFault = "collapse-gup-fast-fault";

    /// <summary>The race of a PMD-table free against GUP-fast and a fault (run with <see cref="SystematicScenario.FreePmd"/>).</summary>
    public const string PmdFreeGupFast = "pmd-free-gup-fast";

    /// <summary>The usual set-up: the fixed mapping of <paramref name="length"/> bytes with its first <paramref name="pages"/> pages written.</summary>
    private static void MapAndTouch(ScenarioContext c, ulong length, int pages)
    {
        c.Map(length);
        for (ulong i = 0; i < (ulong)pages; i++)
        {
            c.Touch(Base + (i * K4));
        }
    }

    /// <summary>
    /// The race of a CPU's table-entry cache against table storage given back and taken by another
    /// table, with the storage steps as scheduling points (<see cref="SystematicScenario.StorageSteps"/>):
    /// CPU 0 reads, then writes, pages of a group of PTE table P (its walks and faults find the
    /// group through its cache, locklessly and under P's lock), while CPU 1 zaps the group's one
    /// present entry, so P gives the group back, and faults in a page of PTE table Q, which takes
    /// it. Not in the catalogue: the steps lengthen every schedule.
    /// </summary>
    public static SystematicScenario TableCacheGiveBack { get; } = new(
        "table-cache-give-back",
        "a CPU reads and writes a group of PTE entries through its table-entry cache while another zaps the group's last entry and a second table takes the group",
        300,
        64L << 20,
        c =>
        {
            c.Map(2 * M2);
            c.Touch(Base);
            c.Touch(Base + (100 * K4)); // another group, so that P keeps its slot in every design
        },
        [
            (c, cpu) =>
            {
                c.Scheduler.Note("fault: read page 1 of table P");
                cpu.ReadByte(Base + K4, out _);
                c.Scheduler.Note("fault: write page 2 of table P");
                cpu.Touch(Base + (2 * K4));
            },
            (c, cpu) =>
            {
                c.Scheduler.Note("madvise(DONTNEED, page 0 of table P)");
                c.Mm.Madvise(cpu, Base, K4, Advice.DontNeed);
                c.Scheduler.Note("fault: write page 1 of table Q");
                cpu.Touch(Base + M2 + K4);
            },
        ])
    {
        StorageSteps = true,
    };

    /// <summary>
    /// MADV_COLLAPSE of a shared anonymous (shmem) mapping: the PTE table is unhooked and freed at
    /// once (nothing deposited), the page cache's pages replaced by a huge folio and a PMD leaf
    /// installed, while GUP-fast pins the pages locklessly, and a fault and reclaim wait to use
    /// the table; then a DONTNEED of one page zaps the whole leaf. Not in the catalogue (it would
    /// add to every design's share of the default run); its own test runs it.
    /// </summary>
    public static SystematicScenario ShmemCollapseGupFastFault { get; } = new(
        "shmem-collapse-gup-fast-fault",
        "MADV_COLLAPSE of shmem unhooks and frees a PTE table and maps a page-cache huge folio while lockless GUP-fast pins its pages and a fault and reclaim wait to use it",
        400,
        64L << 20,
        c => MapTouchingFirstPages(c, 2 * M2, MapFlags.Shared),
        CollapseRace("the whole leaf goes"));

    /// <summary>
    /// <c>split_folio</c> of a huge page whose pages lie in two PTE tables (collapsed, then moved by
    /// mremap 1 MiB past a 2 MiB boundary): a partial MADV_FREE splits it under both tables' PTE
    /// locks while GUP-fast pins pages on both sides of the table boundary locklessly, a fault
    /// writes one of its pages and MADV_PAGEOUT of the whole folio tries to split it from another
    /// CPU, then reclaim. Not in the catalogue (it would add to every design's share of the default
    /// run); its own test runs it.
    /// </summary>
    public static SystematicScenario SplitTwoTablesGupFastFault { get; } = new(
        "split-two-tables-gup-fast-fault",
        "split_folio of a huge page mapped by PTEs in two tables, under both PTE locks, while GUP-fast pins its pages across the table boundary, a fault writes one and a second CPU's MADV_PAGEOUT tries to split it too",
        500,
        64L << 20,
        c =>
        {
            c.Map(4 * M2);
            foreach (ulong page in new ulong[] { 0, 255, 300, 511 })
            {
                c.Touch(Base + (page * K4));
            }

            if (c.Mm.Madvise(c.Cpu(0), Base, M2, Advice.Collapse) != Errno.None ||
                !c.Mm.Mremap(c.Cpu(0), Base, M2, M2, MremapFlags.MayMove | MremapFlags.Fixed, SplitTwoTablesAt).Ok)
            {
                throw new InvalidOperationException("set-up collapse or mremap failed");
            }
        },
        [
            (c, cpu) =>
            {
                Span<long> pinned = stackalloc long[4];
                for (int round = 0; round < 2; round++)
                {
                    c.Scheduler.Note("get_user_pages_fast(folio pages 254-257, across the table boundary)");
                    long got = c.Mm.GetUserPagesFast(cpu, SplitTwoTablesAt + (254 * K4), 4, write: true, pinned);
                    if (got > 0)
                    {
                        c.Mm.PutUserPages(cpu, pinned[..(int)got]);
                    }
                }
            },
            (c, cpu) =>
            {
                c.Scheduler.Note("madvise(FREE, folio page 0): split in both tables");
                c.Mm.Madvise(cpu, SplitTwoTablesAt, K4, Advice.Free);
                c.Scheduler.Note("madvise(DONTNEED, folio page 300)");
                c.Mm.Madvise(cpu, SplitTwoTablesAt + (300 * K4), K4, Advice.DontNeed);
            },
            (c, cpu) =>
            {
                c.Scheduler.Note("fault: write folio page 400");
                cpu.Touch(SplitTwoTablesAt + (400 * K4));
                c.Scheduler.Note("madvise(PAGEOUT, the whole folio)");
                c.Mm.Madvise(cpu, SplitTwoTablesAt, M2, Advice.PageOut);
                c.Scheduler.Note("reclaim 4 pages");
                c.Machine.Vmscan.Reclaim(cpu.Id, 4);
            },
        ]);

    /// <summary>
    /// <c>MADV_GUARD_INSTALL</c> races what could fill or free the table it writes markers into:
    /// faults on the pages it is about to guard (the install finds them mapped, zaps and walks
    /// again), lockless GUP-fast pins of them (a pin the zap meets keeps the page), a
    /// <c>MADV_DONTNEED</c> of the whole table (which pt-reclaim may free only while no marker is
    /// in it) and an unmap of part of the range (which drops markers). Then the markers are removed
    /// and the region written again. Not in the catalogue (it would add to every design's share of
    /// the default run); its own test runs it.
    /// </summary>
    public static SystematicScenario GuardInstallRace { get; } = new(
        "guard-install-race",
        "MADV_GUARD_INSTALL over pages that another CPU faults in and pins with GUP-fast while a third CPU zaps the whole table with MADV_DONTNEED and unmaps part of the range",
        500,
        64L << 20,
        c => MapTouchingFirstPages(c, M2),
        [
            (c, cpu) =>
            {
                c.Scheduler.Note("madvise(GUARD_INSTALL, pages 0-7)");
                c.Mm.Madvise(cpu, Base, 8 * K4, Advice.GuardInstall);
                c.Scheduler.Note("madvise(GUARD_REMOVE, pages 4-5)");
                c.Mm.Madvise(cpu, Base + (4 * K4), 2 * K4, Advice.GuardRemove);
            },
            (c, cpu) =>
            {
                c.Scheduler.Note("fault: write pages 2 and 5 (SIGSEGV where a marker is)");
                cpu.Touch(Base + (2 * K4));
                cpu.Touch(Base + (5 * K4));
                GupFastTwice(c, cpu, 4);
            },
            (c, cpu) =>
            {
                c.Scheduler.Note("madvise(DONTNEED, the whole table)");
                c.Mm.Madvise(cpu, Base, M2, Advice.DontNeed);
                c.Scheduler.Note("munmap(pages 6-7): drops their markers");
                c.Mm.Munmap(cpu, Base + (6 * K4), 2 * K4);
            },
        ])
    {
        // Whatever the order, the install ends with markers in pages 0-3 (it zaps what the faults
        // and pins left there and walks again), and nothing else may take them away: not the
        // DONTNEED (nor a table freed by it), not the unmap of pages 6-7, not GUARD_REMOVE of 4-5.
        Final = c =>
        {
            for (ulong i = 0; i < 4; i++)
            {
                ulong e = c.Mm.PeekPte(Base + (i * K4));
                if (!Entry.IsGuardMarker(e))
                {
                    return $"page {i} lost its guard marker: entry {e:x}";
                }
            }

            return null;
        },
    };

    /// <summary>Where <see cref="SplitTwoTablesGupFastFault"/> moves its huge page: 1 MiB past a table boundary.</summary>
    private const ulong SplitTwoTablesAt = Base + (5UL << 20);

    /// <summary>
    /// The programs of a collapse race: GUP-fast pins the first pages twice; MADV_COLLAPSE of the
    /// first 2 MiB, then a DONTNEED of page 1 (<paramref name="dontNeed"/> says what it does to
    /// the leaf); a fault on page 5, then reclaim.
    /// </summary>
    private static Action<ScenarioContext, Cpu>[] CollapseRace(string dontNeed) =>
    [
        (c, cpu) => GupFastTwice(c, cpu, 4),
        (c, cpu) =>
        {
            c.Scheduler.Note("madvise(COLLAPSE, 2 MiB)");
            c.Mm.Madvise(cpu, Base, M2, Advice.Collapse);
            c.Scheduler.Note($"madvise(DONTNEED, page 1): {dontNeed}");
            c.Mm.Madvise(cpu, Base + K4, K4, Advice.DontNeed);
        },
        (c, cpu) =>
        {
            c.Scheduler.Note("fault: write page 5");
            cpu.Touch(Base + (5 * K4));
            c.Scheduler.Note("reclaim 4 pages");
            c.Machine.Vmscan.Reclaim(cpu.Id, 4);
        },
    ];

    /// <summary>A set-up: maps the region (<see cref="ScenarioContext.Map"/>) and writes its first four pages.</summary>
    private static void MapTouchingFirstPages(ScenarioContext c, ulong length, MapFlags extra = 0)
    {
        c.Map(length, extra);
        for (ulong i = 0; i < 4; i++)
        {
            c.Touch(Base + (i * K4));
        }
    }

    /// <summary>Two rounds of GUP-fast (pin then unpin) of the first <paramref name="pages"/> pages.</summary>
    private static void GupFastTwice(ScenarioContext c, Cpu cpu, int pages)
    {
        Span<long> pinned = stackalloc long[pages];
        for (int round = 0; round < 2; round++)
        {
            c.Scheduler.Note($"get_user_pages_fast({pages} pages)");
            long got = c.Mm.GetUserPagesFast(cpu, Base, pages, write: true, pinned);
            if (got > 0)
            {
                c.Mm.PutUserPages(cpu, pinned[..(int)got]);
            }
        }
    }

    /// <summary>The scanner's thread in a race: two passes over every address space, on <paramref name="cpu"/>.</summary>
    internal static void KscandPasses(ScenarioContext c, Cpu cpu)
    {
        for (int pass = 0; pass < 2; pass++)
        {
            c.Scheduler.Note("kscand: scan pass");
            Kscand.Pass(c.Machine, cpu);
        }
    }

    private static SystematicScenario[] Described(SystematicScenario[] all) => [.. all.Select(Describe)];

    /// <summary>What each scenario is shown to catch, and which drive a primitive rather than a design.</summary>
    private static SystematicScenario Describe(SystematicScenario s) => s.Name switch
    {
        "walker-dontneed-fault" => s with { Catches = [Mutation.SkipTryGet, Mutation.SkipGatherFlush, Mutation.SkipSwitchConfirm, Mutation.SkipTableFlush] },
        "gup-fast-free" => s with { Catches = [Mutation.SkipTryGet, Mutation.SkipTrackClear, Mutation.SkipRcuDeferral, Mutation.SkipTableFlush] },
        "munmap-dontneed" => s with { Catches = [Mutation.SkipTableFlush] },
        "table-reuse-walk" => s with { Catches = [Mutation.SkipTableFlush] },
        "percpu-switch" => s with { UsesDesign = false, Catches = [Mutation.SkipSwitchGracePeriod] },
        "ptreclaim-trylock" => s with { Catches = [Mutation.SkipPmdRecheck] },
        "occupancy-partial-zap" => s with { Catches = [Mutation.SkipCountRecheck, Mutation.SkipTrackClear, Mutation.SkipSwitchConfirm] },
        PmdFreeGupFast => s with { FreePmd = true, Catches = [Mutation.SkipPudRecheck, Mutation.SkipPmdRcu] },
        "scanner-fault-zap" => s with { RunsKscand = true, Catches = [Mutation.SkipScanRecheck, Mutation.SkipScanPmdSame, Mutation.SkipTableFlush] },
        "occupancy-count-set-clear" => s with { Catches = [Mutation.SkipTrackClear] },
        "batched-switch-tryget" => s with { Catches = [Mutation.SkipSwitchConfirm] },
        _ => s,
    };

    /// <summary>The scenario called <paramref name="name"/>, or null.</summary>
    public static SystematicScenario? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    /// <summary>The scenario names.</summary>
    public static IReadOnlyList<string> Names => [.. All.Select(s => s.Name)];
}
