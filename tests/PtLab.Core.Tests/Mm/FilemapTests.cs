using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Mm;

/// <summary>File-backed mappings: mm/memory.c do_fault and friends, mm/filemap.c filemap_map_pages.</summary>
public class FilemapTests
{
    private const ulong Base = 0x40000000; // 1 GiB: 2 MiB- and 64 KiB-aligned

    private static SimFile File(Sim s, ulong pages, bool cached, ulong inode = 7)
    {
        var f = s.Machine.Files.GetOrCreate(new FileId(1, inode), pages * Sim.K4);
        if (cached)
        {
            Assert.True(f.Populate(0, pages * Sim.K4));
        }

        return f;
    }

    private static ulong MapFile(Sim s, SimFile f, ulong length, MapFlags flags, ulong addr = Base, ulong offset = 0, Prot prot = Sim.Rw)
    {
        var r = s.Mm.Mmap(s.Cpu, addr, length, prot, flags | MapFlags.Fixed, f, offset);
        Assert.True(r.Ok, $"mmap of {f}: {r}");
        return r.Address;
    }

    /// <summary>A second process beside the Sim's address space, on CPU 1 (CPU 0 runs the Sim's).</summary>
    private static SimProcess OtherProcess(Sim s)
    {
        var p = s.Machine.CreateProcess(); // CPU 0, the least busy: give it a thread on CPU 1 instead
        var t = s.Machine.CreateThread(p);
        s.Machine.ExitThread(p.MainThread);
        Assert.Equal(1, t.Cpu.Id);
        s.Cpu.SwitchMm(s.Mm);
        return p;
    }

    private static List<int> MappedPages(Sim s, ulong start, int pages)
    {
        var mapped = new List<int>();
        for (int i = 0; i < pages; i++)
        {
            if (Entry.IsPresent(s.Mm.PeekPte(start + ((ulong)i * Sim.K4))))
            {
                mapped.Add(i);
            }
        }

        return mapped;
    }

    [Fact]
    public void AReadFaultOnAColdFileReadsInTheReadAroundWindowAndTheRetryMapsItsFaultAroundWindow()
    {
        using var s = new Sim();
        var f = File(s, 256, cached: false);
        Assert.Equal(32, f.ReadAheadPages); // read_ahead_kb 128
        ulong a = MapFile(s, f, 256 * Sim.K4, MapFlags.Private);
        Assert.True(s.Cpu.ReadByte(a + (100 * Sim.K4), out _).Ok);
        // Page 108 starts the window's asynchronous quarter: its readahead mark keeps fault-around off it.
        Assert.Equal([.. Enumerable.Range(96, 12), .. Enumerable.Range(109, 3)], MappedPages(s, a, 256));
        Assert.Equal(32, f.CachedPages); // pages 84 to 115
        Assert.True(f.IsCached(84) && f.IsCached(115) && !f.IsCached(83) && !f.IsCached(116));
        Assert.Equal(60, s.Mm.Status().RssFileKb);
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(new TableCounts(1, 1, 1), s.Tables);

        // A fault on the marked page maps it and clears the mark.
        Assert.True(s.Cpu.ReadByte(a + (108 * Sim.K4), out _).Ok);
        Assert.Equal(Enumerable.Range(96, 16), MappedPages(s, a, 256));

        // A window half in the read-around maps its cached half.
        Assert.True(s.Cpu.ReadByte(a + (85 * Sim.K4), out _).Ok);
        Assert.Equal([.. Enumerable.Range(84, 12), .. Enumerable.Range(96, 16)], MappedPages(s, a, 256));
    }

    [Fact]
    public void WithoutReadaheadAColdFaultReadsInOnlyItsPage()
    {
        using var s = new Sim();
        var f = File(s, 64, cached: false);
        f.ReadAheadPages = 0;
        ulong a = MapFile(s, f, 64 * Sim.K4, MapFlags.Private);
        Assert.True(s.Cpu.ReadByte(a + (5 * Sim.K4), out _).Ok);
        Assert.Equal([5], MappedPages(s, a, 64));
        Assert.Equal(1, f.CachedPages);
        // Shmem has no readahead either: a shared anonymous read fault allocates the one page.
        ulong b = s.Map(64 * Sim.K4, flags: MapFlags.Shared | MapFlags.Anonymous);
        Assert.True(s.Cpu.ReadByte(b + (5 * Sim.K4), out _).Ok);
        Assert.Equal([5], MappedPages(s, b, 64));
    }

    [Fact]
    public void AReadFaultMapsEveryCachedPageOfItsSixteenPageWindow()
    {
        using var s = new Sim();
        var f = File(s, 64, cached: true);
        ulong a = MapFile(s, f, 64 * Sim.K4, MapFlags.Private);
        Assert.True(s.Cpu.ReadByte(a + (5 * Sim.K4), out _).Ok);
        Assert.Equal(Enumerable.Range(0, 16), MappedPages(s, a, 64));
        Assert.True(s.Cpu.ReadByte(a + (40 * Sim.K4), out _).Ok);
        Assert.Equal([.. Enumerable.Range(0, 16), .. Enumerable.Range(32, 16)], MappedPages(s, a, 64));
        Assert.Equal(32 * 4, s.Mm.Status().RssFileKb);
        Assert.Equal(2, s.Mm.Counters().Faults);
        // Entries of a private mapping map the page cache read-only, young and clean.
        ulong pte = s.Mm.PeekPte(a + (3 * Sim.K4));
        Assert.False(Entry.IsWritable(pte));
        Assert.True(Entry.IsYoung(pte));
        Assert.False(Entry.IsDirty(pte));
    }

    [Fact]
    public void FaultAroundMapsOnlyNeighboursAlreadyInThePageCache()
    {
        using var s = new Sim();
        var f = File(s, 16, cached: false);
        f.ReadAheadPages = 0;
        Assert.True(f.Populate(2 * Sim.K4, 3 * Sim.K4)); // pages 2, 3, 4
        ulong a = MapFile(s, f, 16 * Sim.K4, MapFlags.Private);
        Assert.True(s.Cpu.ReadByte(a + (10 * Sim.K4), out _).Ok);
        Assert.Equal([2, 3, 4, 10], MappedPages(s, a, 16));
        Assert.Equal(4, f.CachedPages);
    }

    [Fact]
    public void FaultAroundStaysInsideTheVma()
    {
        using var s = new Sim();
        var f = File(s, 64, cached: true);
        // A VMA of 6 pages starting 3 pages into a 16-page window, at file page 10.
        ulong a = MapFile(s, f, 6 * Sim.K4, MapFlags.Private, Base + (3 * Sim.K4), 10 * Sim.K4);
        Assert.True(s.Cpu.ReadByte(a + (4 * Sim.K4), out byte _).Ok);
        Assert.Equal(Enumerable.Range(0, 6), MappedPages(s, a, 6));
        Assert.Equal(6 * 4, s.Mm.Status().RssFileKb);
        // The VMA's page 0 maps file page 10.
        Assert.Equal(10UL, s.Machine.Phys.Desc(Entry.Pfn(s.Mm.PeekPte(a))).RmapAddress);
    }

    [Fact]
    public void FaultAroundStaysInsideOnePteTable()
    {
        using var s = new Sim();
        var f = File(s, 64, cached: true);
        // 32 pages across a 2 MiB boundary: the boundary is 8 pages in, aligned to the window.
        ulong a = MapFile(s, f, 32 * Sim.K4, MapFlags.Private, Base + Sim.M2 - (8 * Sim.K4));
        Assert.True(s.Cpu.ReadByte(a + (7 * Sim.K4), out _).Ok);
        Assert.Equal(Enumerable.Range(0, 8), MappedPages(s, a, 32));
        Assert.Equal(1, s.Tables.Pte);
        Assert.True(s.Cpu.ReadByte(a + (8 * Sim.K4), out _).Ok);
        Assert.Equal(Enumerable.Range(0, 24), MappedPages(s, a, 32));
        Assert.Equal(2, s.Tables.Pte);
    }

    [Fact]
    public void FaultAroundStopsAtEndOfFileAndAnAccessBeyondItIsSigbus()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 9), (10 * Sim.K4) - 100); // 9 pages and a bit
        Assert.True(f.Populate(0, f.Size));
        ulong a = MapFile(s, f, 16 * Sim.K4, MapFlags.Shared);
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
        Assert.Equal(Enumerable.Range(0, 10), MappedPages(s, a, 16));
        var r = s.Cpu.ReadByte(a + (10 * Sim.K4), out _);
        Assert.Equal(FaultOutcome.Bus, r.Outcome);
        Assert.Equal(FaultOutcome.Bus, s.Cpu.Touch(a + (12 * Sim.K4)).Outcome);
        Assert.True(s.Cpu.Touch(a + (9 * Sim.K4) + 50).Ok); // the last page, partly inside the file
    }

    [Fact]
    public void AFileGrownPastAnAddressNoLongerFaultsWithSigbusThere()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 11), 4 * Sim.K4);
        ulong a = MapFile(s, f, 8 * Sim.K4, MapFlags.Shared);
        Assert.Equal(FaultOutcome.Bus, s.Cpu.ReadByte(a + (6 * Sim.K4), out _).Outcome);
        Assert.Same(f, s.Machine.Files.GetOrCreate(new FileId(1, 11), 7 * Sim.K4)); // a later, larger size grows it
        Assert.Equal(7 * Sim.K4, f.Size);
        Assert.True(s.Cpu.ReadByte(a + (6 * Sim.K4), out byte v).Ok);
        Assert.Equal(0, v);
        Assert.Same(f, s.Machine.Files.GetOrCreate(new FileId(1, 11), Sim.K4)); // never shrinks
        Assert.Equal(7 * Sim.K4, f.Size);
    }

    [Fact]
    public void APrivateWriteCopiesThePageIntoAnAnonymousPageAndLeavesTheFileAlone()
    {
        using var s = new Sim();
        var f = File(s, 16, cached: true);
        Assert.True(f.Write(3 * Sim.K4, [7, 8, 9]));
        ulong a = MapFile(s, f, 16 * Sim.K4, MapFlags.Private);
        Assert.True(s.Cpu.Write(a + (3 * Sim.K4) + 1, [42]).Ok); // do_cow_fault: no fault-around
        Assert.Equal([3], MappedPages(s, a, 16));
        var st = s.Mm.Status();
        Assert.Equal(4, st.RssAnonKb);
        Assert.Equal(0, st.RssFileKb);
        var buf = new byte[3];
        Assert.True(s.Cpu.Read(a + (3 * Sim.K4), buf).Ok);
        Assert.Equal(new byte[] { 7, 42, 9 }, buf);
        Assert.NotNull(s.Mm.FindVma(a)!.AnonVma);

        // Another mapping of the file still sees the file's bytes.
        ulong b = MapFile(s, f, 16 * Sim.K4, MapFlags.Shared, Base + Sim.M2);
        Assert.True(s.Cpu.Read(b + (3 * Sim.K4), buf).Ok);
        Assert.Equal(new byte[] { 7, 8, 9 }, buf);
    }

    [Fact]
    public void AWriteToAPageMappedByAReadFaultCopiesItOutOfTheFile()
    {
        using var s = new Sim();
        var f = File(s, 16, cached: true);
        ulong a = MapFile(s, f, 16 * Sim.K4, MapFlags.Private);
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
        Assert.Equal(64, s.Mm.Status().RssFileKb);
        long cached = Entry.Pfn(s.Mm.PeekPte(a + Sim.K4));
        Assert.True(s.Cpu.Touch(a + Sim.K4).Ok); // do_wp_page on a page-cache page: wp_page_copy
        var st = s.Mm.Status();
        Assert.Equal(60, st.RssFileKb);
        Assert.Equal(4, st.RssAnonKb);
        Assert.NotEqual(cached, Entry.Pfn(s.Mm.PeekPte(a + Sim.K4)));
        Assert.Equal(0, s.Machine.Phys.Desc(cached).MapCount);
        Assert.Equal(16, f.CachedPages); // the page cache keeps its page
    }

    [Fact]
    public void ASharedWriteDirtiesThePageCachePageThatEveryMappingSees()
    {
        using var s = new Sim(cpus: 2);
        var f = File(s, 16, cached: false);
        var other = OtherProcess(s);
        ulong a = MapFile(s, f, 16 * Sim.K4, MapFlags.Shared);
        var cpu2 = other.MainThread.Activate();
        ulong b = other.Mm.Mmap(cpu2, Base, 16 * Sim.K4, Sim.Rw, MapFlags.Shared | MapFlags.Fixed, f, 0).Address;

        // A read maps the page read-only first (write notification), the write then upgrades it.
        Assert.True(s.Cpu.ReadByte(a + (2 * Sim.K4), out _).Ok);
        Assert.False(Entry.IsWritable(s.Mm.PeekPte(a + (2 * Sim.K4))));
        Assert.True(s.Cpu.Write(a + (2 * Sim.K4), [5, 6]).Ok);
        ulong pte = s.Mm.PeekPte(a + (2 * Sim.K4));
        Assert.True(Entry.IsWritable(pte) && Entry.IsDirty(pte));
        Assert.True(s.Machine.Phys.Desc(Entry.Pfn(pte)).Has(PageFlags.Dirty));

        var buf = new byte[2];
        Assert.True(cpu2.Read(b + (2 * Sim.K4), buf).Ok);
        Assert.Equal(new byte[] { 5, 6 }, buf);
        Assert.Equal(Entry.Pfn(pte), Entry.Pfn(other.Mm.PeekPte(b + (2 * Sim.K4))));
        Assert.Equal(2, s.Machine.Phys.Desc(Entry.Pfn(pte)).MapCount);
        // The cold read read the whole (16-page) file around it, and each read mapped its window.
        Assert.Equal(64, s.Mm.Status().RssFileKb);
        Assert.Equal(64, other.Mm.Status().RssFileKb);
        Assert.Equal(2, f.MappingVmas);
        s.Machine.ExitProcess(other);
        Assert.Equal(1, f.MappingVmas);
    }

    [Fact]
    public void MunmapAndDontneedUnmapFilePagesButTheCacheKeepsThem()
    {
        using var s = new Sim();
        var f = File(s, 32, cached: true);
        ulong a = MapFile(s, f, 32 * Sim.K4, MapFlags.Private);
        s.TouchAll(a, 32 * Sim.K4, write: false);
        Assert.Equal(128, s.Mm.Status().RssFileKb);
        long used = s.Machine.Phys.UsedFrames;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 16 * Sim.K4, Advice.DontNeed));
        Assert.Equal(64, s.Mm.Status().RssFileKb);
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, 32 * Sim.K4));
        Assert.Equal(0, s.Mm.Status().RssFileKb);
        Assert.Equal(32, f.CachedPages);
        Assert.Equal(0, f.MappingVmas);
        Assert.Equal(used - 3, s.Machine.Phys.UsedFrames); // only the PTE, PMD and PUD tables went
        Assert.Equal(32, s.Machine.Files.DropCaches());
        Assert.Equal(0, f.CachedPages);
    }

    [Fact]
    public void MadvFreeOnAFileMappingIsEinval()
    {
        using var s = new Sim();
        var f = File(s, 4, cached: true);
        ulong a = MapFile(s, f, 4 * Sim.K4, MapFlags.Private);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, 4 * Sim.K4, Advice.Free));
        Assert.Equal(Errno.EACCES, s.Mm.Madvise(s.Cpu, a, 4 * Sim.K4, Advice.Remove)); // not shared
        ulong b = MapFile(s, f, 4 * Sim.K4, MapFlags.Shared, Base + Sim.M2, prot: Prot.Read);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, b, 4 * Sim.K4, Advice.Remove)); // VM_MAYWRITE suffices
    }

    [Fact]
    public void AdjacentMappingsOfConsecutiveFileOffsetsMergeAndOthersDoNot()
    {
        using var s = new Sim();
        var f = File(s, 64, cached: false);
        MapFile(s, f, 4 * Sim.K4, MapFlags.Shared, Base, 0);
        MapFile(s, f, 4 * Sim.K4, MapFlags.Shared, Base + (4 * Sim.K4), 4 * Sim.K4);
        Assert.Single(s.Mm.Vmas);
        MapFile(s, f, 4 * Sim.K4, MapFlags.Shared, Base + (8 * Sim.K4), 20 * Sim.K4);
        Assert.Equal(2, s.Mm.Vmas.Count);
        s.Map(4 * Sim.K4, addr: Base + (12 * Sim.K4), flags: Sim.Anon | MapFlags.Fixed);
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal(2, f.MappingVmas);
    }

    [Fact]
    public void ReclaimEvictsFilePagesThroughEveryMappingAndWritesDirtyOnesBack()
    {
        using var s = new Sim(cpus: 2, pageData: true);
        var f = File(s, 16, cached: true);
        var other = OtherProcess(s);
        var cpu2 = other.MainThread.Activate();
        ulong a = MapFile(s, f, 16 * Sim.K4, MapFlags.Shared);
        ulong b = other.Mm.Mmap(cpu2, 0, 16 * Sim.K4, Sim.Rw, MapFlags.Shared, f, 0).Address;
        Assert.True(s.Cpu.Write(a + 10, [77]).Ok);
        Assert.True(cpu2.ReadByte(b + 10, out byte seen).Ok);
        Assert.Equal(77, seen);

        // The first pass finds young entries and only ages them; the second evicts.
        s.Machine.Vmscan.Reclaim(0, 64);
        s.Machine.Vmscan.Reclaim(0, 64);
        Assert.Equal(0, f.CachedPages);
        Assert.Equal(0, s.Mm.Status().RssFileKb);
        Assert.Equal(0, other.Mm.Status().RssFileKb);
        Assert.Equal(1, f.Writebacks);
        Assert.Equal(16, f.Evicted);

        Assert.True(cpu2.ReadByte(b + 10, out seen).Ok); // read back in from the file
        Assert.Equal(77, seen);
        s.Machine.ExitProcess(other);
    }

    [Fact]
    public void ExitLeavesOnlyThePageCacheBehind()
    {
        var machine = new Machine(new MachineOptions { RamBytes = 64L << 20, LockDep = true, Design = () => new PtLab.Reclaim.NoReclaim() });
        var p = machine.CreateProcess();
        var f = machine.Files.GetOrCreate(new FileId(3, 3), 8 * Sim.K4);
        var cpu = p.MainThread.Activate();
        ulong a = p.Mm.Mmap(cpu, 0, 8 * Sim.K4, Sim.Rw, MapFlags.Private, f, 0).Address;
        Assert.True(cpu.ReadByte(a, out _).Ok);
        Assert.True(cpu.Touch(a + Sim.K4).Ok);
        machine.ExitProcess(p);
        machine.Rcu.Barrier();
        Assert.Equal(1 + 8, machine.Phys.UsedFrames); // the zero page and the file, read around the first fault
        Assert.Equal(8, machine.Files.DropCaches());
        Assert.Equal(1, machine.Phys.UsedFrames);
    }
}
