using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;
using PtLab.Sync;
using PtLab.Systematic;

namespace PtLab.Tests;

/// <summary>A small machine with one address space, for tests.</summary>
internal sealed class Sim : IDisposable
{
    public const ulong K4 = 4096;
    public const ulong M1 = 1UL << 20;
    public const ulong M2 = 2UL << 20;
    public const ulong G1 = 1UL << 30;

    public const MapFlags Anon = MapFlags.Private | MapFlags.Anonymous;
    public const Prot Rw = Prot.Read | Prot.Write;

    /// <summary>Every registered design, for tests that run each one: a new design joins them by registering.</summary>
    public static TheoryData<string> EveryDesign()
    {
        var data = new TheoryData<string>();
        foreach (var name in Designs.Names)
        {
            data.Add(name);
        }

        return data;
    }

    public Sim(long ramBytes = 256L << 20, bool pageData = true, int cpus = 1, Func<IPageTableReclaim>? design = null, bool lockDep = true, long swapBytes = 0, ThpSettings? thp = null, bool swapBlockDevice = false, bool zeroPage = true, bool execOnlyPkey = false, IReadOnlyList<HugetlbPool>? hugetlbPools = null)
    {
        Machine = new Machine(new MachineOptions
        {
            Thp = thp ?? ThpSettings.Default,
            HugetlbPools = hugetlbPools ?? HugetlbPool.Empty,
            ZeroPage = zeroPage,
            ExecOnlyPkey = execOnlyPkey,
            RamBytes = ramBytes,
            PageData = pageData,
            Cpus = cpus,
            LockDep = lockDep,
            SwapBytes = swapBytes,
            SwapBlockDevice = swapBlockDevice,
            Scheduler = new PanicOnFailure(),
            Design = design ?? (() => new NoReclaim()),
        });
        Mm = Machine.CreateAddressSpace();
        Cpu = Machine.Cpus[0];
    }

    public Machine Machine { get; }

    public MmStruct Mm { get; }

    public Cpu Cpu { get; }

    public ulong Map(ulong length, Prot prot = Rw, MapFlags flags = Anon, ulong addr = 0)
    {
        var r = Mm.Mmap(Cpu, addr, length, prot, flags);
        Assert.True(r.Ok, $"mmap({addr:x}, {length}, {prot}, {flags}) failed: {r.Error}");
        return r.Address;
    }

    public void TouchAll(ulong start, ulong length, bool write = true)
    {
        for (ulong va = start; va < start + length; va += Geometry.PageSize)
        {
            var r = write ? Cpu.Touch(va) : Cpu.ReadByte(va, out _);
            Assert.True(r.Ok, $"touch 0x{va:x}: {r}");
        }
    }

    public TableCounts Tables => Mm.Status().Tables;

    /// <summary>Asserts VmPTE matches the tables really reachable from the PGD.</summary>
    public void AssertAccountingConsistent()
    {
        Mm.ValidateVmas();
        var present = Mm.CountTablesPresent();
        var status = Mm.Status();
        Assert.Equal(present, status.Tables);
        Assert.Equal((present.Pte + present.Pmd + present.Pud) * 4, status.VmPteKb);
    }

    /// <summary>For refcount designs: every table's count equals its non-none entries (no visitor is left).</summary>
    public void AssertRefcountsMatchEntries()
    {
        if (Mm.Design is not RefcountReclaim rc)
        {
            return;
        }

        foreach (long pt in PteTables())
        {
            long entries = 0;
            foreach (ulong e in Machine.Phys.Table(pt))
            {
                if (e != 0)
                {
                    entries++;
                }
            }

            long? count = rc.ExactCount(Mm, pt);
            if (count is not null)
            {
                Assert.Equal(entries, count.Value);
            }
        }
    }

    /// <summary>The PTE tables reachable from the PGD.</summary>
    public List<long> PteTables() => Invariants.PteTables(Mm);

    public void Dispose()
    {
        // A machine whose CPU failed may hold locks nobody will release: leave it be.
        if (Cpu.Mm is not null && Machine.Sync.Scheduler is not PanicOnFailure { Panicked: true })
        {
            Mm.Exit(Cpu);
        }
    }
}
