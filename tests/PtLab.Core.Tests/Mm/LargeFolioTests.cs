using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

/// <summary>
/// PMD-sized page-cache folios of a regular file in a MADV_HUGEPAGE mapping: read in by a cold
/// fault (two folios), mapped by one PMD leaf with no PTE table, cleared (not split into PTEs) when
/// part of the 2 MiB is unmapped, and freed whole when the cache lets them go.
/// </summary>
public class LargeFolioTests
{
    private const ulong Base = 0x40000000; // 1 GiB: 2 MiB aligned, its own PMD table
    private const int Pages = 2048; // an 8 MiB file

    private static (SimFile File, ulong At) HugeFileMapping(Sim s, MapFlags flags = MapFlags.Private, ulong at = Base)
    {
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 9), Pages * Sim.K4);
        var r = s.Mm.Mmap(s.Cpu, at, Pages * Sim.K4, Sim.Rw, flags | MapFlags.Fixed, f, 0);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, r.Address, Pages * Sim.K4, Advice.HugePage));
        return (f, r.Address);
    }

    private static ulong PmdAt(MmStruct mm, ulong va)
    {
        long pmdTable = mm.PmdTableOf(va);
        return pmdTable < 0 ? 0 : mm.Phys.Table(pmdTable)[Geometry.Index(va, 2)];
    }

    [Fact]
    public void AColdReadFaultReadsTwoPmdSizedFoliosAndMapsTheFaultingOneWithOnePmdLeaf()
    {
        using var s = new Sim();
        var (f, a) = HugeFileMapping(s);
        long used = s.Machine.Phys.UsedFrames;
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok);

        ulong pmd = PmdAt(s.Mm, a + (512 * Sim.K4));
        Assert.True(Entry.IsHuge(pmd));
        Assert.False(Entry.IsWritable(pmd)); // a private mapping's file page is mapped read-only
        Assert.Equal(1024, f.CachedPages);
        Assert.True(f.IsCached(512) && f.IsCached(1535) && !f.IsCached(511) && !f.IsCached(1536));
        Assert.Equal(2, s.Machine.Phys.HugePagesAllocated);
        var st = s.Mm.Status();
        Assert.Equal(new TableCounts(0, 1, 1), st.Tables); // no PTE table, no deposit
        Assert.Equal(2048, st.RssFileKb);
        Assert.Equal(0, s.Mm.DepositedTables);
        Assert.Equal(used + 1024 + 2, s.Machine.Phys.UsedFrames); // two folios, the PMD and the PUD table
        s.AssertAccountingConsistent();

        // The whole 2 MiB is mapped: no further fault in it.
        long faults = s.Cpu.Faults;
        Assert.True(s.Cpu.ReadByte(a + (1023 * Sim.K4), out _).Ok);
        Assert.Equal(faults, s.Cpu.Faults);
    }

    [Fact]
    public void MemoryPressureEvictsAnUnmappedPmdSizedFolioWholeAndKeepsAMappedOne()
    {
        using var s = new Sim(ramBytes: 16L << 20, pageData: false);
        var (f, a) = HugeFileMapping(s);
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok); // [512, 1024) mapped, [1024, 1536) cached
        Assert.Equal(1024, f.CachedPages);

        // 12 MiB of anonymous memory in a 16 MiB machine: reclaim must take the file's pages.
        var r = s.Mm.Mmap(s.Cpu, 0x80000000, 12L << 20, Sim.Rw, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed, null, 0);
        Assert.True(r.Ok, r.ToString());
        for (ulong va = r.Address; va < r.Address + (12UL << 20); va += Sim.K4)
        {
            Assert.True(s.Cpu.Touch(va).Ok);
        }

        // The unmapped folio went whole; the one the PMD leaf maps stayed.
        Assert.Equal(512, f.Evicted);
        Assert.Equal(512, f.CachedPages);
        Assert.True(f.IsCached(512) && f.IsCached(1023) && !f.IsCached(1024) && !f.IsCached(1535));
        Assert.True(Entry.IsHuge(PmdAt(s.Mm, a + (512 * Sim.K4))));
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void UnmappingOnePageClearsTheLeafAndTheRefaultMapsTheWindowByPtesThenEverythingIsFreed()
    {
        using var s = new Sim();
        var (f, a) = HugeFileMapping(s);
        long used = s.Machine.Phys.UsedFrames;
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a + (600 * Sim.K4), Sim.K4));
        Assert.Equal(0, s.Mm.Status().RssFileKb); // the leaf went whole; the pages stay cached
        Assert.Equal(1024, f.CachedPages);
        Assert.Equal(1, s.Mm.ThpCounters().SplitPmd);

        // The folio now crosses the VMA's edge: the refault maps the 16-page window by PTEs.
        Assert.True(s.Cpu.ReadByte(a + (601 * Sim.K4), out _).Ok);
        Assert.False(Entry.IsHuge(PmdAt(s.Mm, a + (601 * Sim.K4))));
        Assert.Equal(64, s.Mm.Status().RssFileKb);
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);
        s.AssertAccountingConsistent();

        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, Pages * Sim.K4));
        Assert.Equal(1024, f.DropCache());
        Assert.Equal(0, f.CachedPages);
        Assert.Equal(used, s.Machine.Phys.UsedFrames);
    }

    [Fact]
    public void MadviseNohugepageMapsACachedFolioWholeByPtes()
    {
        using var s = new Sim();
        var (_, a) = HugeFileMapping(s);
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (512 * Sim.K4), Sim.M2, Advice.DontNeed));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Pages * Sim.K4, Advice.NoHugePage));
        Assert.True(s.Cpu.ReadByte(a + (600 * Sim.K4), out _).Ok);
        Assert.False(Entry.IsHuge(PmdAt(s.Mm, a + (600 * Sim.K4))));
        Assert.Equal(2048, s.Mm.Status().RssFileKb); // 512 PTEs: the folio lies in the VMA and one table
        Assert.True(Entry.IsPresent(s.Mm.PeekPte(a + (512 * Sim.K4))) && Entry.IsPresent(s.Mm.PeekPte(a + (1023 * Sim.K4))));
        Assert.False(Entry.IsPresent(s.Mm.PeekPte(a + (1024 * Sim.K4))));
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void AWriteToAPrivateLeafDropsItForACopyAndASharedWriteMapsItWritable()
    {
        using var s = new Sim();
        var (_, a) = HugeFileMapping(s);
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok);
        Assert.True(s.Cpu.Touch(a + (600 * Sim.K4)).Ok);
        var st = s.Mm.Status();
        Assert.Equal((0L, 4L), (st.RssFileKb, st.RssAnonKb)); // copy-on-write: one anonymous page
        Assert.Equal(new TableCounts(1, 1, 1), st.Tables);

        var (g, b) = HugeFileMapping(s, MapFlags.Shared, Base + (1UL << 30));
        Assert.True(s.Cpu.ReadByte(b + (517 * Sim.K4), out _).Ok);
        Assert.False(Entry.IsWritable(PmdAt(s.Mm, b + (512 * Sim.K4)))); // write notification
        Assert.True(s.Cpu.Touch(b + (600 * Sim.K4)).Ok);
        ulong pmd = PmdAt(s.Mm, b + (512 * Sim.K4));
        Assert.True(Entry.IsHuge(pmd) && Entry.IsWritable(pmd) && Entry.IsDirty(pmd));
        Assert.Equal(2048, s.Mm.Status().RssFileKb);
        Assert.Equal(512, g.DropCache()); // only the second folio: the first is mapped, and dirty
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void ForkLeavesAFileLeafToTheChildsFaultsAndMremapMovesItWithoutADeposit()
    {
        var m = new Machine(new MachineOptions { RamBytes = 256L << 20, PageData = false, Design = () => new PtLab.Reclaim.NoReclaim() });
        var parent = m.CreateProcess();
        var cpu = parent.MainThread.Activate();
        var f = m.Files.GetOrCreate(new FileId(1, 9), Pages * Sim.K4);
        var r = parent.Mm.Mmap(cpu, Base, Pages * Sim.K4, Sim.Rw, MapFlags.Private | MapFlags.Fixed, f, 0);
        Assert.True(r.Ok);
        Assert.Equal(Errno.None, parent.Mm.Madvise(cpu, Base, Pages * Sim.K4, Advice.HugePage));
        Assert.True(cpu.Touch(Base + (3 * Sim.K4)).Ok); // a private copy, so the VMA has an anon_vma
        Assert.True(cpu.ReadByte(Base + (517 * Sim.K4), out _).Ok);
        Assert.True(Entry.IsHuge(PmdAt(parent.Mm, Base + Sim.M2)));

        var child = m.Fork(parent.MainThread)!;
        Assert.Equal(0UL, PmdAt(child.Mm, Base + Sim.M2));
        Assert.Equal(0, child.Mm.Status().RssFileKb);
        var ccpu = child.MainThread.Activate();
        Assert.True(ccpu.ReadByte(Base + (700 * Sim.K4), out _).Ok);
        ulong leaf = PmdAt(child.Mm, Base + Sim.M2);
        Assert.True(Entry.IsHuge(leaf));
        Assert.Equal(Entry.Pfn(PmdAt(parent.Mm, Base + Sim.M2)), Entry.Pfn(leaf)); // one folio, two leaves
        Assert.Equal(2, Volatile.Read(ref m.Phys.EntireMapCount(Entry.Pfn(leaf))));

        // A move to another PMD table carries the leaf alone.
        ulong to = Base + (4UL << 30);
        var moved = child.Mm.Mremap(ccpu, Base + Sim.M2, Sim.M2, Sim.M2, MremapFlags.MayMove | MremapFlags.Fixed, to);
        Assert.True(moved.Ok, moved.ToString());
        Assert.True(Entry.IsHuge(PmdAt(child.Mm, to)));
        Assert.Equal(0, child.Mm.DepositedTables);
        Assert.Equal(2048, child.Mm.Status().RssFileKb);

        m.ExitProcess(child);
        m.ExitProcess(parent);
        m.Rcu.Barrier();
        Assert.Equal(1024, f.DropCache());
        Assert.Equal(1, m.Phys.UsedFrames); // the zero page
    }

    [Fact]
    public void ColdOfPartOfAPmdMappedFolioSplitsItInTheCacheAndPageoutOfAllOfItEvictsItWhole()
    {
        using var s = new Sim();
        var (f, a) = HugeFileMapping(s);
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok);
        long head = Entry.Pfn(PmdAt(s.Mm, a + (512 * Sim.K4)));

        // Part of it: the leaf goes, the folio becomes 512 order-0 pages, still cached.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (600 * Sim.K4), Sim.K4, Advice.Cold));
        Assert.Equal(0UL, PmdAt(s.Mm, a + (512 * Sim.K4)));
        Assert.Equal(0, s.Mm.Status().RssFileKb);
        Assert.Equal(1024, f.CachedPages);
        Assert.False(s.Machine.Phys.Desc(head).Has(PageFlags.Head));
        Assert.DoesNotContain(f.Folios(), x => x.First == 512 && x.Pages == 512);
        Assert.Contains(f.Folios(), x => x.First == 1024 && x.Pages == 512); // the other one is whole
        Assert.True(s.Cpu.ReadByte(a + (601 * Sim.K4), out _).Ok);
        Assert.False(Entry.IsHuge(PmdAt(s.Mm, a + (512 * Sim.K4)))); // mapped by PTEs now
        Assert.Equal(64, s.Mm.Status().RssFileKb); // the fault-around window
        s.AssertAccountingConsistent();

        // All of the second one: unmapped and evicted whole.
        Assert.True(s.Cpu.ReadByte(a + (1100 * Sim.K4), out _).Ok);
        Assert.True(Entry.IsHuge(PmdAt(s.Mm, a + (1024 * Sim.K4))));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (1024 * Sim.K4), Sim.M2, Advice.PageOut));
        Assert.Equal(0UL, PmdAt(s.Mm, a + (1024 * Sim.K4)));
        Assert.False(f.IsCached(1024) || f.IsCached(1535));
        Assert.Equal(64, s.Mm.Status().RssFileKb);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// A 576-page file under MADV_HUGEPAGE: the block [512, 576) that end of file cuts is one
    /// 64-page folio. A cold read fault in it maps nothing by fault-around (the window's first
    /// folio reaches end of file and there is no PTE table), and finish_fault maps the whole folio
    /// by PTEs; a shared write fault maps it whole, writable and dirty. Where the folio would cross
    /// a PTE table (the mapping 480 pages above a 2 MiB boundary), only the faulting page.
    /// </summary>
    [Theory]
    [InlineData(MapFlags.Private, false, 0UL, 64)]
    [InlineData(MapFlags.Shared, false, 0UL, 64)]
    [InlineData(MapFlags.Shared, true, 0UL, 64)]
    [InlineData(MapFlags.Private, false, 480UL, 1)]
    public void AFaultInTheFolioThatEndsTheFileMapsItWholeWhereItFits(MapFlags flags, bool write, ulong shift, int mapped)
    {
        const int pages = 576;
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 9), pages * Sim.K4);
        var r = s.Mm.Mmap(s.Cpu, Base + (shift * Sim.K4), pages * Sim.K4, Sim.Rw, flags | MapFlags.Fixed, f, 0);
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, r.Address, pages * Sim.K4, Advice.HugePage));
        ulong at = r.Address + (560 * Sim.K4);
        Assert.True(write ? s.Cpu.Touch(at).Ok : s.Cpu.ReadByte(at, out _).Ok);

        Assert.Equal((512UL, 64UL), f.Folios().Single(x => x.First == 512));
        bool[] present = s.Mm.Pagemap(s.Cpu, r.Address + (512 * Sim.K4), r.Address + (pages * Sim.K4)).Select(e => e >> 63 != 0).ToArray();
        Assert.Equal(mapped, present.Count(p => p));
        Assert.True(present[560 - 512]);
        Assert.Equal(mapped * 4, s.Mm.Status().RssFileKb);
        if (write)
        {
            ulong pte = s.Mm.PeekPte(r.Address + (512 * Sim.K4));
            Assert.True(Entry.IsWritable(pte) && Entry.IsDirty(pte), "a shared write fault maps the whole folio writable and dirty");
        }

        s.AssertAccountingConsistent();
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, r.Address, pages * Sim.K4));
        s.AssertAccountingConsistent();
    }
}
