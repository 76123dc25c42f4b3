using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PtLab.Phys;

/// <summary>
/// One CPU's memo, per table level, of where the last entry it read through
/// <see cref="PhysMemory.CachedEntry(TableEntryCache, int, long, int)"/> is stored: the table's
/// frame and generation, the group of 32 entries, and that group's storage. A host-side shortcut
/// past the descriptor, slot and group lookups, exact because it is used only while the table
/// store's <see cref="TableStore.LayoutEpoch"/> still reads the stamp the line was filled with
/// (the epoch read before the lookup): storage is unlinked from a table before the epoch advances
/// and given back after, so no group has been given back, and no table freed, since the line
/// found it, and the lookup would find the same storage in the same live table. A reader under
/// the table's lock checks the stamp once; a lockless one checks it again after reading the
/// entry (<see cref="PhysMemory.ReadCachedEntry(TableEntryCache, int, long, int)"/>). Used by one
/// thread at a time (the thread driving its CPU), so a line is never torn.
/// </summary>
public sealed class TableEntryCache
{
    // Indexed by level: 1 PTE, 2 PMD, 3 PUD, 4 PGD (0 unused). Inline in the object, so that a
    // line is found without an array bounds check (a level is always 1 to 4).
    private Lines _lines = Lines.Create();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ref Line At(int level)
    {
        Debug.Assert((uint)level < Lines.Count);
        return ref Unsafe.Add(ref Unsafe.As<Lines, Line>(ref _lines), level);
    }

    [InlineArray(Count)]
    private struct Lines
    {
        public const int Count = 5;

        private Line _first;

        public static Lines Create()
        {
            var lines = default(Lines);
            for (int i = 0; i < Count; i++)
            {
                lines[i] = Line.Empty;
            }

            return lines;
        }
    }

    internal struct Line
    {
        public static readonly Line Empty = new() { Pfn = -1 };

        public long Pfn;
        public long Epoch;
        public ulong[]? Storage;
        public int[]? Headers;
        public int Header;
        public int Generation;
        public int Group;
        public int Offset;

        /// <summary>Whether the line holds entry <paramref name="index"/> of the table in <paramref name="pfn"/>, the layout being still at <paramref name="epoch"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly bool Holds(long pfn, int index, long epoch) =>
            Pfn == pfn && Group == index >> TableStore.GroupShift && Epoch == epoch;

        /// <summary>
        /// The storage of entry <paramref name="index"/>, in the group the line holds. A line is
        /// filled only with a group found in its storage, all of whose entries lie inside it, so
        /// the entry is read without a bounds check.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly ref ulong Entry(int index)
        {
            Debug.Assert(Storage is not null && Offset + TableStore.GroupEntries <= Storage.Length);
            return ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Storage!), Offset + (index & (TableStore.GroupEntries - 1)));
        }
    }
}
