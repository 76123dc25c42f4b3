using System.Diagnostics;
using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Workloads;

namespace PtLab.Tests.Concurrency;

/// <summary>
/// The races the seed's pte_ref.rst is about, run on real threads with the use-after-free detector
/// and lockdep on: a page-table walker vs MADV_DONTNEED vs a fault that allocates a new table;
/// fast GUP vs a table free; MADV_FREE reclaim vs refaults of the same range.
/// </summary>
public class SeedRaceTests
{
    private const ulong Base = 0x40000000;
    private const int Tables = 4;

    public static TheoryData<string> Designs => Sim.EveryDesign();

    private static Sim New(string design, long ram = 256L << 20, bool pageData = true)
    {
        var s = new Sim(ramBytes: ram, pageData: pageData, cpus: 3, design: PtLab.Reclaim.Designs.Factory(design));
        s.Machine.Phys.RecordFreeStacks = true;
        return s;
    }

    // A race runs for 1.5 s and then until every role has done its share, so that a loaded host
    // lengthens the run instead of failing it; two minutes bound a role that cannot progress.
    private static bool Racing(Stopwatch sw, params long[] shortOf) =>
        sw.ElapsedMilliseconds < 120_000 && (sw.ElapsedMilliseconds < 1500 || shortOf.Any(n => n > 0));

    private static void Touch(Cpu cpu, ulong start, ulong length)
    {
        for (ulong va = start; va < start + length; va += Sim.K4)
        {
            var r = cpu.Touch(va);
            Assert.True(r.Ok, r.ToString());
        }
    }

    private static void AssertEndState(Sim s)
    {
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
        Assert.Equal(s.Mm.CountTablesPresent().Pte, s.Mm.Status().Tables.Pte);
        s.Dispose();
        Assert.Equal(1, s.Machine.Phys.UsedFrames);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void WalkerDontneedAndFaultRaceWithoutAReport(string design)
    {
        var s = New(design);
        ulong a = s.Map(Tables * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        var sw = Stopwatch.StartNew();
        long walks = 0, zaps = 0, faults = 0;
        MultiCpuRunner.Run(s.Machine.Cpus, cpu =>
        {
            var rng = new Random(cpu.Id * 7919);
            var buf = new byte[1];
            var vec = new byte[512];
            var pages = new long[4];
            while (Racing(sw, 11 - Volatile.Read(ref walks), 11 - Volatile.Read(ref zaps), 11 - Volatile.Read(ref faults)))
            {
                ulong table = a + ((ulong)rng.Next(Tables) * Sim.M2);
                switch (cpu.Id)
                {
                    case 0: // walkers: mincore's generic walk and slow GUP
                        Assert.Equal(Errno.None, s.Mm.Mincore(cpu, table, Sim.M2, vec));
                        long n = s.Mm.GetUserPages(cpu, table + ((ulong)rng.Next(508) * Sim.K4), 4, write: false, pages);
                        Assert.Equal(4, n);
                        s.Mm.PutUserPages(cpu, pages);
                        walks++;
                        break;
                    case 1: // MADV_DONTNEED of whole tables
                        Assert.Equal(Errno.None, s.Mm.Madvise(cpu, table, Sim.M2, Advice.DontNeed));
                        zaps++;
                        break;
                    default: // faults that may have to allocate a new table; data is ours or zero
                        ulong va = table + ((ulong)rng.Next(512) * Sim.K4);
                        byte v = (byte)rng.Next(1, 256);
                        Assert.True(cpu.Write(va + 5, [v]).Ok);
                        Assert.True(cpu.Read(va + 5, buf).Ok);
                        Assert.True(buf[0] == v || buf[0] == 0, $"read {buf[0]} after writing {v}");
                        faults++;
                        break;
                }
            }
        });

        Assert.True(walks > 10 && zaps > 10 && faults > 10, $"walks {walks}, zaps {zaps}, faults {faults}");
        AssertEndState(s);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void FastGupAgainstTableFreesNeverPinsAFreedPage(string design)
    {
        var s = New(design);
        ulong a = s.Map(Tables * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        var sw = Stopwatch.StartNew();
        long pinned = 0;
        MultiCpuRunner.Run(s.Machine.Cpus, cpu =>
        {
            var rng = new Random(cpu.Id + 17);
            var pages = new long[8];
            while (Racing(sw, 41 - Volatile.Read(ref pinned)))
            {
                ulong table = a + ((ulong)rng.Next(Tables) * Sim.M2);
                if (cpu.Id == 0)
                {
                    long n = s.Mm.GetUserPagesFast(cpu, table + ((ulong)rng.Next(504) * Sim.K4), 8, write: true, pages);
                    Assert.Equal(8, n);
                    foreach (long pfn in pages)
                    {
                        Assert.False(s.Machine.Phys.Desc(pfn).Has(PageFlags.Free), $"pinned frame {pfn:x} is free");
                    }

                    s.Mm.PutUserPages(cpu, pages);
                    pinned += n;
                }
                else if (cpu.Id == 1)
                {
                    Assert.Equal(Errno.None, s.Mm.Madvise(cpu, table, Sim.M2, Advice.DontNeed));
                }
                else
                {
                    Touch(cpu, table + ((ulong)rng.Next(496) * Sim.K4), 16 * Sim.K4);
                }
            }
        });

        Assert.True(pinned > 40, $"only {pinned} pages pinned");
        AssertEndState(s);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void MadvFreeReclaimAgainstRefaultsKeepsRewrittenData(string design)
    {
        var s = New(design, ram: 24L << 20);
        const int regionTables = 32; // 64 MiB of lazy-free churn in 24 MiB of RAM
        ulong a = s.Map(regionTables * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed | MapFlags.NoReserve);
        var sw = Stopwatch.StartNew();
        long checks = 0, fills = 0;
        MultiCpuRunner.Run(s.Machine.Cpus.Take(2).ToList(), cpu =>
        {
            var rng = new Random(cpu.Id + 99);
            var buf = new byte[1];
            // 24 fills put 48 MiB through 24 MiB of RAM: reclaim must have run by then.
            while (Racing(sw, 21 - Volatile.Read(ref checks), 24 - Volatile.Read(ref fills)))
            {
                if (cpu.Id == 0)
                {
                    // Fill and lazily free whole tables, so reclaim keeps running.
                    ulong t = a + ((ulong)rng.Next(regionTables / 2, regionTables) * Sim.M2);
                    Touch(cpu, t, Sim.M2);
                    Assert.Equal(Errno.None, s.Mm.Madvise(cpu, t, Sim.M2, Advice.Free));
                    fills++;
                }
                else
                {
                    // Lazily free a page, write it again (cancelling the lazy free), and expect the
                    // data to survive whatever reclaim does meanwhile. Rewritten pages are
                    // swap-backed again and, without swap, stay: keep them to 4 MiB.
                    ulong va = a + ((ulong)rng.Next(2 * 512) * Sim.K4);
                    Assert.True(cpu.Write(va, [1]).Ok);
                    Assert.Equal(Errno.None, s.Mm.Madvise(cpu, va, Sim.K4, Advice.Free));
                    byte v = (byte)rng.Next(2, 256);
                    Assert.True(cpu.Write(va + 9, [v]).Ok);
                    Assert.True(cpu.Read(va + 9, buf).Ok);
                    Assert.Equal(v, buf[0]);
                    checks++;
                }
            }
        });

        Assert.True(checks > 20, $"only {checks} rewrites checked");
        Assert.True(s.Machine.ReclaimStats.Discarded > 0, "reclaim never ran");
        AssertEndState(s);
    }
}
