using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Tests.Storage;

public class CompactTableTests
{
    private static long PteTableOf(Sim s, ulong va)
    {
        var phys = s.Machine.Phys;
        ulong pgde = phys.Table(s.Mm.PgdPfn)[Geometry.Index(va, 4)];
        ulong pude = phys.Table(Entry.Pfn(pgde))[Geometry.Index(va, 3)];
        ulong pmde = phys.Table(Entry.Pfn(pude))[Geometry.Index(va, 2)];
        return Entry.Pfn(pmde);
    }

    [Fact]
    public void AnEmptyTableHoldsNoEntryStorage()
    {
        using var s = new Sim(pageData: false);
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        Assert.True(s.Cpu.Touch(a).Ok);
        long pte = PteTableOf(s, a);
        Assert.Equal(1, s.Machine.Phys.Desc(pte).Level);
        Assert.NotEqual(0, s.Machine.Phys.Ext(pte).TableSlot);
        var (groups, slots) = s.Machine.Phys.TableStorage;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        // The table stays (none design) but its one group and its slot went back.
        Assert.True(s.Machine.Phys.Desc(pte).Has(PageFlags.Table));
        Assert.Equal(0, s.Machine.Phys.Ext(pte).TableSlot);
        Assert.Equal(0UL, s.Mm.PeekPte(a));
        Assert.Equal((groups - 1, slots - 1), s.Machine.Phys.TableStorage);
    }

    [Fact]
    public void ASparseTableHoldsOnlyTheGroupsItsEntriesFallIn()
    {
        using var s = new Sim(pageData: false);
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        s.Cpu.Touch(a);
        long before = s.Machine.Phys.TableStorage.Groups;
        s.Cpu.Touch(a + (40 * Sim.K4));          // group 1
        s.Cpu.Touch(a + (41 * Sim.K4));          // group 1 again
        s.Cpu.Touch(a + (511 * Sim.K4));         // group 15
        Assert.Equal(before + 2, s.Machine.Phys.TableStorage.Groups);
        s.TouchAll(a, Sim.M2);
        Assert.Equal(before + 15, s.Machine.Phys.TableStorage.Groups); // dense: all 16 groups, 4 KiB
        long pte = PteTableOf(s, a);
        int nonNone = 0;
        foreach (ulong e in s.Machine.Phys.Table(pte))
        {
            nonNone += e != 0 ? 1 : 0;
        }

        Assert.Equal(512, nonNone);
        s.Mm.Madvise(s.Cpu, a, Sim.M1, Advice.DontNeed);
        Assert.Equal(before + 7, s.Machine.Phys.TableStorage.Groups); // the first 8 groups went back
        Assert.True(s.Cpu.ReadByte(a + Sim.M1, out _).Ok);
        Assert.Null(PtLab.Systematic.Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + Sim.M2));
    }

    [Fact]
    public void RefaultsAfterAGroupWentBackSeeFreshEntries()
    {
        using var s = new Sim(pageData: true);
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        for (int round = 0; round < 4; round++)
        {
            Assert.True(s.Cpu.Write(a + (3 * Sim.K4), [(byte)(round + 1)]).Ok);
            Assert.True(s.Cpu.ReadByte(a + (3 * Sim.K4), out byte v).Ok);
            Assert.Equal(round + 1, v);
            s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed);
            Assert.True(s.Cpu.ReadByte(a + (3 * Sim.K4), out v).Ok);
            Assert.Equal(0, v);
        }

        Assert.Null(PtLab.Systematic.Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + Sim.M2));
    }

    // Entries at both ends of groups 0, 1 and 2, one inside group 6, and the last two groups' edges.
    private static readonly int[] s_sparse = [0, 31, 32, 33, 63, 64, 200, 480, 511];

    [Fact]
    public void NextStoredSkipsOnlyGroupsThatHoldNoEntry()
    {
        using var s = new Sim(pageData: false);
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        foreach (int i in s_sparse)
        {
            Assert.True(s.Cpu.Touch(a + ((ulong)i * Sim.K4)).Ok);
        }

        long pte = PteTableOf(s, a);
        int skipped = 0;
        for (int i = 0; i < 512; i++)
        {
            var entries = s.Machine.Phys.Table(pte);
            int next = entries.NextStored(i);
            Assert.InRange(next, i, 512);
            for (int j = i; j < next; j++)
            {
                Assert.Equal(0UL, entries[j]); // what it skips reads none
            }

            Assert.Equal(Array.IndexOf(s_sparse, i) >= 0, entries[i] != 0);
            skipped += next > i ? 1 : 0;
        }

        // Groups 0, 1, 2, 6, 15 are stored: the other 11 groups' 352 entries are skipped.
        Assert.Equal(352, skipped);
        Assert.Equal(512, s.Machine.Phys.Table(pte).NextStored(512));
        Assert.Equal(0, s.Machine.Phys.Table(pte).FirstNotNone());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 32 * Sim.K4, Advice.DontNeed));
        Assert.Equal(32, s.Machine.Phys.Table(pte).FirstNotNone());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(-1, s.Machine.Phys.Table(pte).FirstNotNone()); // the none design keeps the empty table
        Assert.Equal(32, s.Machine.Phys.Table(pte).NextStored(0)); // one group at a time
        Assert.Equal(512, s.Machine.Phys.Table(pte).NextStored(480));
    }

    [Theory]
    [MemberData(nameof(DesignNames))]
    public void ASparseZapClearsExactlyItsRangeAndAWholeOneFreesTheTable(string design)
    {
        using var s = new Sim(pageData: false, design: Designs.Factory(design)!);
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        foreach (int i in s_sparse)
        {
            Assert.True(s.Cpu.Write(a + ((ulong)i * Sim.K4), [(byte)(i + 1)]).Ok);
        }

        // From inside group 1 (an entry stored before it in the group) to the start of group 15.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (33 * Sim.K4), (480 - 33) * Sim.K4, Advice.DontNeed));
        int[] kept = [0, 31, 32, 480, 511];
        for (int i = 0; i < 512; i++)
        {
            Assert.Equal(Array.IndexOf(kept, i) >= 0, Entry.IsPresent(s.Mm.PeekPte(a + ((ulong)i * Sim.K4))));
        }

        Assert.Equal(kept.Length * 4, s.Mm.Status().VmRssKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        s.Machine.Rcu.Barrier();
        Assert.Equal(0, s.Mm.Status().VmRssKb);
        Assert.Equal(design == "none" ? 1 : 0, s.Mm.Status().Tables.Pte);
        Assert.Null(PtLab.Systematic.Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + Sim.M2));
    }

    public static TheoryData<string> DesignNames() => [.. Designs.Names];

    [Fact]
    public void StateCellsExistOnlyForADesignThatKeepsTableState()
    {
        static long Touched(Sim s, out object? state)
        {
            ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
            Assert.True(s.Cpu.Touch(a).Ok);
            state = s.Machine.Phys.TableState(PteTableOf(s, a));
            return s.Machine.Phys.TableHostBytes;
        }

        using var none = new Sim(pageData: false);
        using var occupancy = new Sim(pageData: false, design: () => new OccupancyReclaim());
        long plain = Touched(none, out object? noState);
        long withState = Touched(occupancy, out object? state);
        Assert.Null(noState);
        Assert.NotNull(state);
        // The same headers and groups; the design that keeps state pays one chunk of state cells.
        Assert.Equal(plain + ((long)IntPtr.Size * TableStore.SlotsPerChunk), withState);
    }

    [Fact]
    public void AFreedTableIsStillCaughtThroughAStaleReference()
    {
        using var s = new Sim(pageData: false, design: () => new PtReclaim());
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        s.TouchAll(a, Sim.M2);
        long pte = PteTableOf(s, a);
        var stale = s.Machine.Phys.Ref(pte);
        s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed);
        s.Machine.Rcu.Barrier();
        Assert.False(s.Machine.Phys.IsLive(stale));
        Assert.Throws<UseAfterFreeException>(() => s.Machine.Phys.Table(stale)[0]);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(16L << 20)]
    public void TheAnonymousListIsLinkedOnlyWithSwap(long swap)
    {
        using var s = new Sim(pageData: false, swapBytes: swap);
        var phys = s.Machine.Phys;
        ulong a = s.Map(Sim.M2, addr: 0x4000_1000); // holds no aligned 2 MiB: small pages only
        long ext = phys.PageExtHostBytes;
        s.TouchAll(a, Sim.M2);
        var pfns = Enumerable.Range(0, 512).Select(i => Entry.Pfn(s.Mm.PeekPte(a + ((ulong)i * Sim.K4)))).ToArray();
        Assert.Equal(512, phys.LruAnonPages);
        Assert.All(pfns, p => Assert.Equal(LruList.Anon, phys.LruOf(p)));
        Assert.All(pfns, p => Assert.True(phys.Desc(p).OnLru));
        if (swap == 0)
        {
            // Counted, not linked: the pages took no extension words, only their tables did (two
            // PTE tables, a PMD and a PUD table at most, a 64-frame segment each).
            Assert.True(phys.PageExtHostBytes - ext <= 4 * 64 * 8, $"{phys.PageExtHostBytes - ext} B of extensions for 512 unlinked pages");
            Assert.All(pfns, p => Assert.Equal(LruList.None, phys.Ext(p).Lru));
        }
        else
        {
            // Linked, as reclaim scans it from its tail: one head, one tail, a chain through all.
            Assert.All(pfns, p => Assert.Equal(LruList.Anon, phys.Ext(p).Lru));
            Assert.Single(pfns, p => phys.Ext(p).LruPrev < 0);
            Assert.Single(pfns, p => phys.Ext(p).LruNext < 0);
            long at = pfns.Single(p => phys.Ext(p).LruPrev < 0);
            int n = 1;
            for (; phys.Ext(at).LruNext >= 0; n++)
            {
                Assert.Equal(at, phys.Ext(phys.Ext(at).LruNext).LruPrev);
                at = phys.Ext(at).LruNext;
            }

            Assert.Equal(512, n);
        }

        // MADV_FREE moves every page, linked or not, to the linked file list (lru_lazyfree_fn).
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Free));
        Assert.Equal(0, phys.LruAnonPages);
        Assert.Equal(512, phys.LruFilePages);
        Assert.All(pfns, p => Assert.Equal(LruList.File, phys.LruOf(p)));
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, Sim.M2));
        Assert.Equal(0, phys.LruFilePages);
        Assert.All(pfns, p => Assert.False(phys.Desc(p).OnLru));
        Assert.All(pfns, p => Assert.Equal(default, phys.Ext(p)));
    }

    [Fact]
    public void APackedDescriptorKeepsEachFieldApart()
    {
        var d = default(PageDescriptor);
        d.InitAnonRmap(PageFlags.Anon | PageFlags.SwapBacked, 12345, 0x7_ffff_ffff);
        d.SetCounts(3, 0);
        d.SetMapCount(2);
        d.SetLru();
        d.Aux = 0xDEADBEEF;
        var e = default(PageExt);
        e.LruPrev = 1_000_000;
        e.LruNext = -1;
        e.Lru = LruList.File;
        Assert.Equal(0x7_ffff_ffffUL, d.RmapAddress); // a page's index: the address in pages
        Assert.Equal(12345, d.RmapOwnerId);
        Assert.Equal((int)(PageFlags.Anon | PageFlags.SwapBacked | PageFlags.Lru), d.Flags);
        Assert.True(d.OnLru);
        Assert.Equal(3, d.RefCount);
        Assert.Equal(2, d.MapCount);
        Assert.Equal(0xDEADBEEFu, d.Aux);
        Assert.Equal(1_000_000, e.LruPrev);
        Assert.Equal(-1, e.LruNext);
        Assert.Equal(LruList.File, e.Lru);
        d.Flags = (int)PageFlags.Anon; // a whole-flags store leaves PG_lru to the LRU lists
        Assert.True(d.OnLru);
        d.ClearLru();
        Assert.False(d.OnLru);
        Assert.Equal((int)PageFlags.Anon, d.Flags);
        Assert.Equal(2, d.AddMap(0) - 0);
        Assert.Equal(-1, new PageDescriptor().AddRef(-1)); // underflow is reported, not wrapped
        d.SetFlagsAtomic(PageFlags.Dirty);
        Assert.Equal(PageFlags.Anon | PageFlags.Dirty, (PageFlags)d.Flags);
        Assert.Equal(12345, d.RmapOwnerId);
        Assert.Equal(0x7_ffff_ffffUL, d.RmapAddress);
        Assert.Equal(16, System.Runtime.CompilerServices.Unsafe.SizeOf<PageDescriptor>());
        Assert.Equal(8, System.Runtime.CompilerServices.Unsafe.SizeOf<PageExt>());
    }

    [Fact]
    public void EveryFlagFitsBesideTheLargestOwnerAndIndex()
    {
        var all = (PageFlags)0;
        foreach (var f in Enum.GetValues<PageFlags>())
        {
            all |= f;
        }

        var d = default(PageDescriptor);
        ulong topIndex = (Geometry.TaskSize - 1) >> 12; // the last user page
        d.InitAnonRmap(all, PageDescriptor.MaxOwners, topIndex);
        Assert.Equal(all & ~PageFlags.Table, (PageFlags)d.Flags & ~PageFlags.Table);
        Assert.Equal(PageDescriptor.MaxOwners, d.RmapOwnerId);
        d.ClearFlagsAtomic(PageFlags.Table); // a table keeps its address in pages; this is a page
        Assert.Equal(topIndex, d.RmapAddress);
        Assert.Equal(all & ~PageFlags.Table, d.ClearFlagsAtomic(PageFlags.Reclaim));
        Assert.Equal(all & ~(PageFlags.Table | PageFlags.Reclaim), (PageFlags)d.Flags);
        Assert.Equal(PageDescriptor.MaxOwners, d.RmapOwnerId);
    }

    [Fact]
    public void AHugeFolioKeepsItsEntireMapcountOnItsFirstTailFrame()
    {
        var phys = new PhysMemory(8L << 20, pageData: false);
        long head = phys.AllocHugeFolio(cpu: -1, directReclaim: false);
        Assert.True(head >= 0);
        Assert.Equal(0, phys.EntireMapCount(head));
        phys.EntireMapCount(head) = 1;
        Assert.Equal(1, phys.EntireMapCount(head));
        Assert.Equal(-1, phys.Ext(head).LruPrev); // the head's own words are untouched
        Assert.Equal(-1, phys.Ext(head + 1).LruNext);
        Assert.True(phys.Desc(head).Has(PageFlags.Head));
        Assert.True(phys.Desc(head + 1).Has(PageFlags.Tail));
        Assert.Equal(LruList.None, phys.LruOf(head + 1));
        Assert.Equal(head, phys.CompoundHead(head + 1));
        Assert.Equal(1, phys.Desc(head).RefCount);
        Assert.Equal(0, phys.Desc(head).MapCount);
        phys.EntireMapCount(head) = 0;
        Assert.True(phys.PutPage(head + 7)); // a tail's put drops the folio's reference: freed whole
        Assert.Equal(0, phys.UsedFrames - phys.ReservedFrames);
    }
}
