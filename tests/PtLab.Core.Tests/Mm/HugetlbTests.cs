using PtLab.Mm;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

/// <summary>
/// MAP_HUGETLB: the model maps no hugetlb memory, but checks the call as the kernel does and
/// refuses it with the kernel's errno (measured on Linux 6.18; the kernel differential tests run
/// the same calls on the host), the reservation against the machine's hugetlb pools included.
/// </summary>
public class HugetlbTests
{
    private const ulong At = 0x40000000;
    private const MapFlags Huge = MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb;

    [Fact]
    public void WithNoHugePageReservedEveryReservingCallIsRefusedAfterItsOtherChecks()
    {
        using var s = new Sim();
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge).Error);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge | MapFlags.Huge1GB).Error);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Prot.None, MapFlags.SharedValidate | MapFlags.Anonymous | MapFlags.HugeTlb | MapFlags.Huge2MB).Error);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, 1UL << 47, Sim.Rw, Huge).Error); // longer than the address space
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, 0, Sim.Rw, Huge).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, ~0UL - 4095, Sim.Rw, Huge).Error); // rounds up to 0
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge | (MapFlags)(25 << 26)).Error); // no 32 MiB pages
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge | MapFlags.GrowsDown | MapFlags.NoReserve).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Droppable | MapFlags.Anonymous | MapFlags.HugeTlb).Error);
        Assert.Equal(Errno.EOPNOTSUPP, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.SharedValidate | MapFlags.Anonymous | MapFlags.HugeTlb | MapFlags.Sync).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, At + Sim.K4, Sim.K4, Sim.Rw, Huge | MapFlags.Fixed).Error);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge, null, Sim.K4).Error); // the offset is the hugetlb file's: a whole huge page
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge, null, Sim.M2).Error);
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 5), Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Prot.Read, MapFlags.Private | MapFlags.HugeTlb, f, 0).Error); // not a hugetlbfs file
        Assert.Equal(Errno.EBADF, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, MapFlags.Private | MapFlags.HugeTlb | (MapFlags)(25 << 26)).Error);
        Assert.Empty(s.Mm.Vmas);
        Assert.Equal(0, s.Mm.CommittedPages);
    }

    [Fact]
    public void AFixedCallRefusedForWantOfHugePagesLeavesAHoleWhereItsRangeWas()
    {
        using var s = new Sim();
        s.Map(4 * Sim.M2, Sim.Rw, Sim.Anon | MapFlags.Fixed, At);
        s.TouchAll(At, 4 * Sim.M2);
        Assert.Equal(Errno.EEXIST, s.Mm.Mmap(s.Cpu, At, Sim.K4, Sim.Rw, Huge | MapFlags.FixedNoReplace).Error);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, At + Sim.M2, Sim.K4, Sim.Rw, Huge | MapFlags.Fixed).Error);
        Assert.Equal([(At, At + Sim.M2), (At + (2 * Sim.M2), At + (4 * Sim.M2))], s.Mm.Vmas.Select(v => (v.Start, v.End)));
        Assert.Equal(6 * 1024, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void ACallTheKernelWouldGrantIsReportedAsNotModelledAndMapsNothing()
    {
        using var s = new Sim(hugetlbPools: [new(HugetlbPool.PmdShift, 2), new(HugetlbPool.PudShift, null)]);
        var granted = s.Mm.Mmap(s.Cpu, 0, (2 * Sim.M2) - Sim.K4, Sim.Rw, Huge); // 2 huge pages: the pool has 2
        Assert.True(granted.NotModelled);
        Assert.Equal(Errno.EINVAL, granted.Error);
        Assert.Equal(0UL, granted.Address & (Sim.M2 - 1));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mmap(s.Cpu, 0, (2 * Sim.M2) + Sim.K4, Sim.Rw, Huge).Error); // 3 do not fit
        Assert.True(s.Mm.Mmap(s.Cpu, 0, 64 * Sim.M2, Sim.Rw, Huge | MapFlags.NoReserve).NotModelled); // reserves nothing
        Assert.True(s.Mm.Mmap(s.Cpu, 0, Sim.K4, Sim.Rw, Huge | MapFlags.Huge1GB).NotModelled); // its room is unknown: not checked
        Assert.True(s.Mm.Mmap(s.Cpu, At + Sim.K4 + (3 * Sim.M2), Sim.K4, Sim.Rw, Huge).NotModelled); // a hint is rounded up to a huge page
        Assert.Empty(s.Mm.Vmas);
    }

    [Fact]
    public void SharedValidateAcceptsTheSizeBitsAndMap32BitForAFileAndRefusesBit31()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 5), Sim.M1);
        foreach (var bits in new[] { MapFlags.Uninitialized, (MapFlags)0x8000000, MapFlags.Huge2MB, MapFlags.Huge1GB, MapFlags.Map32Bit })
        {
            var r = s.Mm.Mmap(s.Cpu, 0, Sim.K4, Prot.Read, MapFlags.SharedValidate | bits, f, 0);
            Assert.True(r.Ok, $"{bits}: {r}");
        }

        Assert.Equal(Errno.EOPNOTSUPP, s.Mm.Mmap(s.Cpu, 0, Sim.K4, Prot.Read, MapFlags.SharedValidate | unchecked((MapFlags)0x80000000), f, 0).Error);
    }

    [Theory]
    [InlineData("21:0,30:0", true)]
    [InlineData("21:4,30:?", true)]
    [InlineData("30:1", true)]
    [InlineData("", false)]
    [InlineData("21:0,21:1", false)]
    [InlineData("21:-1", false)]
    [InlineData("21:x", false)]
    [InlineData("21", false)]
    [InlineData("99:0", false)]
    public void PoolsRoundTripThroughTheirTextForm(string text, bool valid)
    {
        var pools = HugetlbPool.Parse(text);
        Assert.Equal(valid, pools is not null);
        if (pools is not null)
        {
            Assert.Equal(text, HugetlbPool.Format(pools));
        }
    }
}
