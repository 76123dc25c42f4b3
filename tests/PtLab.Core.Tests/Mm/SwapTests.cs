using PtLab.Mm;
using PtLab.Paging;

namespace PtLab.Tests.Mm;

public class SwapTests
{
    public static TheoryData<string> Designs => Sim.EveryDesign();

    [Theory]
    [MemberData(nameof(Designs))]
    public void PagesBeyondRamGoToSwapAndComeBackIntact(string design)
    {
        using var s = new Sim(ramBytes: 8L << 20, swapBytes: 64L << 20, design: PtLab.Reclaim.Designs.Factory(design));
        ulong size = 24UL << 20;
        ulong a = s.Map(size, flags: Sim.Anon | MapFlags.NoReserve);
        for (ulong va = a; va < a + size; va += Sim.K4)
        {
            Assert.True(s.Cpu.Write(va + 7, BitConverter.GetBytes(va)).Ok);
        }

        var st = s.Mm.Status();
        Assert.True(st.VmSwapKb > 0, "nothing was swapped out");
        Assert.True(st.VmRssKb < 8 << 10);
        Assert.True(s.Machine.SwappedOut > 0);
        var buf = new byte[8];
        for (ulong va = a; va < a + size; va += Sim.K4)
        {
            Assert.True(s.Cpu.Read(va + 7, buf).Ok);
            Assert.Equal(va, BitConverter.ToUInt64(buf));
        }

        Assert.True(s.Machine.Phys.Swap!.PagesIn > 0);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    [Fact]
    public void ZappingSwapEntriesFreesTheirSlots()
    {
        using var s = new Sim(ramBytes: 4L << 20, swapBytes: 32L << 20, pageData: false);
        ulong a = s.Map(16UL << 20, flags: Sim.Anon | MapFlags.NoReserve);
        s.TouchAll(a, 16UL << 20);
        Assert.True(s.Mm.Status().VmSwapKb > 0);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 16UL << 20, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().VmSwapKb);
        Assert.Equal(0, s.Machine.Phys.Swap!.UsedSlots);
    }

    [Fact]
    public void SwapEntriesHoldTheirTableUnderPteRef()
    {
        using var s = new Sim(ramBytes: 4L << 20, swapBytes: 32L << 20, pageData: false, design: PtLab.Reclaim.Designs.Factory("pte-ref"));
        ulong a = s.Map(16UL << 20, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed | MapFlags.NoReserve);
        s.TouchAll(a, 16UL << 20);
        Assert.True(Entry.IsSwap(s.Mm.PeekPte(a))); // the oldest pages went out first
        // DONTNEED of the table's present half leaves swap entries: the table must stay.
        int swapped = 0;
        for (ulong va = a; va < a + Sim.M2; va += Sim.K4)
        {
            if (Entry.IsSwap(s.Mm.PeekPte(va)))
            {
                swapped++;
            }
        }

        Assert.Equal(512, swapped);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.DontNeed));
        Assert.True(Entry.IsSwap(s.Mm.PeekPte(a + Sim.M1)));
        Assert.Equal(8, s.Tables.Pte);
        s.AssertRefcountsMatchEntries();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M1, Sim.M1, Advice.DontNeed));
        Assert.Equal(7, s.Tables.Pte);
    }

    [Fact]
    public void TokensSurviveASwapRoundTrip()
    {
        using var s = new Sim(ramBytes: 4L << 20, swapBytes: 32L << 20, pageData: false);
        ulong a = s.Map(12UL << 20, flags: Sim.Anon | MapFlags.NoReserve);
        var tokens = new Dictionary<ulong, ulong>();
        for (ulong va = a; va < a + (12UL << 20); va += Sim.K4)
        {
            Assert.True(s.Cpu.Write(va, BitConverter.GetBytes(va)).Ok);
            tokens[va] = PtLab.Phys.ContentToken.AfterWrite(0, 0, BitConverter.GetBytes(va));
        }

        foreach (var (va, t) in tokens)
        {
            Assert.True(s.Cpu.ReadToken(va, out ulong got).Ok);
            Assert.Equal(t, got);
        }
    }
}
