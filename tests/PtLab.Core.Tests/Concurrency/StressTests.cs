using System.Diagnostics;
using PtLab.Mm;
using PtLab.Paging;
using PtLab.Workloads;

namespace PtLab.Tests.Concurrency;

/// <summary>
/// Bounded stress: several CPUs fault, DONTNEED, munmap and mmap over ranges that share PTE tables
/// (each CPU owns every Nth page of a common region), and check their own data as they go.
/// </summary>
public class StressTests
{
    private const ulong Region = 0x40000000UL - (4UL << 20); // straddles a PMD-table boundary
    private const int Pages = 2048;                          // 8 MiB, four PTE tables

    public static TheoryData<string> Designs => Sim.EveryDesign();

    [Theory]
    [MemberData(nameof(Designs))]
    public void ConcurrentFaultsZapsAndRemapsKeepEveryCpusDataAndTheCounters(string design)
    {
        const int cpus = 3;
        using var s = new Sim(ramBytes: 512L << 20, cpus: cpus, design: PtLab.Reclaim.Designs.Factory(design));
        s.Map((ulong)Pages * Sim.K4, addr: Region, flags: Sim.Anon | MapFlags.Fixed);
        long ops = 0;
        var deadline = Stopwatch.StartNew();
        MultiCpuRunner.Run(s.Machine.Cpus, cpu =>
        {
            var rng = new Random(1234 + cpu.Id);
            var expected = new byte?[Pages]; // null: unknown yet (never written => zero)
            var buf = new byte[1];
            long mine = 0;
            // At least 1.5 s, and on a loaded host until each CPU has done its share (120 operations, capped at a minute).
            while (deadline.ElapsedMilliseconds < 60_000 && (deadline.ElapsedMilliseconds < 1500 || mine < 120))
            {
                int page = (rng.Next(Pages / cpus) * cpus) + cpu.Id;
                ulong va = Region + ((ulong)page * Sim.K4);
                switch (rng.Next(10))
                {
                    case < 5:
                        byte v = (byte)rng.Next(1, 256);
                        Check(cpu.Write(va + (ulong)cpu.Id, [v]));
                        expected[page] = v;
                        break;
                    case < 7:
                        Check(cpu.Read(va + (ulong)cpu.Id, buf));
                        Assert.Equal(expected[page] ?? 0, buf[0]);
                        break;
                    case < 9:
                        Assert.Equal(Errno.None, s.Mm.Madvise(cpu, va, Sim.K4, Advice.DontNeed));
                        expected[page] = 0;
                        break;
                    default:
                        Assert.Equal(Errno.None, s.Mm.Munmap(cpu, va, Sim.K4));
                        Assert.Equal(FaultOutcome.SegvMapErr, cpu.ReadByte(va, out _).Outcome);
                        var r = s.Mm.Mmap(cpu, va, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.FixedNoReplace);
                        Assert.Equal(va, r.Address);
                        expected[page] = 0;
                        break;
                }

                mine++;
            }

            // Final check of every page this CPU owns.
            for (int page = cpu.Id; page < Pages; page += cpus)
            {
                Check(cpu.Read(Region + ((ulong)page * Sim.K4) + (ulong)cpu.Id, buf));
                Assert.Equal(expected[page] ?? 0, buf[0]);
            }

            Interlocked.Add(ref ops, mine);
        });

        Assert.True(ops > 300, $"only {ops} operations completed");
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
        long present = 0;
        for (int p = 0; p < Pages; p++)
        {
            ulong e = s.Mm.PeekPte(Region + ((ulong)p * Sim.K4));
            if (Entry.IsPresent(e) && !Entry.IsSpecial(e))
            {
                present++;
            }
        }

        Assert.Equal(present * 4, s.Mm.Status().RssAnonKb);
        // The remaps merged back wherever the kernel would merge: the region is covered without a
        // gap, and two neighbours stay apart only when their anon_vmas differ (a page remapped
        // while both its neighbours were unmapped, then written, got an anon_vma of its own, and
        // is_mergeable_anon_vma() keeps it apart; on a quiet host that never happens).
        var vmas = s.Mm.Vmas.ToList();
        Assert.Equal(Region, vmas[0].Start);
        Assert.Equal(Region + ((ulong)Pages * Sim.K4), vmas[^1].End);
        for (int i = 1; i < vmas.Count; i++)
        {
            Assert.Equal(vmas[i - 1].End, vmas[i].Start);
            Assert.Equal(vmas[i - 1].Flags, vmas[i].Flags);
            Assert.True(vmas[i - 1].AnonVma is { } a && vmas[i].AnonVma is { } b && a != b,
                $"{vmas[i - 1]} and {vmas[i]} were left apart although their anon_vmas allow a merge");
        }

        s.Dispose();
        Assert.Equal(1, s.Machine.Phys.UsedFrames);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void ConcurrentHugePageFaultsSplitsAndZapsInOnePmdTableKeepDataAndCounters(string design)
    {
        // Each CPU owns every Nth 2 MiB block of a MADV_HUGEPAGE region, so their huge pmds share
        // one PMD table (and its lock) while faults, splits, whole and partial zaps, mprotects and
        // remaps run at once.
        const int cpus = 3, blocks = 12;
        ulong region = 0x80000000UL, block = Sim.M2;
        using var s = new Sim(ramBytes: 512L << 20, cpus: cpus, design: PtLab.Reclaim.Designs.Factory(design));
        s.Map(blocks * block, addr: region, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, region, blocks * block, Advice.HugePage));
        long ops = 0;
        var deadline = Stopwatch.StartNew();
        MultiCpuRunner.Run(s.Machine.Cpus, cpu =>
        {
            var rng = new Random(99 + cpu.Id);
            var expected = new Dictionary<ulong, byte>(); // page -> last byte written at offset cpu.Id
            var buf = new byte[1];
            long mine = 0;
            // At least 1.5 s, and on a loaded host until each CPU has done its share (40 operations, capped at a minute).
            while (deadline.ElapsedMilliseconds < 60_000 && (deadline.ElapsedMilliseconds < 1500 || mine < 40))
            {
                ulong b = region + ((ulong)((rng.Next(blocks / cpus) * cpus) + cpu.Id) * block);
                ulong page = b + ((ulong)rng.Next(512) * Sim.K4);
                switch (rng.Next(12))
                {
                    case < 5:
                        byte v = (byte)rng.Next(1, 256);
                        Check(cpu.Write(page + (ulong)cpu.Id, [v]));
                        expected[page] = v;
                        break;
                    case < 7:
                        Check(cpu.Read(page + (ulong)cpu.Id, buf));
                        Assert.Equal(expected.GetValueOrDefault(page), buf[0]);
                        break;
                    case 7:
                        Assert.Equal(Errno.None, s.Mm.Madvise(cpu, page, Sim.K4, Advice.DontNeed));
                        expected.Remove(page);
                        break;
                    case 8:
                        Assert.Equal(Errno.None, s.Mm.Madvise(cpu, b, block, Advice.DontNeed));
                        foreach (ulong k in expected.Keys.Where(k => k >= b && k < b + block).ToList())
                        {
                            expected.Remove(k);
                        }

                        break;
                    case 9:
                        Assert.Equal(Errno.None, s.Mm.Madvise(cpu, b, block, Advice.PopulateRead));
                        break;
                    case 10:
                        bool whole = rng.Next(2) == 0;
                        Assert.Equal(Errno.None, s.Mm.Mprotect(cpu, whole ? b : page, whole ? block : Sim.K4, Prot.Read));
                        Assert.Equal(Errno.None, s.Mm.Mprotect(cpu, b, block, Sim.Rw));
                        break;
                    default:
                        Assert.Equal(Errno.None, s.Mm.Munmap(cpu, b, block));
                        Assert.True(s.Mm.Mmap(cpu, b, block, Sim.Rw, Sim.Anon | MapFlags.FixedNoReplace).Ok);
                        Assert.Equal(Errno.None, s.Mm.Madvise(cpu, b, block, Advice.HugePage));
                        foreach (ulong k in expected.Keys.Where(k => k >= b && k < b + block).ToList())
                        {
                            expected.Remove(k);
                        }

                        break;
                }

                mine++;
            }

            foreach (var (page, v) in expected)
            {
                Check(cpu.Read(page + (ulong)cpu.Id, buf));
                Assert.Equal(v, buf[0]);
            }

            Interlocked.Add(ref ops, mine);
        });

        Assert.True(ops > 100, $"only {ops} operations completed");
        Assert.True(s.Mm.ThpCounters().FaultAlloc > 0 && s.Mm.ThpCounters().SplitPmd > 0, $"{s.Mm.ThpCounters()}");
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
        s.Dispose();
        Assert.Equal(s.Machine.Phys.ReservedFrames, s.Machine.Phys.UsedFrames);
    }

    private static void Check(AccessResult r) => Assert.True(r.Ok, r.ToString());
}
