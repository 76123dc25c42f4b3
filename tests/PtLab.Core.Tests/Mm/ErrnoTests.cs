using PtLab.Mm;
using PtLab.Paging;

namespace PtLab.Tests.Mm;

/// <summary>Each case returns what Linux returns (mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c).</summary>
public class ErrnoTests
{
    [Fact]
    public void UnalignedStartsAreEinval()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a + 1, Sim.K4, Advice.DontNeed));
        Assert.Equal(Errno.EINVAL, s.Mm.Munmap(s.Cpu, a + 1, Sim.K4));
        Assert.Equal(Errno.EINVAL, s.Mm.Mprotect(s.Cpu, a + 1, Sim.K4, Prot.Read));
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, a + 1, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed).Error);
    }

    [Fact]
    public void ZeroLengthsGetEachCallsOwnAnswer()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, 0, Sim.Rw, Sim.Anon).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Munmap(s.Cpu, a, 0));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, 0, Prot.Read)); // mprotect: !len returns 0
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 0, Advice.DontNeed)); // madvise: end == start returns 0
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, 0x1000, 0, Advice.DontNeed)); // even where nothing is mapped
    }

    [Fact]
    public void LengthsThatWrapAroundAreRefused()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, ulong.MaxValue - 100, Sim.Rw, Sim.Anon).Error); // PAGE_ALIGN wraps to 0
        Assert.Equal(Errno.EINVAL, s.Mm.Munmap(s.Cpu, a, ulong.MaxValue - a));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mprotect(s.Cpu, a, ulong.MaxValue - a, Prot.Read));
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, ulong.MaxValue - 10, Advice.DontNeed)); // rounds up to 0
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, 0xFFFF_FFFF_FFFF_0000UL, Advice.DontNeed)); // end < start
    }

    [Fact]
    public void MadviseOverAHoleAdvisesTheMappedPartsThenSaysEnomem()
    {
        using var s = new Sim();
        ulong a = s.Map(3 * Sim.M1, addr: 0x30000000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, 3 * Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + Sim.M1, Sim.M1));
        Assert.Equal(512 * 4, s.Mm.Status().RssAnonKb);
        Assert.Equal(Errno.ENOMEM, s.Mm.Madvise(s.Cpu, a, 3 * Sim.M1, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().RssAnonKb); // both mapped parts were zapped
    }

    [Fact]
    public void MadviseStartingInAHoleStillAdvisesWhatFollows()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, addr: 0x30100000, flags: Sim.Anon | MapFlags.Fixed);
        s.TouchAll(a, Sim.M1);
        Assert.Equal(Errno.ENOMEM, s.Mm.Madvise(s.Cpu, 0x30000000, 2 * Sim.M1, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
    }

    [Fact]
    public void MprotectOverAHoleChangesThePartBeforeItThenSaysEnomem()
    {
        using var s = new Sim();
        ulong a = s.Map(3 * Sim.M1, addr: 0x30000000, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + Sim.M1, Sim.M1));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mprotect(s.Cpu, a, 3 * Sim.M1, Prot.Read));
        var vmas = s.Mm.Vmas;
        Assert.Equal("r--p", vmas[0].FlagString());
        Assert.Equal("rw-p", vmas[1].FlagString());
    }

    [Fact]
    public void MprotectStartingInAHoleChangesNothing()
    {
        using var s = new Sim();
        s.Map(Sim.M1, addr: 0x30100000, flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mprotect(s.Cpu, 0x30000000, 2 * Sim.M1, Prot.Read));
        Assert.Equal("rw-p", s.Mm.Vmas[0].FlagString());
    }

    [Fact]
    public void MunmapOfNothingMappedSucceeds()
    {
        using var s = new Sim();
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, 0x30000000, Sim.M1));
    }

    [Fact]
    public void MapFixedNoReplaceOverAMappingIsEexist()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, addr: 0x30000000, flags: Sim.Anon | MapFlags.Fixed);
        var r = s.Mm.Mmap(s.Cpu, a + Sim.K4, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.FixedNoReplace);
        Assert.Equal(Errno.EEXIST, r.Error);
        var ok = s.Mm.Mmap(s.Cpu, a + Sim.M1, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.FixedNoReplace);
        Assert.Equal(a + Sim.M1, ok.Address);
    }

    [Fact]
    public void UnknownAdviceIsEinval()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.K4, (Advice)999));
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.K4, (Advice)5));
    }

    [Fact]
    public void MmapWithoutSharedOrPrivateIsEinval()
    {
        using var s = new Sim();
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Anonymous).Error);
    }

    [Fact]
    public void UnknownMmapFlagsAreIgnoredWithMapPrivateAndAnonymousSharedValidateIsEinval()
    {
        using var s = new Sim();
        // Linux's legacy mmap silently ignores unknown flags. MAP_SHARED_VALIDATE checks them only for
        // files (EOPNOTSUPP); for anonymous memory it is no valid type, so EINVAL, unknown flags or not.
        Assert.True(s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Sim.Anon | (MapFlags)0x4000000).Ok);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.SharedValidate | MapFlags.Anonymous | (MapFlags)0x4000000).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.SharedValidate | MapFlags.Anonymous).Error);
    }

    [Fact]
    public void TheMappingTypeIsCheckedAfterPlacement()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, addr: 0x30000000, flags: Sim.Anon | MapFlags.Fixed);
        // do_mmap: MAP_FIXED_NOREPLACE's EEXIST comes before the type's EINVAL, fd -1's EBADF before all.
        Assert.Equal(Errno.EEXIST, s.Mm.Mmap(s.Cpu, a, Sim.K4, Sim.Rw, MapFlags.SharedValidate | MapFlags.Anonymous | MapFlags.FixedNoReplace).Error);
        Assert.Equal(Errno.EBADF, s.Mm.Mmap(s.Cpu, 0, 0, Sim.Rw, MapFlags.None).Error);
    }

    [Fact]
    public void UnknownProtBitsInMprotectAreEinval()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Mprotect(s.Cpu, a, Sim.K4, (Prot)0x100));
    }

    [Fact]
    public void AddressesAboveTheUserLimitAreRefused()
    {
        using var s = new Sim();
        ulong above = Geometry.TaskSize + Sim.K4;
        Assert.Equal(Errno.EINVAL, s.Mm.Munmap(s.Cpu, above, Sim.K4));
        Assert.Equal(Errno.ENOMEM, s.Mm.Madvise(s.Cpu, above, Sim.K4, Advice.DontNeed));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mprotect(s.Cpu, above, Sim.K4, Prot.Read));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, above, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed).Error);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, Geometry.TaskSize - Sim.K4, 2 * Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed).Error);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(above).Outcome);
    }

    [Fact]
    public void MapFixedBelowMmapMinAddrIsEperm()
    {
        using var s = new Sim();
        Assert.Equal(Errno.EPERM, s.Mm.Mmap(s.Cpu, 0x1000, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed).Error);
    }

    [Fact]
    public void AWritablePrivateMappingLargerThanRamAndSwapNeedsNoReserve()
    {
        using var s = new Sim(ramBytes: 64L << 20);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, 1UL << 30, Sim.Rw, Sim.Anon).Error);
        Assert.True(s.Mm.Mmap(s.Cpu, 0, 1UL << 30, Sim.Rw, Sim.Anon | MapFlags.NoReserve).Ok);
        Assert.True(s.Mm.Mmap(s.Cpu, 0, 1UL << 30, Prot.Read, Sim.Anon).Ok); // read-only is not charged
    }

    [Fact]
    public void AFileMappingNeedsAFileAndAPageAlignedOffset()
    {
        using var s = new Sim();
        var file = s.Machine.Files.GetOrCreate(new FileId(1, 1), 16 * Sim.K4);
        Assert.Equal(Errno.EBADF, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Private).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Shared, file, 100).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Shared | MapFlags.HugeTlb, file, 0).Error);
        Assert.Equal(Errno.EOVERFLOW, s.Mm.Mmap(s.Cpu, 0, Sim.M1, Sim.Rw, MapFlags.Shared, file, ulong.MaxValue & Geometry.PageMask).Error);
        Assert.True(s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Shared, file, Sim.K4).Ok);
        Assert.True(s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Shared | MapFlags.Anonymous).Ok);
    }

    [Fact]
    public void DontneedOnAMlockedMappingIsEinvalUnlessDontneedLocked()
    {
        using var s = new Sim();
        ulong a = s.Map(Sim.M1, flags: Sim.Anon | MapFlags.Locked);
        Assert.Equal(256 * 4, s.Mm.Status().RssAnonKb); // MAP_LOCKED populates
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.DontNeed));
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.Free));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.DontNeedLocked));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
    }
}
