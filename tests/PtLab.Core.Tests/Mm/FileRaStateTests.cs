using PtLab.Mm;

namespace PtLab.Tests.Mm;

/// <summary>
/// Large folio support per file (<see cref="SimFile.LargeFolios"/>) and readahead state per open
/// file (<see cref="FileRaState"/>): a file system without large folios reads every window in
/// order-0 pages, and two opens of one file read ahead independently, as the kernel's
/// <c>struct file</c>s do.
/// </summary>
public class FileRaStateTests
{
    private const ulong Base = 0x40000000;
    private const int Pages = 8192; // a 32 MiB file

    // A 4 MiB readahead window (read_ahead_kb 4096): folio orders grow to PMD size.
    private static SimFile ColdFile(Sim s, ulong inode = 9)
    {
        var f = s.Machine.Files.GetOrCreate(new FileId(1, inode), Pages * Sim.K4);
        f.ReadAheadPages = 1024;
        return f;
    }

    private static ulong Map(Sim s, SimFile f, ulong at, FileRaState? ra, ulong offset = 0, ulong pages = Pages)
    {
        var r = s.Mm.Mmap(s.Cpu, at, pages * Sim.K4, Prot.Read, MapFlags.Private | MapFlags.Fixed, f, offset, ra);
        Assert.True(r.Ok, r.ToString());
        return r.Address;
    }

    private static void ReadInOrder(Sim s, ulong at, int pages)
    {
        for (int i = 0; i < pages; i++)
        {
            Assert.True(s.Cpu.ReadByte(at + ((ulong)i * Sim.K4), out _).Ok);
        }
    }

    private static ulong LargestFolio(SimFile f) => f.Folios().Max(x => x.Pages);

    [Fact]
    public void ASequentialReaderGetsLargeFoliosOnlyWhereTheFileSupportsThem()
    {
        using var with = new Sim(pageData: false);
        var large = ColdFile(with);
        ReadInOrder(with, Map(with, large, Base, large.Open()), Pages);
        Assert.Equal(512UL, LargestFolio(large)); // the async windows grew to PMD order
        long withTables = with.Mm.Status().Tables.Pte;

        using var without = new Sim(pageData: false);
        var small = ColdFile(without);
        small.LargeFolios = false;
        var ra = small.Open();
        ReadInOrder(without, Map(without, small, Base, ra), Pages);
        Assert.Equal(1UL, LargestFolio(small)); // page_cache_ra_order fell back to order 0 every time
        Assert.Equal(0, ra.Window.Order);
        Assert.Equal(Pages, small.CachedPages);
        var st = without.Mm.Status();
        Assert.Equal(Pages / 512, st.Tables.Pte); // no PMD leaf: every 2 MiB keeps its PTE table
        Assert.True(withTables < st.Tables.Pte, $"large folios should have saved PTE tables ({withTables} against {st.Tables.Pte})");
        without.AssertAccountingConsistent();
    }

    [Fact]
    public void AHugePageMappingOfAFileWithoutLargeFoliosReadsOrderZeroPages()
    {
        using var s = new Sim(pageData: false);
        var f = ColdFile(s);
        f.LargeFolios = false;
        ulong a = Map(s, f, Base, f.Open());
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Pages * Sim.K4, Advice.HugePage));
        Assert.True(s.Cpu.ReadByte(a + (517 * Sim.K4), out _).Ok);
        Assert.Equal(1024, f.CachedPages); // the VM_HUGEPAGE window, two PMDs' worth, at order 0
        Assert.Equal(1UL, LargestFolio(f));
        Assert.Equal(0, s.Machine.Phys.HugePagesAllocated);
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// Two streams through two opens of one file, interleaved page by page: with a state per open
    /// each state follows its own stream (its last window in its own half, its folio order grown
    /// by its own marks); one state for the file is dragged between the halves, and the folios it
    /// builds, so the tables the mappings need, come out otherwise.
    /// </summary>
    [Fact]
    public void TwoOpensOfOneFileReadAheadIndependently()
    {
        const int half = Pages / 2;
        static (FileRaState? A, FileRaState? B, long PteTables) Interleaved(bool perOpen)
        {
            using var s = new Sim(pageData: false);
            var f = ColdFile(s);
            FileRaState? ra = perOpen ? f.Open() : null, rb = perOpen ? f.Open() : null;
            ulong a = Map(s, f, Base, ra);
            ulong b = Map(s, f, Base + (1UL << 30), rb);
            for (int i = 0; i < half; i++)
            {
                Assert.True(s.Cpu.ReadByte(a + ((ulong)i * Sim.K4), out _).Ok);
                Assert.True(s.Cpu.ReadByte(b + ((ulong)(half + i) * Sim.K4), out _).Ok);
            }

            s.AssertAccountingConsistent();
            return (ra, rb, s.Mm.Status().Tables.Pte);
        }

        var own = Interleaved(perOpen: true);
        var (wa, wb) = (own.A!.Window, own.B!.Window);
        Assert.True(wa.Start <= half && wa.Order > 0, $"the first open's window {wa} should follow the first half (its last one may start where it ends)");
        Assert.True(wb.Start > half && wb.Order > 0, $"the second open's window {wb} should follow the second half");
        var shared = Interleaved(perOpen: false);
        Assert.NotEqual(shared.PteTables, own.PteTables);
    }

    [Fact]
    public void MappingsOfDifferentOpensDoNotMergeAndForkKeepsTheOpening()
    {
        using var s = new Sim(pageData: false);
        var f = ColdFile(s);
        var one = f.Open();
        Map(s, f, Base, one, 0, 16);
        Map(s, f, Base + (16 * Sim.K4), one, 16 * Sim.K4, 16);
        Assert.Single(s.Mm.Vmas, v => v.File == f); // one open: the two mappings merge

        Map(s, f, Base + (32 * Sim.K4), f.Open(), 32 * Sim.K4, 16);
        Assert.Equal(2, s.Mm.Vmas.Count(v => v.File == f)); // vma->vm_file differs: no merge

        var child = s.Mm.Fork(s.Cpu)!;
        Assert.Same(one, child.Vmas.First(v => v.File == f).Ra);
    }

    [Fact]
    public void AStateBelongsToItsFile()
    {
        using var s = new Sim(pageData: false);
        var f = ColdFile(s);
        var other = ColdFile(s, inode: 10);
        Assert.Throws<ArgumentException>(() => s.Mm.Mmap(s.Cpu, Base, Sim.K4, Prot.Read, MapFlags.Private, f, 0, other.Open()));
    }
}
