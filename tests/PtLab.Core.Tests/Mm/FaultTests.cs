using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

public class FaultTests
{
    [Fact]
    public void AReadFaultMapsTheSharedZeroPageWithoutCountingRss()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.True(s.Cpu.ReadByte(a + 100, out byte v).Ok);
        Assert.Equal(0, v);
        ulong pte = s.Mm.PeekPte(a);
        Assert.True(Entry.IsSpecial(pte));
        Assert.False(Entry.IsWritable(pte));
        Assert.Equal(s.Machine.Phys.ZeroPfn, Entry.Pfn(pte));
        Assert.Equal(0, s.Mm.Status().VmRssKb);
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
    }

    [Fact]
    public void OnAHostWithoutTheZeroPageAReadFaultTakesAPrivatePageAsAWriteFaultDoes()
    {
        using var s = new Sim(zeroPage: false);
        ulong a = s.Map(Sim.M1);
        ulong ro = s.Map(Sim.M1, prot: Prot.Read);
        Assert.True(s.Cpu.ReadByte(a + 100, out byte v).Ok);
        Assert.Equal(0, v);
        ulong pte = s.Mm.PeekPte(a);
        Assert.False(Entry.IsSpecial(pte));
        Assert.NotEqual(s.Machine.Phys.ZeroPfn, Entry.Pfn(pte));
        // do_anonymous_page maps a new page writable and dirty wherever the VMA may be written.
        Assert.True(Entry.IsWritable(pte));
        Assert.True(Entry.IsDirty(pte));
        Assert.True(s.Cpu.ReadByte(ro, out _).Ok);
        Assert.False(Entry.IsWritable(s.Mm.PeekPte(ro)));
        Assert.NotEqual(s.Machine.Phys.ZeroPfn, Entry.Pfn(s.Mm.PeekPte(ro)));
        Assert.Equal(8, s.Mm.Status().RssAnonKb);

        // The write that follows finds its page already writable: no copy.
        long before = Entry.Pfn(pte);
        Assert.True(s.Cpu.Write(a + 10, [1, 2, 3]).Ok);
        Assert.Equal(before, Entry.Pfn(s.Mm.PeekPte(a)));
        Assert.Equal(8, s.Mm.Status().RssAnonKb);
    }

    [Fact]
    public void AWriteAfterAReadBreaksCowFromTheZeroPage()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
        Assert.True(s.Cpu.Write(a + 10, [1, 2, 3]).Ok);
        ulong pte = s.Mm.PeekPte(a);
        Assert.False(Entry.IsSpecial(pte));
        Assert.True(Entry.IsWritable(pte));
        Assert.True(Entry.IsDirty(pte));
        Assert.NotEqual(s.Machine.Phys.ZeroPfn, Entry.Pfn(pte));
        Assert.Equal(4, s.Mm.Status().RssAnonKb);
        var buf = new byte[16];
        Assert.True(s.Cpu.Read(a, buf).Ok);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0 }, buf);
    }

    [Fact]
    public void AWriteFaultAllocatesAZeroedExclusiveAnonymousPage()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.True(s.Cpu.Touch(a + 5, 42).Ok);
        long pfn = Entry.Pfn(s.Mm.PeekPte(a));
        ref var d = ref s.Machine.Phys.Desc(pfn);
        Assert.True(d.Has(PageFlags.Anon));
        Assert.True(d.Has(PageFlags.SwapBacked));
        Assert.Equal(1, d.MapCount);
        // page->mapping is the VMA's anon_vma, page->index the linear page index (the address in pages).
        Assert.Same(s.Mm.FindVma(a)!.AnonVma, s.Machine.Phys.RmapOwner(pfn));
        Assert.Equal(a >> 12, d.RmapAddress);
        var buf = new byte[8];
        Assert.True(s.Cpu.Read(a, buf).Ok);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 42, 0, 0 }, buf);
    }

    [Fact]
    public void WritingReadOnlyMemoryIsSegvAccerr()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, Prot.Read);
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
        var r = s.Cpu.Touch(a + 7);
        Assert.Equal(FaultOutcome.SegvAccErr, r.Outcome);
        Assert.Equal(a + 7, r.Address);
    }

    [Fact]
    public void AnyAccessToProtNoneIsSegvAccerr()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, Prot.None);
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.ReadByte(a, out _).Outcome);
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.Touch(a).Outcome);
    }

    [Fact]
    public void AccessOutsideAnyVmaIsSegvMaperr()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(a + Sim.M1).Outcome);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.ReadByte(a - 1, out _).Outcome);
    }

    [Fact]
    public void AWriteOnlyMappingIsReadableAsOnX86()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, Prot.Write);
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
    }

    [Fact]
    public void ReadsAndWritesCrossPageBoundariesAndStopAtTheFirstFault()
    {
        using var s = new Sim();
        ulong a = s.Map(3 * Sim.K4);
        var data = Enumerable.Range(0, 6000).Select(i => (byte)i).ToArray();
        Assert.True(s.Cpu.Write(a + 4000, data).Ok);
        var back = new byte[6000];
        Assert.True(s.Cpu.Read(a + 4000, back).Ok);
        Assert.Equal(data, back);
        Assert.Equal(3 * 4, s.Mm.Status().RssAnonKb);
        var tooFar = s.Cpu.Write(a + (2 * Sim.K4), new byte[Sim.K4 + 1]);
        Assert.Equal(FaultOutcome.SegvMapErr, tooFar.Outcome);
        Assert.Equal(a + (3 * Sim.K4), tooFar.Address);
    }

    [Fact]
    public void MprotectToReadOnlyWriteProtectsEntriesAndBackGrantsWriteWithoutAFault()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.TouchAll(a, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Read));
        Assert.False(Entry.IsWritable(s.Mm.PeekPte(a)));
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.Touch(a).Outcome);
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(1, v);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Sim.Rw));
        Assert.True(Entry.IsWritable(s.Mm.PeekPte(a))); // exclusive and dirty: can_change_pte_writable
        long faults = s.Mm.Counters().Faults;
        Assert.True(s.Cpu.Touch(a, 9).Ok);
        Assert.Equal(faults, s.Mm.Counters().Faults);
    }

    [Fact]
    public void MprotectToNoneKeepsPagesButMakesThemInaccessible()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.Cpu.Touch(a, 77);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.None));
        Assert.True(Entry.IsProtNone(s.Mm.PeekPte(a)));
        Assert.Equal(4, s.Mm.Status().RssAnonKb);
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.ReadByte(a, out _).Outcome);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Read));
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(77, v);
    }

    [Fact]
    public void MapPopulatePrefaultsWritablePrivateMemory()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, flags: Sim.Anon | MapFlags.Populate);
        Assert.Equal(256 * 4, s.Mm.Status().RssAnonKb);
        long faults = s.Mm.Counters().Faults;
        s.TouchAll(a, Sim.M1);
        Assert.Equal(faults, s.Mm.Counters().Faults);
        ulong r = s.Map(Sim.M1, Prot.Read, flags: Sim.Anon | MapFlags.Populate);
        Assert.True(Entry.IsSpecial(s.Mm.PeekPte(r))); // read-only populate maps the zero page
    }

    [Fact]
    public void TheTlbIsFlushedWhenAPageIsZapped()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        s.Cpu.Touch(a, 5);
        Assert.True(s.Cpu.Tlb.Holds(a));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.DontNeed));
        Assert.False(s.Cpu.Tlb.Holds(a));
        Assert.True(s.Cpu.ReadByte(a, out byte v).Ok);
        Assert.Equal(0, v);
    }

    [Fact]
    public void RunningOutOfMemoryIsAnOomOutcomeNotACrash()
    {
        using var s = new Sim(ramBytes: 1L << 20);
        ulong a = s.Map(4 * Sim.M1, flags: Sim.Anon | MapFlags.NoReserve);
        AccessResult last = default;
        for (ulong va = a; va < a + (4 * Sim.M1); va += Sim.K4)
        {
            last = s.Cpu.Touch(va);
            if (!last.Ok)
            {
                break;
            }
        }

        Assert.Equal(FaultOutcome.Oom, last.Outcome);
        Assert.True(s.Machine.Phys.AllocationFailures > 0);
    }
}
