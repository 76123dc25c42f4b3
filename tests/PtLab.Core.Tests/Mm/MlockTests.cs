using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

/// <summary>
/// mlock, mlock2, munlock, mlockall and munlockall (mm/mlock.c), MAP_LOCKED and MAP_POPULATE, and
/// MADV_POPULATE_(READ|WRITE): tables and pages appear with no user fault.
/// </summary>
public class MlockTests
{
    private const ulong At = 0x40000000;

    private static ulong MapAt(Sim s, ulong at, ulong len, Prot prot = Sim.Rw, MapFlags extra = MapFlags.None) =>
        s.Map(len, prot, Sim.Anon | MapFlags.Fixed | extra, at);

    [Fact]
    public void MlockPopulatesWithWriteFaultsCountsVmLckAndMunlockGivesItBack()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At + 100, Sim.M1 / 2)); // the range is rounded to pages
        var st = s.Mm.Status();
        Assert.Equal(516, st.VmLckKb);
        Assert.Equal(516, st.RssAnonKb);
        Assert.Equal(0, s.Cpu.Faults);
        Assert.Equal(129, s.Machine.Phys.LruUnevictablePages);
        Assert.Equal(2, s.Mm.Vmas.Count); // split at At + 516 kB
        Assert.Equal(VmFlags.Locked, s.Mm.Vmas[0].Flags & VmFlags.Locked);
        Assert.Equal(Errno.None, s.Mm.Munlock(s.Cpu, At, Sim.M1));
        Assert.Equal(0, s.Mm.Status().VmLckKb);
        Assert.Equal(0, s.Machine.Phys.LruUnevictablePages);
        Assert.Single(s.Mm.Vmas);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void Mlock2OnFaultLocksWithoutPopulatingAndLocksPagesAsTheyFault()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mlock2(s.Cpu, At, Sim.M1, MlockFlags.OnFault));
        Assert.Equal(1024, s.Mm.Status().VmLckKb);
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(VmFlags.Locked | VmFlags.LockOnFault, s.Mm.Vmas[0].Flags & (VmFlags.Locked | VmFlags.LockOnFault));
        s.TouchAll(At, 4 * Sim.K4);
        Assert.Equal(4, s.Machine.Phys.LruUnevictablePages);
        Assert.Equal(Errno.EINVAL, s.Mm.Mlock2(s.Cpu, At, Sim.K4, (MlockFlags)2));
    }

    [Fact]
    public void MlockOverAHoleLocksWhatCameBeforeAndReturnsEnomem()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mlock(s.Cpu, At, Sim.M2));
        Assert.Equal(1024, s.Mm.Status().VmLckKb);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mlock(s.Cpu, At + Sim.M1, Sim.K4));
    }

    [Fact]
    public void MlockOfProtNoneLocksTheVmaButPopulatingFailsWithEnomem()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1, Prot.None);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mlock(s.Cpu, At, Sim.M1)); // __mlock_posix_error_return(-EFAULT)
        Assert.Equal(1024, s.Mm.Status().VmLckKb);
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
    }

    [Fact]
    public void TheMemlockLimitAppliesWithoutCapIpcLock()
    {
        using var s = new Sim();
        s.Mm.CapIpcLock = false;
        s.Mm.RlimitMemlock = 64 * Sim.K4;
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mlock(s.Cpu, At, 65 * Sim.K4));
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, 64 * Sim.K4));
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, 64 * Sim.K4)); // already locked pages are not counted twice
        Assert.Equal(Errno.EAGAIN, s.Mm.Mmap(s.Cpu, At + Sim.M2, Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed | MapFlags.Locked).Error);
        s.Mm.RlimitMemlock = 0;
        Assert.Equal(Errno.EPERM, s.Mm.Mlock(s.Cpu, At, Sim.K4));
        Assert.Equal(Errno.EPERM, s.Mm.Mlockall(s.Cpu, MlockallFlags.Current));
    }

    [Fact]
    public void MlockallCurrentLocksEveryVmaAndFutureLocksNewMappingsAndTheHeap()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        MapAt(s, At + Sim.M2, Sim.M1, Prot.Read);
        Assert.Equal(Errno.None, s.Mm.Mlockall(s.Cpu, MlockallFlags.Current | MlockallFlags.Future));
        Assert.Equal(2048, s.Mm.Status().VmLckKb);
        Assert.Equal(1024, s.Mm.Status().RssAnonKb); // the read-only one maps the zero page
        ulong b = MapAt(s, At + (2 * Sim.M2), Sim.M1);
        Assert.Equal(2048, s.Mm.Status().RssAnonKb); // MAP_POPULATE implied by the VM_LOCKED def_flags
        ulong heap = s.Mm.Brk(s.Cpu, s.Mm.StartBrk + Sim.M1);
        Assert.Equal(s.Mm.StartBrk + Sim.M1, heap);
        Assert.Equal(3072, s.Mm.Status().RssAnonKb);
        Assert.Equal(4096, s.Mm.Status().VmLckKb);
        Assert.Equal(0, s.Cpu.Faults);

        Assert.Equal(Errno.None, s.Mm.Munlockall(s.Cpu));
        Assert.Equal(0, s.Mm.Status().VmLckKb);
        Assert.Equal(VmFlags.None, s.Mm.DefFlags);
        MapAt(s, b + Sim.M2, Sim.M1);
        Assert.Equal(3072, s.Mm.Status().RssAnonKb);
    }

    [Theory]
    [InlineData(MlockallFlags.None)]
    [InlineData(MlockallFlags.OnFault)]
    [InlineData((MlockallFlags)8)]
    public void MlockallRefusesFlagCombinationsLinuxRefuses(MlockallFlags flags)
    {
        using var s = new Sim();
        Assert.Equal(Errno.EINVAL, s.Mm.Mlockall(s.Cpu, flags));
    }

    [Fact]
    public void MlockallFutureOnFaultLocksNewMappingsWithoutPopulatingThem()
    {
        using var s = new Sim();
        Assert.Equal(Errno.None, s.Mm.Mlockall(s.Cpu, MlockallFlags.Future | MlockallFlags.OnFault));
        MapAt(s, At, Sim.M1, extra: MapFlags.Populate);
        Assert.Equal(0, s.Mm.Status().RssAnonKb); // populate_vma_page_range leaves VM_LOCKONFAULT to its faults
        Assert.Equal(1024, s.Mm.Status().VmLckKb);
    }

    [Fact]
    public void LockedPagesAreNeverSwappedOut()
    {
        using var s = new Sim(ramBytes: 16L << 20, swapBytes: 64L << 20);
        MapAt(s, At, 2 * Sim.M1, extra: MapFlags.Locked);
        ulong b = MapAt(s, At + Sim.M2, 16 * Sim.M1, extra: MapFlags.NoReserve);
        s.TouchAll(b, 16 * Sim.M1);
        Assert.True(s.Machine.SwappedOut > 0);
        Assert.Equal(512, s.Machine.Phys.LruUnevictablePages);
        for (ulong va = At; va < At + (2 * Sim.M1); va += Sim.K4)
        {
            Assert.True(PtLab.Paging.Entry.IsHwPresent(s.Mm.PeekPte(va)));
        }
    }

    [Fact]
    public void DontneedRefusesLockedVmasUnlessLockedIsSaid()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1, extra: MapFlags.Locked);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.DontNeed));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.DontNeedLocked));
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
    }

    [Fact]
    public void MapPopulateAndMadvPopulateMakeTablesWithNoUserFault()
    {
        using var s = new Sim();
        MapAt(s, At, 4 * Sim.M1, extra: MapFlags.Populate);
        Assert.Equal(4096, s.Mm.Status().RssAnonKb);
        MapAt(s, At + Sim.M2 * 4, 4 * Sim.M1, Prot.Read);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M2 * 4, 4 * Sim.M1, Advice.PopulateRead));
        Assert.Equal(4096, s.Mm.Status().RssAnonKb); // zero pages
        Assert.Equal(4, s.Mm.Status().Tables.Pte);
        Assert.Equal(0, s.Cpu.Faults);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void MadvPopulateWriteBreaksTheZeroPageAndReportsHolesAndForbiddenAccess()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        s.TouchAll(At, Sim.M1, write: false);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.PopulateWrite));
        Assert.Equal(1024, s.Mm.Status().RssAnonKb);
        Assert.Equal(Errno.ENOMEM, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.PopulateWrite));
        MapAt(s, At + Sim.M2, Sim.M1, Prot.Write);
        MapAt(s, At + (2 * Sim.M2), Sim.M1, Prot.None);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, At + Sim.M2, Sim.M1, Advice.PopulateRead));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M2, Sim.M1, Advice.PopulateWrite));
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, At + (2 * Sim.M2), Sim.M1, Advice.PopulateRead));
    }

    [Fact]
    public void MadvPopulateReadInAHugePageVmaMapsHugeZeroPages()
    {
        using var s = new Sim();
        MapAt(s, At, 4 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 4 * Sim.M2, Advice.HugePage));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 4 * Sim.M2, Advice.PopulateRead));
        Assert.Equal(4, s.Mm.ThpCounters().ZeroPageMapped);
        Assert.Equal(4, s.Mm.DepositedTables);
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 4 * Sim.M2, Advice.PopulateWrite));
        Assert.Equal(4 * 2048, s.Mm.Status().RssAnonKb);
        Assert.Equal(4, s.Mm.ThpCounters().FaultAlloc);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void FlagAdvicesSplitAndMergeVmasAsMprotectDoes()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.K4, Sim.K4, Advice.HugePage));
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.K4, Sim.K4, Advice.NoHugePage));
        Assert.Equal(VmFlags.NoHugePage, s.Mm.Vmas[1].Flags & (VmFlags.HugePage | VmFlags.NoHugePage));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.Random));
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.DontDump));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.Normal));
        Assert.All(s.Mm.Vmas, v => Assert.Equal(VmFlags.DontDump, v.Flags & (VmFlags.DontDump | VmFlags.RandRead | VmFlags.SeqRead)));
        Assert.Equal(Errno.ENOMEM, s.Mm.Madvise(s.Cpu, At, Sim.M2, Advice.DoDump));
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.K4, Sim.K4, Advice.HugePage));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.NoHugePage));
        Assert.Single(s.Mm.Vmas);
        Assert.Equal(0, s.Machine.Phys.LruUnevictablePages);
    }

    [Fact]
    public void PagesLeftMlockedByDontUnmapStayOutOfMadvFreeAndPageout()
    {
        using var s = new Sim();
        MapAt(s, At, 16 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, 16 * Sim.K4));
        var r = s.Mm.Mremap(s.Cpu, At + (8 * Sim.K4), 8 * Sim.K4, 8 * Sim.K4, MremapFlags.MayMove | MremapFlags.Fixed | MremapFlags.DontUnmap, At + Sim.M2);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(VmFlags.None, s.Mm.Vmas[0].Flags & VmFlags.Locked); // the old VMA lost VM_LOCKED, its pages kept PG_mlocked
        long pfn = Entry.Pfn(s.Mm.PeekPte(At));
        Assert.True(s.Machine.Phys.Desc(pfn).Has(PageFlags.Mlocked));

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 8 * Sim.K4, Advice.Free));
        Assert.True(s.Machine.Phys.Desc(pfn).Has(PageFlags.SwapBacked)); // folio_mark_lazyfree skips unevictable folios
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, 8 * Sim.K4, Advice.PageOut));
        Assert.Equal(64, s.Mm.Status().RssAnonKb);
        Assert.Equal(16, s.Machine.Phys.LruUnevictablePages);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void FilePagesFaultedIntoALockedVmaAreMlockedAndUnmappingItMunlocksThem()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 9), 16 * Sim.K4);
        var r = s.Mm.Mmap(s.Cpu, At, 16 * Sim.K4, Prot.Read, MapFlags.Shared | MapFlags.Fixed | MapFlags.Locked, f, 0);
        Assert.True(r.Ok, r.ToString());
        var pfns = Enumerable.Range(0, 16).Select(i => Entry.Pfn(s.Mm.PeekPte(At + ((ulong)i * Sim.K4)))).ToArray();
        Assert.All(pfns, p => Assert.True(s.Machine.Phys.Desc(p).Has(PageFlags.Mlocked)));

        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At, 16 * Sim.K4));
        Assert.All(pfns, p => Assert.False(s.Machine.Phys.Desc(p).Has(PageFlags.Mlocked)));

        // Still cached, and evictable again: pageout through an unlocked mapping takes them.
        r = s.Mm.Mmap(s.Cpu, At + Sim.M2, 16 * Sim.K4, Prot.Read, MapFlags.Shared | MapFlags.Fixed, f, 0);
        Assert.True(r.Ok, r.ToString());
        s.TouchAll(At + Sim.M2, 16 * Sim.K4, write: false);
        Assert.Equal(64, s.Mm.Status().RssFileKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M2, 16 * Sim.K4, Advice.PageOut));
        Assert.Equal(0, s.Mm.Status().RssFileKb);
        s.AssertAccountingConsistent();
    }
    [Fact]
    public void APrivateWriteFaultInALockedVmaMunlocksTheFilePageItReplaces()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 10), 16 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Mlockall(s.Cpu, MlockallFlags.Current | MlockallFlags.Future | MlockallFlags.OnFault));
        foreach (ulong at in new[] { At, At + Sim.M2 })
        {
            var r = s.Mm.Mmap(s.Cpu, at, 16 * Sim.K4, Sim.Rw, MapFlags.Private | MapFlags.Fixed, f, 0);
            Assert.True(r.Ok, r.ToString());
        }

        s.TouchAll(At, Sim.K4, write: false);
        long pfn = Entry.Pfn(s.Mm.PeekPte(At));
        Assert.True(s.Machine.Phys.Desc(pfn).Has(PageFlags.Mlocked));

        // wp_page_copy: the copy replaces the page-cache page here, whose rmap removal munlocks it.
        s.TouchAll(At, Sim.K4, write: true);
        Assert.NotEqual(pfn, Entry.Pfn(s.Mm.PeekPte(At)));
        Assert.False(s.Machine.Phys.Desc(pfn).Has(PageFlags.Mlocked));

        // Mapped again through the other locked VMA: locked once, and munlockall unlocks it.
        s.TouchAll(At + Sim.M2, Sim.K4, write: false);
        Assert.Equal(pfn, Entry.Pfn(s.Mm.PeekPte(At + Sim.M2)));
        Assert.True(s.Machine.Phys.Desc(pfn).Has(PageFlags.Mlocked));
        Assert.Equal(Errno.None, s.Mm.Munlockall(s.Cpu));
        Assert.False(s.Machine.Phys.Desc(pfn).Has(PageFlags.Mlocked));

        // Mapped once and evictable: MADV_PAGEOUT reclaims it.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M2, Sim.K4, Advice.PageOut));
        Assert.False(Entry.IsPresent(s.Mm.PeekPte(At + Sim.M2)));
        s.AssertAccountingConsistent();
    }
}
