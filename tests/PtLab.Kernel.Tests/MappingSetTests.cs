using PtLab.Mm;

namespace PtLab.Kernel.Tests;

public sealed class MappingSetTests
{
    private const Prot Rw = Prot.Read | Prot.Write;

    [Fact]
    public void RemovingTheMiddleOfARangeLeavesBothEnds()
    {
        var set = new MappingSet();
        set.Add(0x10000, 0x20000, Rw);
        set.Remove(0x14000, 0x18000);
        Assert.Equal([new OwnedRange(0x10000, 0x14000, Rw), new OwnedRange(0x18000, 0x20000, Rw)], set.Ranges);
    }

    [Fact]
    public void AdjacentRangesWithTheSameProtectionMerge()
    {
        var set = new MappingSet();
        set.Add(0x10000, 0x14000, Rw);
        set.Add(0x14000, 0x18000, Rw);
        Assert.Equal([new OwnedRange(0x10000, 0x18000, Rw)], set.Ranges);
    }

    [Fact]
    public void ChangingProtectionSplitsOnlyTheOwnedPart()
    {
        var set = new MappingSet();
        set.Add(0x10000, 0x20000, Rw);
        set.SetProt(0x8000, 0x14000, Prot.None);
        Assert.Equal([new OwnedRange(0x10000, 0x14000, Prot.None), new OwnedRange(0x14000, 0x20000, Rw)], set.Ranges);
    }

    [Fact]
    public void RestrictingProtectionKeepsOnlyWhatBothAllow()
    {
        var set = new MappingSet();
        set.Add(0x10000, 0x20000, Rw);
        set.RestrictProt(0x10000, 0x20000, Prot.Read);
        Assert.Equal([new OwnedRange(0x10000, 0x20000, Prot.Read)], set.Ranges);
    }

    [Fact]
    public void GapsAreThePartsNoRangeCovers()
    {
        var set = new MappingSet();
        set.Add(0x10000, 0x14000, Rw);
        set.Add(0x18000, 0x1c000, Rw);
        Assert.Equal([(0x8000UL, 0x10000UL), (0x14000UL, 0x18000UL), (0x1c000UL, 0x20000UL)], set.Gaps(0x8000, 0x20000));
        Assert.Empty(set.Gaps(0x10000, 0x14000));
    }
}
