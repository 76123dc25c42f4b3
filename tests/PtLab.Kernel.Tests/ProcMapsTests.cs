namespace PtLab.Kernel.Tests;

public sealed class ProcMapsTests
{
    private const string Sample = """
        55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1234   /usr/bin/cat
        7f0000000000-7f0000200000 rw-p 00000000 00:00 0
        10000000000-10000001000 rw-p 00000000 00:00 0
        7ffc1a000000-7ffc1a021000 rw-p 00000000 00:00 0      [stack]
        ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
        """;

    [Fact]
    public void ParsingMapsTextGivesTheRangesInAddressOrder()
    {
        var ranges = ProcMaps.Parse(Sample);
        Assert.Equal(5, ranges.Count);
        Assert.Equal(new MapsRange(0x100_0000_0000UL, 0x100_0000_1000UL), ranges[0]);
        Assert.True(ranges.Zip(ranges.Skip(1)).All(p => p.First.Start < p.Second.Start));
    }

    [Fact]
    public void AGarbledLineIsRejectedWithTheLineInTheMessage()
    {
        var ex = Assert.Throws<FormatException>(() => ProcMaps.Parse("not a maps line\n"));
        Assert.Contains("not a maps line", ex.Message);
    }

    [Fact]
    public void TheFreeRegionSearchSkipsOccupiedSlots()
    {
        var ranges = ProcMaps.Parse(Sample);
        const ulong slot = 1UL << 39;
        // 0x100_0000_0000 (1 TiB) is occupied by the third line; the next 512 GiB slot is free.
        Assert.Equal(0x180_0000_0000UL, ProcMaps.FindFreeRegion(ranges, slot, slot));
    }

    [Fact]
    public void TheFreeRegionSearchRejectsAnAlignmentThatIsNotAPowerOfTwo()
    {
        var ex = Assert.Throws<ArgumentException>(() => ProcMaps.FindFreeRegion([], 4096, 3 * 4096));
        Assert.Equal("alignment", ex.ParamName);
    }
}
