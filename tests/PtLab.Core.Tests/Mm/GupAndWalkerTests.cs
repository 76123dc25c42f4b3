using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

public class GupAndWalkerTests
{
    public static TheoryData<string> Designs => Sim.EveryDesign();

    private static Sim New(string design) => new(design: PtLab.Reclaim.Designs.Factory(design));

    [Theory]
    [MemberData(nameof(Designs))]
    public void SlowGupFaultsPagesInAndPinsThem(string design)
    {
        using var s = New(design);
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        var pages = new long[8];
        Assert.Equal(8, s.Mm.GetUserPages(s.Cpu, a, 8, write: true, pages));
        Assert.Equal(8 * 4, s.Mm.Status().RssAnonKb);
        foreach (long pfn in pages)
        {
            Assert.Equal(2, s.Machine.Phys.Desc(pfn).RefCount); // the mapping's and ours
        }

        // A zap drops the mapping; our pin keeps the page from the free list.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.False(s.Machine.Phys.Desc(pages[0]).Has(PageFlags.Free));
        long used = s.Machine.Phys.UsedFrames;
        s.Mm.PutUserPages(s.Cpu, pages);
        Assert.Equal(used - 8, s.Machine.Phys.UsedFrames);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void FastGupTakesPresentPagesWithoutTheSlowPath(string design)
    {
        using var s = New(design);
        ulong a = s.Map(Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 16 * Sim.K4);
        var pages = new long[32];
        Assert.Equal(32, s.Mm.GetUserPagesFast(s.Cpu, a, 32, write: true, pages));
        Assert.Equal(16, s.Mm.GupFastPages); // the rest faulted in through the slow path
        Assert.Equal(32 * 4, s.Mm.Status().RssAnonKb);
        s.Mm.PutUserPages(s.Cpu, pages);
    }

    [Fact]
    public void GupOfUnmappedMemoryIsEfault()
    {
        using var s = new Sim();
        var pages = new long[1];
        Assert.Equal(-(long)Errno.EFAULT, s.Mm.GetUserPages(s.Cpu, 0x40000000, 1, write: false, pages));
        ulong r = s.Map(Sim.K4, Prot.Read);
        Assert.Equal(-(long)Errno.EFAULT, s.Mm.GetUserPagesFast(s.Cpu, r, 1, write: true, pages));
    }

    [Fact]
    public void MincoreReportsPresentPagesAndRefusesHoles()
    {
        using var s = new Sim();
        ulong a = s.Map(8 * Sim.K4, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Cpu.Touch(a);
        s.Cpu.ReadByte(a + (2 * Sim.K4), out _);
        var vec = new byte[8];
        Assert.Equal(Errno.None, s.Mm.Mincore(s.Cpu, a, 8 * Sim.K4, vec));
        Assert.Equal(new byte[] { 1, 0, 1, 0, 0, 0, 0, 0 }, vec);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mincore(s.Cpu, a, 16 * Sim.K4, new byte[16]));
        Assert.Equal(Errno.EINVAL, s.Mm.Mincore(s.Cpu, a + 1, Sim.K4, vec));
    }

    [Fact]
    public void PagemapAndSmapsDescribeWhatIsMapped()
    {
        using var s = new Sim();
        ulong a = s.Map(4 * Sim.K4, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.Cpu.Touch(a);
        s.Cpu.Touch(a + Sim.K4);
        s.Cpu.ReadByte(a + (2 * Sim.K4), out _);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.K4, Sim.K4, Advice.Free));
        var pm = s.Mm.Pagemap(s.Cpu, a, a + (4 * Sim.K4));
        Assert.Equal(1UL, pm[0] >> 63);
        Assert.Equal((ulong)Entry.Pfn(s.Mm.PeekPte(a)), pm[0] & ((1UL << 55) - 1));
        Assert.Equal(1UL, (pm[0] >> 56) & 1); // exclusively mapped
        Assert.Equal(1UL, pm[2] >> 63);        // the zero page is present too
        Assert.Equal(0UL, pm[3]);
        var smaps = Assert.Single(s.Mm.Smaps(s.Cpu));
        Assert.Equal(16, smaps.SizeKb);
        Assert.Equal(8, smaps.RssKb);
        Assert.Equal(4, smaps.LazyFreeKb);
    }

    [Theory]
    [MemberData(nameof(Designs))]
    public void TheWalkerSeesAHoleWhereATableWasFreed(string design)
    {
        using var s = New(design);
        ulong a = s.Map(2 * Sim.M2, addr: 0x40000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 2 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        int present = 0, visited = 0;
        s.Mm.WalkPageRange(s.Cpu, a, a + (2 * Sim.M2), p =>
        {
            visited++;
            if (Entry.IsPresent(p.Entry))
            {
                present++;
            }
        });
        Assert.Equal(1024, visited);
        Assert.Equal(512, present);
        s.AssertRefcountsMatchEntries();
    }
}
