using System.Diagnostics;
using PtLab.Mm;
using PtLab.Phys;
using PtLab.Reclaim;
using PtLab.Workloads;

namespace PtLab.Tests.Concurrency;

/// <summary>The detector has teeth: a walker that maps tables without a reference is caught.</summary>
public class UseAfterFreeDetectorTests
{
    private const ulong Base = 0x40000000;

    /// <summary>
    /// One CPU faults pages in and zaps whole tables with DONTNEED; the other keeps reading the
    /// same range. Returns the first exception, if any, within the time bound.
    /// </summary>
    private static Exception? Race(string design, bool unsafeWalkers, int millis)
    {
        // Lockdep stays off for the unsafe walkers: without their reference a table's count can
        // reach zero under its own PTE lock, and lockdep would report the pmd lock taken inside it
        // before the use-after-free detector sees the stale walker.
        using var s = new Sim(ramBytes: 256L << 20, cpus: 2, design: Designs.Factory(design), lockDep: !unsafeWalkers);
        s.Machine.Phys.RecordFreeStacks = true;
        if (s.Mm.Design is RefcountReclaim rc)
        {
            rc.SkipTryGetForTesting = unsafeWalkers;
        }

        ulong a = s.Map(4 * Sim.M2, addr: Base, flags: Sim.Anon | MapFlags.Fixed);
        var sw = Stopwatch.StartNew();
        int failed = 0;
        try
        {
            MultiCpuRunner.Run(s.Machine.Cpus, cpu =>
            {
                var rng = new Random(cpu.Id);
                try
                {
                    Loop(cpu, rng);
                }
                catch
                {
                    // The other CPU stops at its next round: with an unsafe walker the bound is
                    // how long to look for the race, not how long to run once it is found.
                    Volatile.Write(ref failed, 1);
                    throw;
                }
            });
        }
        catch (AggregateException e)
        {
            return e.InnerException;
        }

        s.AssertAccountingConsistent();
        return null;

        void Loop(Cpu cpu, Random rng)
        {
            while (sw.ElapsedMilliseconds < millis && Volatile.Read(ref failed) == 0)
            {
                ulong q = a + ((ulong)rng.Next(4) * Sim.M2);
                if (cpu.Id == 0)
                {
                    for (int i = 0; i < 8; i++)
                    {
                        Assert.True(cpu.Touch(q + ((ulong)rng.Next(512) * Sim.K4)).Ok);
                    }

                    Assert.Equal(Errno.None, s.Mm.Madvise(cpu, q, Sim.M2, Advice.DontNeed));
                }
                else
                {
                    Assert.True(cpu.ReadByte(q + ((ulong)rng.Next(512) * Sim.K4), out _).Ok);
                    Assert.Equal(Errno.None, s.Mm.Madvise(cpu, q + ((ulong)rng.Next(512) * Sim.K4), Sim.K4, Advice.Free));
                }
            }
        }
    }

    [Theory]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    public void WalkersThatSkipPteTrygetAreCaught(string design)
    {
        // Found within a second alone; the bound is for a loaded host, where the two threads may
        // rarely overlap (the race needs both CPUs running at once).
        var e = Race(design, unsafeWalkers: true, millis: 30000);
        Assert.NotNull(e);
        Assert.True(e is UseAfterFreeException, e.ToString());
        var uaf = (UseAfterFreeException)e;
        Assert.Contains("--- access ---", uaf.Message);
        if (uaf.FreeStack is not null)
        {
            Assert.Contains("FreeTable", uaf.FreeStack);
        }
    }

    [Theory]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    public void TheSameRaceWithTheRealProtocolHasNoReport(string design)
    {
        Assert.Null(Race(design, unsafeWalkers: false, millis: 1500));
    }
}
