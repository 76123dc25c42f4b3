using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Sync;
using PtLab.Systematic;

namespace PtLab.Tests.Reclaim;

/// <summary>
/// <c>pte-ref</c>'s <c>pte_tryget_map</c> on a machine without hooks (as <c>ptlab run</c> builds
/// it): the fast path that keeps, per CPU, the table it last mapped and that table's
/// <c>pte_ref</c>, stamped with the layout epoch. The tests with a scheduler or lock checker take
/// the full path and never reach it.
/// </summary>
public class PteRefBareMapTests
{
    private const ulong At = 0x40000000;
    private const ulong M2 = 2UL << 20;
    private const int Pages = 512;

    [Fact]
    public void AFreedTableWhoseFrameIsATableAgainIsNotTakenForTheOldOne()
    {
        var machine = new Machine(new MachineOptions { RamBytes = 16L << 20, PageData = false, Cpus = 1, Design = () => new PteRefReclaim() });
        Assert.True(machine.Rcu.IsBare, "the machine must have no scheduler and no lock checker, or the fast path is not taken");
        var mm = machine.CreateAddressSpace();
        var cpu = machine.Cpus[0];
        var design = (PteRefReclaim)mm.Design;
        Assert.True(mm.Mmap(cpu, At, M2, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed).Ok);

        TouchAll(cpu);
        long first = Assert.Single(Invariants.PteTables(mm));
        var firstRef = machine.Phys.Ref(first);
        Assert.Equal((long?)Pages, design.ExactCount(mm, first));

        Assert.Equal(Errno.None, mm.Madvise(cpu, At, M2, Advice.DontNeed));
        Assert.Equal(1, design.TablesFreed);
        Assert.Empty(Invariants.PteTables(mm));

        // The refault installs a new table in the same pmd entry, in the same frame: every other
        // free frame is held here but one for the page, so the pmd entry names the frame the
        // CPU's memo names, with another generation and another pte_ref. Every get must reach
        // the new ref: one that reached the old, exited ref would throw, and the count below
        // would be short.
        machine.Rcu.Barrier();
        var held = new List<long>();
        for (long f = machine.Phys.AllocFrame(0); f >= 0; f = machine.Phys.AllocFrame(0))
        {
            held.Add(f);
        }

        Assert.Contains(first, held);
        held.Remove(first);
        long page = held[^1];
        held.RemoveAt(held.Count - 1);
        machine.Phys.FreeFrame(first); // taken last from the refilled list: the table's
        machine.Phys.FreeFrame(page);  // taken first: the page's
        Assert.True(cpu.Write(At, [1]).Ok);
        foreach (long f in held)
        {
            machine.Phys.FreeFrame(f);
        }

        TouchAll(cpu);
        long second = Assert.Single(Invariants.PteTables(mm));
        Assert.Equal(first, second);
        Assert.NotEqual(firstRef.Generation, machine.Phys.Ref(second).Generation);
        Assert.Equal((long?)Pages, design.ExactCount(mm, second));

        // And the new ref is the one that reaches zero: the table is freed again.
        Assert.Equal(Errno.None, mm.Madvise(cpu, At, M2, Advice.DontNeed));
        Assert.Equal(2, design.TablesFreed);
        Assert.Empty(Invariants.PteTables(mm));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FaultsThatInstallEntriesKeepTheCountExactInPercpuAndAtomicMode(bool switchBack)
    {
        // Without hooks a fault's first look takes no reference on a none entry, and the fault that
        // installs an entry hands its visitor's reference to the entry. Read faults (the zero
        // page), write faults over the zero page (the copy keeps the entry non-none) and write
        // faults into none entries must all leave the count equal to the entries, in percpu mode
        // and, once a DONTNEED left the table atomic (switch-back off), in atomic mode.
        var machine = new Machine(new MachineOptions { RamBytes = 16L << 20, PageData = false, Cpus = 1, Design = () => new PteRefReclaim { SwitchBack = switchBack } });
        Assert.True(machine.Rcu.IsBare, "the machine must have no scheduler and no lock checker, or the fast path is not taken");
        var mm = machine.CreateAddressSpace();
        var cpu = machine.Cpus[0];
        var design = (PteRefReclaim)mm.Design;
        Assert.True(mm.Mmap(cpu, At, M2, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed).Ok);

        for (int i = 0; i < Pages; i += 2)
        {
            Assert.True(cpu.Read(At + ((ulong)i << 12), new byte[1]).Ok);
        }

        long table = Assert.Single(Invariants.PteTables(mm));
        Assert.True(RefOf(machine, table).IsPercpu);
        Assert.Equal((long?)(Pages / 2), design.ExactCount(mm, table));

        // Half of the table goes: the table survives with its other entries, atomic unless switched back.
        Assert.Equal(Errno.None, mm.Madvise(cpu, At, M2 / 2, Advice.DontNeed));
        Assert.Equal(0, design.TablesFreed);
        Assert.Equal(!switchBack, !RefOf(machine, table).IsPercpu);
        Assert.Equal((long?)(Pages / 4), design.ExactCount(mm, table));

        TouchAll(cpu);
        Assert.Equal(table, Assert.Single(Invariants.PteTables(mm)));
        Assert.Equal((long?)Pages, design.ExactCount(mm, table));
        Assert.Null(Invariants.Refcounts(mm));

        // And the count is the one that reaches zero: the table is freed.
        Assert.Equal(Errno.None, mm.Madvise(cpu, At, M2, Advice.DontNeed));
        Assert.Equal(1, design.TablesFreed);
        Assert.Empty(Invariants.PteTables(mm));
    }

    [Fact]
    public void AFaultThatInstallsAnEntryTakesOneReferenceWhereTheSeedTookThreeAndDroppedTwo()
    {
        // With the profile on (hooks, so the full percpu_ref paths with their counting run, and
        // the first look keeps the seed's try-get and put): the seed's write fault into a none
        // entry is pte_tryget_map + pte_unmap, pte_tryget_map_lock, track_pte_set's get and
        // pte_unmap_unlock's put, six per-CPU operations per fault as this profile counts them.
        // The hand-over leaves out the get and the put: four.
        var machine = new Machine(new MachineOptions { RamBytes = 16L << 20, PageData = false, Cpus = 1, Profile = true, Design = () => new PteRefReclaim() });
        var mm = machine.CreateAddressSpace();
        var cpu = machine.Cpus[0];
        Assert.True(mm.Mmap(cpu, At, M2, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed).Ok);
        TouchAll(cpu);
        long before = machine.Sync.Profile!.Total(ProfileOp.PercpuOp);
        Assert.True(mm.Mmap(cpu, At + M2, M2, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed).Ok);
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(cpu.Write(At + M2 + ((ulong)i << 12), [1]).Ok);
        }

        long perFault = (machine.Sync.Profile.Total(ProfileOp.PercpuOp) - before) / Pages;
        Assert.Equal(4, perFault);
        Assert.Null(Invariants.Refcounts(mm));
    }

    private static PercpuRef RefOf(Machine machine, long table) => (PercpuRef)machine.Phys.TableState(table)!;

    private static void TouchAll(Cpu cpu)
    {
        for (int i = 0; i < Pages; i++)
        {
            Assert.True(cpu.Write(At + ((ulong)i << 12), [1]).Ok);
        }
    }
}
