using PtLab.Workloads.Allocators;

namespace PtLab.Tests.Workloads;

public class ExtentArenaTests
{
    private sealed class Space
    {
        private ulong _next = 1UL << 40;

        public List<(ulong Addr, ulong Length)> Maps { get; } = [];

        public ulong Map(ulong length)
        {
            ulong a = _next;
            _next += length + (1UL << 30); // chunks are never adjacent
            Maps.Add((a, length));
            return a;
        }
    }

    [Fact]
    public void AFreedExtentIsDirtyAndReusedBeforeAnyGrowth()
    {
        var space = new Space();
        var arena = new ExtentArena(space.Map);
        ulong a = arena.Alloc(64 << 10);
        arena.Free(a, 64 << 10, epoch: 1);
        Assert.Equal(64UL << 10, arena.Dirty);
        ulong b = arena.Alloc(64 << 10);
        Assert.Equal(a, b);
        Assert.Equal(1, arena.Reuse.Dirty);
        Assert.Single(space.Maps);
    }

    [Fact]
    public void DirtyExtentsArePurgedOnlyAfterTheirDecayAndThenReusedClean()
    {
        var space = new Space();
        var arena = new ExtentArena(space.Map);
        ulong a = arena.Alloc(16 << 10);
        ulong b = arena.Alloc(16 << 10);
        arena.Free(a, 16 << 10, epoch: 1);
        arena.Free(b, 16 << 10, epoch: 2);
        var purged = new List<(ulong, ulong)>();
        Assert.Equal(0UL, arena.Decay(0, (x, l) => purged.Add((x, l))));
        // a and b coalesced into one dirty extent, dirty since the later free.
        Assert.Equal(0UL, arena.Decay(1, (x, l) => purged.Add((x, l))));
        Assert.Equal(32UL << 10, arena.Decay(2, (x, l) => purged.Add((x, l))));
        Assert.Equal([(a, 32UL << 10)], purged);
        Assert.Equal(0UL, arena.Dirty);
        Assert.Equal(a, arena.Alloc(32 << 10));
        Assert.Equal((0L, 2L, 1L), arena.Reuse); // b and this one from clean space; a grew the arena
    }

    [Fact]
    public void AddressSpaceGrowsGeometricallyAndIsNeverGivenBack()
    {
        var space = new Space();
        var arena = new ExtentArena(space.Map, firstGrow: 2UL << 20, maxGrow: 8UL << 20);
        var live = new List<ulong>();
        for (int i = 0; i < 16; i++)
        {
            live.Add(arena.Alloc(1UL << 20));
        }

        Assert.Equal([2UL << 20, 4UL << 20, 8UL << 20, 8UL << 20], space.Maps.Select(m => m.Length));
        Assert.Equal(22UL << 20, arena.Retained);
        foreach (ulong a in live)
        {
            arena.Free(a, 1UL << 20, epoch: 1);
        }

        arena.Decay(10, (_, _) => { });
        Assert.Equal(22UL << 20, arena.Retained);
        Assert.Equal(0UL, arena.Live);
    }

    [Fact]
    public void SizeClassesAreFourPerDoublingAndPageMultiples()
    {
        ulong[] c = PtLab.Workloads.Scenarios.ProductionScenario.SizeClasses(128UL << 10);
        Assert.Equal([16UL << 10, 20UL << 10, 24UL << 10, 28UL << 10, 32UL << 10, 40UL << 10, 48UL << 10, 56UL << 10, 64UL << 10, 80UL << 10, 96UL << 10, 112UL << 10, 128UL << 10], c);
        Assert.All(c, x => Assert.Equal(0UL, x % 4096));
    }
}
