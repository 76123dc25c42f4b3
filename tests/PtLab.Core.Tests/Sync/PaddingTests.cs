using System.Runtime.CompilerServices;
using PtLab.Sync;

namespace PtLab.Tests.Sync;

public sealed class PaddingTests
{
    [Fact]
    public void APaddedValueHasAWholeCacheLineOfPaddingOnEachSide()
    {
        var cells = new Padded<long>[2];
        long before = (long)Unsafe.ByteOffset(ref Unsafe.As<Padded<long>, byte>(ref cells[0]), ref Unsafe.As<long, byte>(ref cells[0].Value));
        long after = Unsafe.SizeOf<Padded<long>>() - before - sizeof(long);
        long apart = (long)Unsafe.ByteOffset(ref cells[0].Value, ref cells[1].Value);

        Assert.True(before >= CacheLine.Size, $"{before} bytes before the value");
        Assert.True(after >= CacheLine.Size, $"{after} bytes after the value");
        Assert.True(apart >= 2 * CacheLine.Size, $"neighbouring values {apart} bytes apart");
    }

    [Fact]
    public void PaddedCountersAddOwnedOrAtomicallyAndSum()
    {
        var cells = new Padded<long>[3];
        cells[0].AddOwned(5);
        cells[1].AddAtomic(-2);
        cells[2].Write(10);
        cells[0].AddOwned(1);

        Assert.Equal(6, cells[0].Read());
        Assert.Equal(14, cells.Sum());
    }
}
