using System.Runtime.CompilerServices;
using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Tests.Storage;

public class TableEntryCacheTests
{
    // Physical memory with one PTE table, and a CPU's cache that has read nothing yet.
    private static (PhysMemory Phys, TableEntryCache Cache, long Table) NewTable()
    {
        var phys = new PhysMemory(64L << 20, pageData: false);
        return (phys, new TableEntryCache(), phys.AllocTable(1));
    }

    [Fact]
    public void ACachedReadFindsTheStorageTheLookupFinds()
    {
        var (phys, cache, t) = NewTable();
        phys.StoreEntry(t, 5, 0, 0x1067);
        ref ulong viaLookup = ref phys.Table(t)[5];
        Assert.True(Unsafe.AreSame(ref viaLookup, ref phys.CachedEntry(cache, 1, t, 5))); // the miss fills the line
        Assert.True(Unsafe.AreSame(ref viaLookup, ref phys.CachedEntry(cache, 1, t, 5))); // the hit
        Assert.True(Unsafe.AreSame(ref phys.Table(t)[6], ref phys.CachedEntry(cache, 1, phys.Ref(t), 6)));
        Assert.Equal(0x1067UL, phys.CachedEntry(cache, 1, t, 5));
        Assert.True(phys.SameCachedEntry(cache, 1, t, 5, ref viaLookup));
        // Another group of the same table: absent, so both read the sink.
        Assert.True(Unsafe.AreSame(ref phys.Table(t)[100], ref phys.CachedEntry(cache, 1, t, 100)));
    }

    [Fact]
    public void AGroupThatLeftItsTableIsNotFoundThroughTheCache()
    {
        var (phys, cache, t) = NewTable();
        phys.StoreEntry(t, 5, 0, 0x1067);
        ref ulong stored = ref phys.CachedEntry(cache, 1, t, 5);
        phys.StoreEntry(t, 5, 0x1067, 0); // the group's last entry went none: the group went back
        Assert.False(Unsafe.AreSame(ref stored, ref phys.CachedEntry(cache, 1, t, 5)));
        Assert.True(Unsafe.AreSame(ref phys.Table(t)[5], ref phys.CachedEntry(cache, 1, t, 5)));
        Assert.False(phys.SameCachedEntry(cache, 1, t, 5, ref stored));

        // Another table takes the group: the old line must not lead there.
        long u = phys.AllocTable(1);
        phys.StoreEntry(u, 5, 0, 0x2067);
        Assert.Equal(0UL, phys.CachedEntry(cache, 1, t, 5));
        Assert.Equal(0x2067UL, phys.CachedEntry(cache, 1, u, 5));
    }

    [Fact]
    public void AFreedTableReadThroughTheCacheIsAUseAfterFree()
    {
        var (phys, cache, t) = NewTable();
        var r = phys.Ref(t);
        phys.StoreEntry(t, 5, 0, 0x1067);
        Assert.Equal(0x1067UL, phys.CachedEntry(cache, 1, r, 5));
        phys.FreeTable(t);
        Assert.Throws<UseAfterFreeException>(() => phys.CachedEntry(cache, 1, t, 5));
        Assert.Throws<UseAfterFreeException>(() => phys.CachedEntry(cache, 1, r, 5));

        // Reused as a table again: the old reference is stale, the frame reads afresh.
        long again = phys.AllocTable(1);
        Assert.Equal(t, again);
        Assert.Throws<UseAfterFreeException>(() => phys.CachedEntry(cache, 1, r, 5));
        Assert.Equal(0UL, phys.CachedEntry(cache, 1, again, 5));
    }

    [Fact]
    public void AStoreThroughTheCacheCountsInItsGroupAsTheFullStoreDoes()
    {
        var (phys, cache, t) = NewTable();
        phys.StoreEntry(t, 5, 0, 0x1067);
        long groups = phys.TableStorage.Groups;
        Assert.Equal(0UL, phys.CachedEntry(cache, 1, t, 6)); // fills the line for the group
        phys.CachedStoreEntry(cache, 1, phys.Ref(t), 6, 0, 0x2067);
        Assert.Equal(0x2067UL, phys.Table(t)[6]);
        Assert.Equal(groups, phys.TableStorage.Groups);

        // Two entries counted: clearing one keeps the group, clearing the other gives it back.
        phys.StoreEntry(t, 5, 0x1067, 0);
        Assert.Equal(groups, phys.TableStorage.Groups);
        Assert.Equal(0x2067UL, phys.CachedEntry(cache, 1, t, 6));
        phys.StoreEntry(t, 6, 0x2067, 0);
        Assert.Equal(groups - 1, phys.TableStorage.Groups);
        Assert.Equal(0UL, phys.CachedEntry(cache, 1, t, 6));
    }
}
