using System.Runtime.CompilerServices;
using PtLab.Phys;
using Xunit.Abstractions;

namespace PtLab.Tests.Storage;

/// <summary>
/// The per-CPU table-entry cache against every interleaving of one cache fill with one give-back
/// of table storage, at the granularity of the store's interleaving points: the fill runs at each
/// step of the give-back in turn, and the give-back (with another table taking what was given
/// back) at each step of the fill. Whatever the order, what the cache finds afterwards must be
/// exactly what the full lookup finds: the same storage, or the same use-after-free.
/// </summary>
public class TableEntryCacheRaceTests(ITestOutputHelper output)
{
    private const int Index = 5;
    private const ulong Mine = 0x1067;
    private const ulong Theirs = 0x2067;

    /// <summary>The give-backs: a group whose entries went none (the table keeps another group), a group and with it the slot, a table freed.</summary>
    public static TheoryData<string> GiveBacks => new() { "group", "group-and-slot", "free" };

    [Theory]
    [MemberData(nameof(GiveBacks))]
    public void AFillAtAnyStepOfAGiveBackLeavesTheCacheExact(string giveBack)
    {
        int points = AtEachPoint(
            giveBack,
            filled: true,
            outer: w => w.GiveBack(),
            inner: w => w.Fill(),
            after: w => w.Reuse(),
            step => $"{giveBack}, the fill at step {step} of the give-back");
        output.WriteLine($"{giveBack}: the fill ran at {points} points of the give-back");
    }

    [Theory]
    [MemberData(nameof(GiveBacks))]
    public void AGiveBackAtAnyStepOfAFillLeavesTheCacheExact(string giveBack)
    {
        int points = AtEachPoint(
            giveBack,
            filled: false,
            outer: w => w.Fill(),
            inner: w =>
            {
                w.GiveBack();
                w.Reuse();
            },
            after: _ => { },
            step => $"{giveBack}, the give-back at step {step} of the fill");
        output.WriteLine($"{giveBack}: the give-back ran at {points} points of the fill");
    }

    // Runs outer on a fresh world once for each of its interleaving points, with inner run at that
    // point, then after, then checks the cache; returns the number of points.
    private static int AtEachPoint(string giveBack, bool filled, Action<World> outer, Action<World> inner, Action<World> after, Func<int, string> when)
    {
        for (int at = 0; ; at++)
        {
            var w = new World(giveBack, filled);
            bool ran = false;
            int seen = 0;
            w.Phys.TableInterleavingPoint = () =>
            {
                if (seen++ == at)
                {
                    w.Phys.TableInterleavingPoint = null;
                    inner(w);
                    ran = true;
                }
            };
            outer(w);
            w.Phys.TableInterleavingPoint = null;
            if (!ran)
            {
                Assert.True(at >= 2, $"{when(at)}: only {at} interleaving points");
                return at;
            }

            after(w);
            w.AssertCacheExact(when(at));
        }
    }

    // One table P whose entry the CPU reads through its cache while P's storage is given back, and
    // the table U that takes the storage next (the store reuses storage first in, first out, and a
    // fresh store has nothing else to give).
    private sealed class World
    {
        private readonly string _giveBack;
        private readonly TableEntryCache _cache = new();
        private readonly long _p;
        private long _u = -1;

        // filled: the CPU's line for P's entry is filled before the race (the give-back then
        // races hits as well as a miss); else the race's fill is the first, a miss throughout.
        public World(string giveBack, bool filled)
        {
            _giveBack = giveBack;
            Phys = new PhysMemory(64L << 20, pageData: false);
            _p = Phys.AllocTable(1);
            Phys.StoreEntry(_p, Index, 0, Mine);
            if (giveBack == "group")
            {
                Phys.StoreEntry(_p, 200, 0, Mine); // another group keeps the slot
            }

            if (filled)
            {
                Phys.CachedEntry(_cache, 1, _p, Index);
            }
        }

        public PhysMemory Phys { get; }

        // The CPU reads P's entry through its cache, filling its line on a miss.
        public void Fill()
        {
            try
            {
                Phys.CachedEntry(_cache, 1, _p, Index);
            }
            catch (UseAfterFreeException)
            {
                // P was already freed: the fill found that out, as the lookup does.
            }
        }

        public void GiveBack()
        {
            if (_giveBack == "free")
            {
                Phys.FreeTable(_p);
            }
            else
            {
                Phys.StoreEntry(_p, Index, Mine, 0);
            }
        }

        // Another table takes the storage P gave back and stores an entry in it.
        public void Reuse()
        {
            _u = Phys.AllocTable(1);
            Phys.StoreEntry(_u, Index, 0, Theirs);
        }

        public void AssertCacheExact(string when)
        {
            foreach (long t in _u >= 0 && _u != _p ? [_p, _u] : new[] { _p })
            {
                foreach (int i in new[] { Index, Index + 1, 200 })
                {
                    string lookup, cached;
                    ulong viaLookup = 0, viaCache = 0;
                    try
                    {
                        viaLookup = Volatile.Read(ref Phys.Table(t)[i]);
                        lookup = "its own storage";
                    }
                    catch (UseAfterFreeException)
                    {
                        lookup = "a use after free";
                    }

                    try
                    {
                        ref ulong e = ref Phys.CachedEntry(_cache, 1, t, i);
                        viaCache = Volatile.Read(ref e);
                        cached = lookup == "its own storage" && Unsafe.AreSame(ref e, ref Phys.Table(t)[i]) ? lookup : Describe(ref e);
                    }
                    catch (UseAfterFreeException)
                    {
                        cached = "a use after free";
                    }

                    Assert.True(lookup == cached, $"{when}: entry {i} of table {t:x}: the lookup finds {lookup}, the cache {cached}");
                    Assert.True(viaLookup == viaCache, $"{when}: entry {i} of table {t:x}: the lookup reads {viaLookup:x}, the cache {viaCache:x}");
                    if (lookup == "its own storage")
                    {
                        ulong read = Phys.ReadCachedEntry(_cache, 1, t, i);
                        Assert.True(read == viaLookup, $"{when}: entry {i} of table {t:x}: the lookup reads {viaLookup:x}, the lockless cached read {read:x}");
                    }
                }
            }
        }

        // Which storage an entry found through the cache is in, when it is not its table's own.
        private string Describe(ref ulong e)
        {
            foreach (long t in new[] { _p, _u })
            {
                for (int i = 0; t >= 0 && i < PhysMemory.EntriesPerTable; i++)
                {
                    try
                    {
                        if (Unsafe.AreSame(ref e, ref Phys.Table(t)[i]))
                        {
                            return $"the storage of entry {i} of table {t:x}";
                        }
                    }
                    catch (UseAfterFreeException)
                    {
                        break;
                    }
                }
            }

            return "storage of no live table";
        }
    }
}
