using PtLab.Paging;

namespace PtLab.Tests.Paging;

public class EntryTests
{
    [Fact]
    public void APresentEntryCarriesTheX86BitsAndTheFrameNumber()
    {
        ulong e = Entry.MakePte(0x12345, writable: true, dirty: true);
        Assert.Equal(1UL, e & 1);           // present
        Assert.Equal(2UL, e & 2);           // RW
        Assert.Equal(4UL, e & 4);           // user
        Assert.Equal(1UL << 5, e & (1UL << 5)); // accessed
        Assert.Equal(1UL << 6, e & (1UL << 6)); // dirty
        Assert.Equal(1UL << 63, e & (1UL << 63)); // NX
        Assert.Equal(0x12345L, Entry.Pfn(e));
        Assert.Equal(0x12345UL << 12, e & Entry.PfnMask);
    }

    [Fact]
    public void TheFrameNumberFieldIsBits12To51()
    {
        Assert.Equal(0x000F_FFFF_FFFF_F000UL, Entry.PfnMask);
        long maxPfn = (1L << 40) - 1;
        Assert.Equal(maxPfn, Entry.Pfn(Entry.MakePte(maxPfn, false, false)));
    }

    [Fact]
    public void NoneMeansTheWholeEntryIsZero()
    {
        Assert.True(Entry.IsNone(0));
        Assert.False(Entry.IsNone(Entry.MkOld(Entry.MakePte(0, false, false))));
        Assert.False(Entry.IsPresent(0));
        Assert.False(Entry.IsSwap(0));
    }

    [Fact]
    public void TheZeroPageEntryIsPresentReadOnlyAndSpecial()
    {
        ulong z = Entry.MakeZeroPagePte(0);
        Assert.True(Entry.IsPresent(z));
        Assert.False(Entry.IsWritable(z));
        Assert.True(Entry.IsSpecial(z));
        Assert.False(Entry.IsDirty(z));
    }

    [Theory]
    [InlineData(0, 0L)]
    [InlineData(1, 1L)]
    [InlineData(31, 123456789L)]
    [InlineData(7, (1L << 50) - 1)]
    public void SwapEntriesRoundTripAndAreNeitherNoneNorPresent(int type, long offset)
    {
        ulong e = Entry.MakeSwap(type, offset);
        Assert.True(Entry.IsSwap(e));
        Assert.False(Entry.IsPresent(e));
        Assert.False(Entry.IsNone(e));
        Assert.Equal(0UL, e & (Entry.Present | Entry.ProtNone));
        Assert.Equal(type, Entry.SwapType(e));
        Assert.Equal(offset, Entry.SwapOffset(e));
    }

    [Fact]
    public void SwapEntriesThatDoNotFitAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Entry.MakeSwap(32, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Entry.MakeSwap(0, 1L << 50));
    }

    [Fact]
    public void ProtNoneEntriesArePresentToTheKernelButNotToHardware()
    {
        ulong e = (Entry.MakePte(5, false, false) & ~Entry.Present) | Entry.ProtNone;
        Assert.True(Entry.IsPresent(e));
        Assert.False(Entry.IsHwPresent(e));
        Assert.True(Entry.IsProtNone(e));
        Assert.False(Entry.IsSwap(e));
        Assert.Equal(5L, Entry.Pfn(e));
    }

    [Fact]
    public void AHugeLeafNeedsPresentAndPse()
    {
        Assert.True(Entry.IsHuge(Entry.Present | Entry.Huge));
        Assert.False(Entry.IsHuge(Entry.Huge));
        Assert.False(Entry.IsHuge(Entry.MakeTable(7)));
    }

    [Fact]
    public void TableEntriesPointAtTheTableFrame()
    {
        ulong e = Entry.MakeTable(0xABC);
        Assert.Equal(0xABCL, Entry.Pfn(e));
        Assert.True(Entry.IsPresent(e));
        Assert.True(Entry.IsWritable(e));
    }

    [Fact]
    public void GeometryIndexesEachLevelWithNineBits()
    {
        ulong va = (3UL << 39) | (5UL << 30) | (7UL << 21) | (9UL << 12) | 0x123;
        Assert.Equal(3, Geometry.Index(va, 4));
        Assert.Equal(5, Geometry.Index(va, 3));
        Assert.Equal(7, Geometry.Index(va, 2));
        Assert.Equal(9, Geometry.Index(va, 1));
        Assert.Equal(9, Geometry.PteIndex(va));
        Assert.Equal(1UL << 48, 1UL << ((9 * 4) + 12));
    }

    [Fact]
    public void AddrEndStopsAtTheBoundaryOrTheEnd()
    {
        Assert.Equal(0x400000UL, Geometry.PmdAddrEnd(0x201000, 0x900000));
        Assert.Equal(0x300000UL, Geometry.PmdAddrEnd(0x201000, 0x300000));
        // A boundary that wraps to 0 at the very top still yields the end.
        Assert.Equal(ulong.MaxValue, Geometry.PmdAddrEnd(ulong.MaxValue - 10, ulong.MaxValue));
    }
}
