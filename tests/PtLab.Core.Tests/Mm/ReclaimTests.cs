using PtLab.Mm;
using PtLab.Paging;

namespace PtLab.Tests.Mm;

public class ReclaimTests
{
    [Fact]
    public void MemoryPressureDiscardsCleanLazyFreePagesButKeepsTheirTablesUnderTheNoneDesign()
    {
        using var s = new Sim(ramBytes: 16L << 20, pageData: false);
        ulong size = 64UL << 20;
        ulong a = s.Map(size, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong q = a; q < a + size; q += Sim.M2)
        {
            s.TouchAll(q, Sim.M2);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, q, Sim.M2, Advice.Free));
        }

        var st = s.Mm.Status();
        Assert.True(st.VmRssKb < 16 << 10, $"RSS {st.VmRssKb} kB must stay under 16 MiB of RAM");
        Assert.Equal(32, st.Tables.Pte); // no table freed by reclaim in the none design
        Assert.True(s.Machine.ReclaimStats.Discarded >= (48L << 20) / 4096);
        Assert.True(s.Machine.Phys.FreeFrames >= s.Machine.Phys.MinWatermark);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void APageWrittenAfterMadvFreeSurvivesReclaimWithItsData()
    {
        using var s = new Sim(ramBytes: 8L << 20);
        ulong a = s.Map(Sim.M1, flags: Sim.Anon | MapFlags.NoReserve);
        s.TouchAll(a, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.Free));
        Assert.True(s.Cpu.Write(a + 8, [7, 7]).Ok);

        // Pressure: keep faulting new lazy-free memory until the first megabyte was scanned.
        ulong b = s.Map(64UL << 20, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong q = b; q < b + (64UL << 20) && s.Machine.ReclaimStats.Redirtied == 0; q += Sim.M1)
        {
            s.TouchAll(q, Sim.M1);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, q, Sim.M1, Advice.Free));
        }

        Assert.True(s.Machine.ReclaimStats.Redirtied >= 1);
        var buf = new byte[2];
        Assert.True(s.Cpu.Read(a + 8, buf).Ok);
        Assert.Equal(new byte[] { 7, 7 }, buf);
        Assert.True(Entry.IsPresent(s.Mm.PeekPte(a)));
        Assert.Equal(0UL, s.Mm.PeekPte(a + Sim.K4)); // clean neighbours were discarded
        Assert.True(s.Cpu.ReadByte(a + Sim.K4, out byte z).Ok);
        Assert.Equal(0, z);
    }

    [Fact]
    public void WithoutLazyFreePagesOrSwapPressureEndsInOom()
    {
        using var s = new Sim(ramBytes: 4L << 20);
        ulong a = s.Map(8 * Sim.M1, flags: Sim.Anon | MapFlags.NoReserve);
        AccessResult r = default;
        for (ulong va = a; va < a + (8 * Sim.M1) && r.Ok; va += Sim.K4)
        {
            r = s.Cpu.Touch(va);
        }

        Assert.Equal(FaultOutcome.Oom, r.Outcome);
        Assert.Equal(0, s.Machine.ReclaimStats.Discarded);
    }
}
