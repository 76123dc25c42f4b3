using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Tests.Reclaim;

/// <summary>Upstream CONFIG_PT_RECLAIM, checked against the figures in KERNEL-FACTS.</summary>
public class PtReclaimTests
{
    private static Sim New(long ram = 256L << 20) => new(ramBytes: ram, pageData: false, design: () => new PtReclaim());

    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 64)]
    [InlineData(512, 64)]
    public void OnlyAZapCoveringAWholeTableFreesIt(int callsPer2M, int tablesLeft)
    {
        using var s = New();
        ulong a = s.Map(64 * Sim.M2, flags: Sim.Anon | MapFlags.NoReserve);
        ulong step = Sim.M2 / (ulong)callsPer2M;
        for (ulong q = a; q < a + (64 * Sim.M2); q += Sim.M2)
        {
            s.TouchAll(q, Sim.M2);
            for (ulong c = 0; c < (ulong)callsPer2M; c++)
            {
                Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, q + (c * step), step, Advice.DontNeed));
            }
        }

        Assert.Equal(tablesLeft, s.Tables.Pte);
        s.AssertAccountingConsistent();

        // One DONTNEED over everything covers every table whole: the empty ones go now.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 64 * Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Tables.Pte);
    }

    [Fact]
    public void ZeroPageTablesAreFreedByTheZap()
    {
        using var s = New();
        ulong a = s.Map(64 * Sim.M2, flags: Sim.Anon | MapFlags.NoReserve);
        s.TouchAll(a, 64 * Sim.M2, write: false);
        Assert.Equal(64, s.Tables.Pte);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 64 * Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Tables.Pte);
    }

    [Fact]
    public void AnUnalignedZapFreesOnlyTheTablesItCoversWhole()
    {
        using var s = New();
        ulong a = s.Map(3 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 3 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M1, 2 * Sim.M2, Advice.DontNeed));
        Assert.Equal(2, s.Tables.Pte); // only the middle table was covered whole
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 3 * Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Tables.Pte);
    }

    [Fact]
    public void MadvFreeNeverFreesTables()
    {
        using var s = New(ram: 16L << 20);
        ulong a = s.Map(64UL << 20, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong q = a; q < a + (64UL << 20); q += Sim.M2)
        {
            s.TouchAll(q, Sim.M2);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, q, Sim.M2, Advice.Free));
        }

        Assert.Equal(32, s.Tables.Pte);
        Assert.True(s.Machine.ReclaimStats.Discarded > 0);
    }

    [Fact]
    public void TheCoverLetterLoopFreesEveryTableThroughTheFastPath()
    {
        using var s = New();
        var design = (PtReclaim)s.Mm.Design;
        ulong a = s.Map(128UL << 20, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong q = a; q < a + (128UL << 20); q += Sim.M2)
        {
            s.TouchAll(q, Sim.M2);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, q, Sim.M2, Advice.DontNeed));
        }

        Assert.Equal(0, s.Tables.Pte);
        Assert.Equal(64, design.FastPathFrees);
        Assert.Equal(0, design.SlowPathFrees);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void ExitAfterReclaimLeavesNoFrame()
    {
        var s = New();
        ulong a = s.Map(8 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 8 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 4 * Sim.M2, Advice.DontNeed));
        s.Dispose();
        Assert.Equal(1, s.Machine.Phys.UsedFrames);
    }
}
