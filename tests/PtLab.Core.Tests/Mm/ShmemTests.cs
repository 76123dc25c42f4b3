using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

/// <summary>Shared anonymous memory (mm/shmem.c behind MAP_SHARED | MAP_ANONYMOUS).</summary>
public class ShmemTests
{
    private const MapFlags SharedAnon = MapFlags.Shared | MapFlags.Anonymous;

    [Fact]
    public void ASharedAnonymousMappingIsBackedByItsOwnShmemFile()
    {
        using var s = new Sim();
        ulong a = s.Map(16 * Sim.K4, flags: SharedAnon);
        var vma = s.Mm.FindVma(a)!;
        Assert.NotNull(vma.File);
        Assert.True(vma.File!.IsShmem);
        Assert.Equal(16 * Sim.K4, vma.File.Size);
        Assert.Equal(0UL, vma.PgOff);
        Assert.False(vma.IsAnonymous);
        Assert.Equal("rw-s", vma.FlagString());
        Assert.Equal(0, s.Mm.CommittedPages); // shared mappings are not charged to the process
    }

    [Fact]
    public void AReadFaultAllocatesAShmemPageCountedAsRssShmem()
    {
        using var s = new Sim();
        ulong a = s.Map(16 * Sim.K4, flags: SharedAnon);
        Assert.True(s.Cpu.ReadByte(a + Sim.K4, out byte v).Ok);
        Assert.Equal(0, v);
        ulong pte = s.Mm.PeekPte(a + Sim.K4);
        Assert.False(Entry.IsSpecial(pte)); // no zero page for shmem
        // Shmem needs no write notification: the entry is writable from the start.
        Assert.True(Entry.IsWritable(pte));
        var st = s.Mm.Status();
        Assert.Equal(4, st.RssShmemKb);
        Assert.Equal(0, st.RssFileKb);
        Assert.Equal(0, st.RssAnonKb);
        Assert.Equal(4, st.VmRssKb);
        var d = s.Machine.Phys.Desc(Entry.Pfn(pte));
        Assert.True(d.Has(PageFlags.SwapBacked));
        Assert.False(d.Has(PageFlags.Anon));
        Assert.Equal(LruList.None, s.Machine.Phys.LruOf(Entry.Pfn(pte))); // shmem is not swapped in this model: kept off the LRU
    }

    [Fact]
    public void DontneedUnmapsShmemPagesButKeepsTheirData()
    {
        using var s = new Sim();
        ulong a = s.Map(16 * Sim.K4, flags: SharedAnon);
        Assert.True(s.Cpu.Write(a + (3 * Sim.K4), [1, 2, 3]).Ok);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 16 * Sim.K4, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().RssShmemKb);
        Assert.Equal(1, s.Mm.FindVma(a)!.File!.CachedPages);
        var buf = new byte[3];
        Assert.True(s.Cpu.Read(a + (3 * Sim.K4), buf).Ok);
        Assert.Equal(new byte[] { 1, 2, 3 }, buf);
        Assert.Equal(4, s.Mm.Status().RssShmemKb);
    }

    [Fact]
    public void MadvRemovePunchesAHoleThatReadsAsZeros()
    {
        using var s = new Sim();
        ulong a = s.Map(16 * Sim.K4, flags: SharedAnon);
        s.TouchAll(a, 16 * Sim.K4);
        long used = s.Machine.Phys.UsedFrames;
        var file = s.Mm.FindVma(a)!.File!;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (4 * Sim.K4), 8 * Sim.K4, Advice.Remove));
        Assert.Equal(8 * 4, s.Mm.Status().RssShmemKb);
        Assert.Equal(8, file.CachedPages);
        Assert.Equal(used - 8, s.Machine.Phys.UsedFrames);
        Assert.True(s.Cpu.ReadByte(a + (5 * Sim.K4), out byte v).Ok);
        Assert.Equal(0, v);
        Assert.True(s.Cpu.ReadByte(a, out v).Ok);
        Assert.Equal(1, v);
    }

    [Fact]
    public void MadvFreeOnSharedAnonymousMemoryIsEinval()
    {
        using var s = new Sim();
        ulong a = s.Map(4 * Sim.K4, flags: SharedAnon);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, 4 * Sim.K4, Advice.Free));
        ulong p = s.Map(4 * Sim.K4);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, p, 4 * Sim.K4, Advice.Remove)); // no file
    }

    [Fact]
    public void UnmappingTheLastMappingFreesTheShmemFileAndItsPages()
    {
        using var s = new Sim();
        long before = s.Machine.Phys.UsedFrames;
        int files = s.Machine.Files.Count;
        ulong a = s.Map(64 * Sim.K4, flags: SharedAnon);
        s.TouchAll(a, 64 * Sim.K4);
        Assert.Equal(files + 1, s.Machine.Files.Count);
        // Unmapping half keeps the file; unmapping the rest frees it.
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, 32 * Sim.K4));
        Assert.Equal(files + 1, s.Machine.Files.Count);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + (32 * Sim.K4), 32 * Sim.K4));
        s.Machine.Rcu.Barrier();
        Assert.Equal(files, s.Machine.Files.Count);
        Assert.Equal(before, s.Machine.Phys.UsedFrames);
    }

    [Fact]
    public void AnMprotectSplitKeepsBothPartsOnTheSameShmemFile()
    {
        using var s = new Sim();
        ulong a = s.Map(16 * Sim.K4, flags: SharedAnon);
        Assert.True(s.Cpu.Write(a + (12 * Sim.K4), [9]).Ok);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, 8 * Sim.K4, Prot.Read));
        var vmas = s.Mm.Vmas;
        Assert.Equal(2, vmas.Count);
        Assert.Same(vmas[0].File, vmas[1].File);
        Assert.Equal(8UL, vmas[1].PgOff);
        Assert.Equal(2, vmas[0].File!.MappingVmas);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, 8 * Sim.K4, Sim.Rw));
        Assert.Single(s.Mm.Vmas);
        Assert.Equal(1, s.Mm.Vmas[0].File!.MappingVmas);
        Assert.True(s.Cpu.ReadByte(a + (12 * Sim.K4), out byte v).Ok);
        Assert.Equal(9, v);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GrowingASharedAnonymousMappingDoesNotGrowItsShmemObject(bool move)
    {
        // mremap extends the VMA, not the shmem file made at mmap: a page past the file's size is
        // SIGBUS (shmem_fault, BUS_ADRERR), as in the kernel; the page inside it still maps.
        using var s = new Sim();
        ulong a = s.Map(Sim.K4, flags: SharedAnon);
        if (!move)
        {
            Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + Sim.K4, Sim.K4)); // room to grow in place
        }

        Assert.True(s.Cpu.Touch(a).Ok);
        var r = s.Mm.Mremap(s.Cpu, a, Sim.K4, 2 * Sim.K4, move ? MremapFlags.MayMove : MremapFlags.None);
        Assert.True(r.Ok, r.Error.ToString());
        Assert.Equal(Sim.K4, s.Mm.FindVma(r.Address)!.File!.Size);
        Assert.Equal(FaultOutcome.Bus, s.Cpu.Touch(r.Address + Sim.K4).Outcome);
        Assert.Equal(FaultOutcome.Bus, s.Cpu.ReadByte(r.Address + Sim.K4, out _).Outcome);
        Assert.True(s.Cpu.Touch(r.Address).Ok);
    }
}
