using PtLab.Mm;
using PtLab.Paging;

namespace PtLab.Tests.Mm;

/// <summary>
/// <see cref="SimFile.AddCached"/>: pages a file had in the page cache before the model saw it,
/// in folios of the order they were recorded with.
/// </summary>
public class CachedFolioTests
{
    private const ulong Base = 0x40000000;

    private static SimFile File(Sim s, ulong pages) => s.Machine.Files.GetOrCreate(new FileId(1, 11), pages * Sim.K4);

    [Fact]
    public void AlignedFoliosOfTheOrderAreAddedWholeAndTheRestAsPages()
    {
        using var s = new Sim();
        var f = File(s, 64);
        Assert.True(f.AddCached(2, 8, 2)); // 2 and 3 before the first boundary, 4-7 a folio, 8 and 9 a folio's head only
        Assert.Equal([(2UL, 1UL), (3UL, 1UL), (4UL, 4UL), (8UL, 1UL), (9UL, 1UL)], f.Folios());
        Assert.Equal(8, f.CachedPages);
    }

    [Fact]
    public void AFolioWithAPageCachedAlreadyIsAddedAsItsMissingPages()
    {
        using var s = new Sim();
        var f = File(s, 64);
        Assert.True(f.Populate(5 * Sim.K4, Sim.K4));
        Assert.True(f.AddCached(4, 8, 2));
        Assert.Equal([(4UL, 1UL), (5UL, 1UL), (6UL, 1UL), (7UL, 1UL), (8UL, 4UL)], f.Folios());
    }

    [Fact]
    public void AFileSystemWithoutLargeFoliosGetsPagesAndNothingPassesEndOfFile()
    {
        using var s = new Sim();
        var f = File(s, 10);
        f.LargeFolios = false;
        Assert.True(f.AddCached(4, 16, 2));
        Assert.Equal(Enumerable.Range(4, 6).Select(i => ((ulong)i, 1UL)), f.Folios());
    }

    [Fact]
    public void APmdOrderFolioIsOneHugeFolio()
    {
        using var s = new Sim();
        var f = File(s, 1024);
        Assert.True(f.AddCached(512, 512, 9));
        Assert.Equal([(512UL, 512UL)], f.Folios());
    }

    /// <summary>
    /// A read fault on a cached file under MADV_RANDOM reads nothing and maps the cached pages of
    /// its fault-around window; on the same file cold it reads and maps its page alone.
    /// </summary>
    [Fact]
    public void FaultAroundMapsTheCachedPagesOfAWarmFileWhereAColdOneGetsOnePage()
    {
        foreach (bool warm in new[] { true, false })
        {
            using var s = new Sim();
            var f = File(s, 64);
            if (warm)
            {
                Assert.True(f.AddCached(0, 64, 0));
            }

            long readIns = f.ReadIns;
            var r = s.Mm.Mmap(s.Cpu, Base, 64 * Sim.K4, Prot.Read, MapFlags.Private | MapFlags.Fixed, f, 0);
            Assert.True(r.Ok);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, Base, 64 * Sim.K4, Advice.Random));
            Assert.True(s.Cpu.ReadByte(Base + (20 * Sim.K4), out _).Ok);
            int mapped = Enumerable.Range(0, 64).Count(i => Entry.IsPresent(s.Mm.PeekPte(Base + ((ulong)i * Sim.K4))));
            Assert.Equal(warm ? 16 : 1, mapped);
            Assert.Equal(warm ? 0 : 1, f.ReadIns - readIns);
        }
    }

    /// <summary>
    /// <see cref="SimFile.Invalidate"/>, a folio the host removed: unmapped pages leave the cache,
    /// a page the model maps stays (the host had unmapped it first), and a PMD-sized folio goes
    /// whole only when the range holds all of it.
    /// </summary>
    [Fact]
    public void AnInvalidatedRangeLeavesTheCacheButMappedPagesAndCutFoliosStay()
    {
        using var s = new Sim();
        var f = File(s, 1024);
        Assert.True(f.AddCached(0, 64, 4));
        Assert.True(f.AddCached(512, 512, 9));
        var r = s.Mm.Mmap(s.Cpu, Base, 64 * Sim.K4, Prot.Read, MapFlags.Private | MapFlags.Fixed, f, 0);
        Assert.True(r.Ok);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, Base, 64 * Sim.K4, Advice.Random));
        Assert.True(s.Cpu.ReadByte(Base + (20 * Sim.K4), out _).Ok); // maps the folio [16, 32)

        Assert.Equal((16L, 16L), f.Invalidate(0, 32));
        Assert.Equal([(16UL, 16UL), (32UL, 16UL), (48UL, 16UL), (512UL, 512UL)], f.Folios());
        Assert.Equal((0L, 256L), f.Invalidate(512, 256)); // half of the PMD-sized folio: it stays
        Assert.Equal((512L, 0L), f.Invalidate(512, 512));
        Assert.Equal([(16UL, 16UL), (32UL, 16UL), (48UL, 16UL)], f.Folios());
    }
}
