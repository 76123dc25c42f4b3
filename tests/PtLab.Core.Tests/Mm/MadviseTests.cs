using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

public class MadviseTests
{
    /// <summary>
    /// MADV_MERGEABLE marks private anonymous memory VM_MERGEABLE (splitting the VMA; no table or
    /// page changes while ksmd does not run) and leaves a shared mapping as it is (ksm_madvise
    /// ignores it, answering 0); MADV_UNMERGEABLE takes the mark off.
    /// </summary>
    [Fact]
    public void MergeableIsAFlagOfPrivateAnonymousMemoryOnly()
    {
        using var s = new Sim();
        ulong a = s.Map(2 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        ulong shared = s.Map(Sim.M2, addr: 0x80000000, flags: MapFlags.Shared | MapFlags.Anonymous | MapFlags.Fixed);
        s.TouchAll(a, 2 * Sim.M2);
        var before = s.Mm.Status();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Mergeable));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, shared, Sim.M2, Advice.Mergeable));
        Assert.Equal(VmFlags.Mergeable, s.Mm.FindVma(a)!.Flags & VmFlags.Mergeable);
        Assert.Equal(a + Sim.M2, s.Mm.FindVma(a)!.End);
        Assert.Equal(VmFlags.None, s.Mm.FindVma(shared)!.Flags & VmFlags.Mergeable);
        Assert.Equal(before, s.Mm.Status());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 2 * Sim.M2, Advice.Unmergeable));
        Assert.Equal(a + 2 * Sim.M2, s.Mm.FindVma(a)!.End); // merged back
        Assert.Equal(VmFlags.None, s.Mm.FindVma(a)!.Flags & VmFlags.Mergeable);
    }

    [Fact]
    public void DontneedDropsPagesSoReadsReturnZerosButKeepsTablesUnderTheNoneDesign()
    {
        using var s = new Sim();
        ulong a = s.Map(2 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Cpu.Write(a + 123, [9, 9, 9]);
        s.TouchAll(a, 2 * Sim.M2);
        long used = s.Machine.Phys.UsedFrames;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 2 * Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().VmRssKb);
        Assert.Equal(used - 1024, s.Machine.Phys.UsedFrames);
        Assert.Equal(new TableCounts(2, 1, 1), s.Tables);
        var buf = new byte[4];
        Assert.True(s.Cpu.Read(a + 122, buf).Ok);
        Assert.Equal(new byte[4], buf);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void DontneedOfZeroPageEntriesKeepsTheTableUnderTheNoneDesign()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M2, write: false);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(0UL, s.Mm.PeekPte(a));
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
    }

    [Fact]
    public void MadvFreeMarksPagesLazyFreeAndClean()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.TouchAll(a, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.Free));
        ulong pte = s.Mm.PeekPte(a);
        Assert.False(Entry.IsDirty(pte));
        Assert.False(Entry.IsYoung(pte));
        ref var d = ref s.Machine.Phys.Desc(Entry.Pfn(pte));
        Assert.False(d.Has(PageFlags.SwapBacked));
        Assert.False(d.Has(PageFlags.Dirty));
        Assert.Equal(256 * 4, s.Mm.Status().VmRssKb); // still resident until reclaim
        Assert.False(s.Cpu.Tlb.Holds(a)); // the clean entry must be refetched so a write sets dirty
    }

    [Fact]
    public void AWriteAfterMadvFreeDirtiesTheEntryWhichCancelsTheLazyFree()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.TouchAll(a, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.Free));
        long faults = s.Mm.Counters().Faults;
        Assert.True(s.Cpu.Touch(a, 3).Ok);
        Assert.Equal(faults, s.Mm.Counters().Faults); // hardware sets the dirty bit: no fault
        Assert.True(Entry.IsDirty(s.Mm.PeekPte(a)));
        Assert.False(Entry.IsDirty(s.Mm.PeekPte(a + Sim.K4)));
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(3, v);
    }

    [Fact]
    public void MadvFreeLeavesTheZeroPageAlone()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.TouchAll(a, Sim.M1, write: false);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.Free));
        Assert.True(Entry.IsSpecial(s.Mm.PeekPte(a)));
    }

    [Fact]
    public void HarmlessAdviceIsAcceptedAndChangesNothing()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.TouchAll(a, Sim.M1);
        foreach (var adv in new[] { Advice.Normal, Advice.Random, Advice.Sequential, Advice.WillNeed, Advice.HugePage, Advice.NoHugePage })
        {
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, adv));
        }

        Assert.Equal(256 * 4, s.Mm.Status().VmRssKb);
    }
}
