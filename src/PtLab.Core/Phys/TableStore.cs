using System.Runtime.CompilerServices;

namespace PtLab.Phys;

/// <summary>
/// Entries of page-table pages, stored by occupancy. A table's 512 entries are 16 groups of 32;
/// a group exists only while one of its entries is not none, and a table has a slot (a header
/// naming its groups) only once it has stored an entry or been given state; the design state cells
/// of a chunk of slots exist only once a design stored a state in one of them.
/// So an empty table costs only its descriptor, a sparse one the groups its entries fall in, and a
/// dense one its 4 KiB. An absent entry reads as zero from a shared sink that is never written;
/// every store of a non-none value goes through <see cref="Store"/>, which creates the group.
/// A group or slot, once created, stays where it is until released, so a <c>ref</c> to an entry
/// taken under the table's lock stays valid while that lock is held.
/// </summary>
internal sealed class TableStore
{
    /// <summary>Entries per group: 32 entries of 8 bytes = 256 bytes.</summary>
    public const int GroupShift = 5;
    public const int GroupEntries = 1 << GroupShift;
    public const int GroupsPerTable = PhysMemory.EntriesPerTable >> GroupShift; // 512 / 32 = 16

    // A header word: group id << 6 | count of non-none entries in it (0-32).
    private const int CountBits = 6;
    private const int CountMask = (1 << CountBits) - 1;

    // Chunks are small, so that the last one, partly used, costs little beside the tables in use
    // (a dense 4 GiB holds 2,048 PTE tables, 32,768 groups), and pinned, so the GC never copies them.
    private const int SlotChunkShift = 6;    // 64 slots of 16 header words: 4 KiB
    private const int SlotChunkMask = (1 << SlotChunkShift) - 1;

    /// <summary>Slots per chunk: headers, and design state cells where a design keeps state, come this many at a time.</summary>
    internal const int SlotsPerChunk = 1 << SlotChunkShift;
    private const int GroupChunkShift = 6;   // 64 groups of 32 entries: 16 KiB
    private const int GroupChunkMask = (1 << GroupChunkShift) - 1;

    private readonly ulong[] _sink = new ulong[1];
    private readonly Lock _lock = new();
    private int[]?[] _headers = new int[]?[16];
    // Design states in struct cells: a ref to a cell of a struct array needs no covariance check,
    // as one to an element of an object array does, on every pte_ref lookup.
    private StateCell[]?[] _states = new StateCell[]?[16];
    private ulong[]?[] _groups = new ulong[]?[16];
    private readonly Queue<int> _freeSlots = new();
    private readonly Queue<int> _freeGroups = new();
    private int _nextSlot = 1;   // 0 means "no slot"
    private int _nextGroup = 1;  // 0 means "no group"
    private long _hostBytes;
    private long _layoutEpoch;
    private long _slotsInUse;
    private long _groupsInUse;

    /// <summary>Host memory held by headers, states and groups.</summary>
    public long HostBytes => Volatile.Read(ref _hostBytes);

    /// <summary>Slots held by live tables.</summary>
    public long SlotsInUse => Volatile.Read(ref _slotsInUse);

    /// <summary>Groups of 32 entries held by live tables.</summary>
    public long GroupsInUse => Volatile.Read(ref _groupsInUse);

    /// <summary>
    /// The layout epoch, which <see cref="TableEntryCache"/> lines are valid against (a seqlock
    /// whose writers never wait for readers). The protocol:
    /// <list type="bullet">
    /// <item>Storage leaves a table in three ways, each under the lock that orders stores to the
    /// table or with the table unreachable: a group whose entries all went none is given back
    /// (<see cref="CountCleared"/>), a slot left with neither group nor state is given back
    /// (<see cref="ReleaseSlotIfEmpty"/>), a freed table gives back all it holds
    /// (<see cref="Release"/>, which <see cref="PhysMemory.FreeTable"/> calls once the frame is
    /// no longer a table). Each first unlinks the storage (the header, the slot word, the table
    /// flag), THEN advances the epoch with a full fence (<see cref="LayoutChanged"/>), and only
    /// THEN puts the storage on a free list, from which another table may take it. Storage
    /// coming to a table (a group or slot taken, a table allocated) moves nothing a line can
    /// hold, since a line is only ever filled from a stored group: no advance.</item>
    /// <item>A fill reads the epoch first (acquire), then the descriptor, slot and header, and
    /// stamps the line with the epoch it read. An unlinking whose advance it read is visible to
    /// its lookup (the advance released it), so the lookup cannot find that storage; any later
    /// unlinking advances past the stamp. Hence: while the epoch still reads a line's stamp, the
    /// line's storage has not been put back on a free list since the fill, so no other table
    /// can have taken it, and it is the table's group as the lookup would find it.</item>
    /// <item>A reader under the table's lock (which every unlinking of the table's groups and slot
    /// holds, and which a freed table has no holder of) checks the stamp once and may read and
    /// write through the storage until it unlocks. A lockless reader reads the entry and then
    /// the epoch again (<see cref="PhysMemory.ReadCachedEntry(TableEntryCache, int, long, int)"/>,
    /// <see cref="PhysMemory.SameCachedEntry"/>): if it still reads the stamp, the entry read
    /// was the table's when read; if not, it reads again through the lookup.</item>
    /// </list>
    /// Advancing before the unlinking instead (as first written) is wrong: a fill that reads the
    /// advanced epoch but the header from before its unlinking stamps a line that no later
    /// advance invalidates, and the group, taken by another table, is then read and written
    /// through it as this table's (the race <c>TableEntryCacheRaceTests</c> shows).
    /// </summary>
    public long LayoutEpoch
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _layoutEpoch);
    }

    /// <summary>
    /// Marks that storage was unlinked from a table (see <see cref="LayoutEpoch"/>): called after
    /// the unlinking and before the storage is given back; a full fence.
    /// </summary>
    public void LayoutChanged() => Interlocked.Increment(ref _layoutEpoch);

    /// <summary>
    /// Tests only: called between the steps of every give-back of storage and of every cache fill,
    /// so that a test can run another operation at each such point in turn (an exhaustive,
    /// deterministic interleaving of the two); null otherwise.
    /// </summary>
    internal Action? InterleavingPoint;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Step() => InterleavingPoint?.Invoke();

    /// <summary>
    /// Where entry <paramref name="index"/> of the table with <paramref name="slot"/> is stored,
    /// and where its group's header is: false when its group is absent (it reads from the sink).
    /// </summary>
    public bool TryLocate(int slot, int index, out ulong[] storage, out int offset, out int[] headers, out int header)
    {
        if (slot != 0)
        {
            headers = Volatile.Read(ref _headers)[slot >> SlotChunkShift]!;
            header = ((slot & SlotChunkMask) << 4) + (index >> GroupShift);
            int h = Volatile.Read(ref headers[header]);
            if (h != 0)
            {
                int g = h >> CountBits;
                storage = Volatile.Read(ref _groups)[g >> GroupChunkShift]!;
                offset = (g & GroupChunkMask) << GroupShift;
                return true;
            }
        }

        storage = _sink;
        offset = 0;
        headers = [];
        header = 0;
        return false;
    }

    /// <summary>
    /// <see cref="Store"/> of a value that is not none into an entry whose group is stored,
    /// found by <see cref="TryLocate"/> and not moved since: <paramref name="entry"/> is its
    /// storage, <paramref name="header"/> its group's header. The caller holds the lock that
    /// orders stores to the table.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreLocated(ref ulong entry, ref int header, ulong old, ulong value)
    {
        if (old == 0)
        {
            // The count changes only under the table's lock, which the caller holds: a plain store.
            Volatile.Write(ref header, Volatile.Read(ref header) + 1);
        }

        Volatile.Write(ref entry, value);
    }

    /// <summary>Whether the sink that absent entries read from still reads zero (a store that bypassed <see cref="Store"/> would break it).</summary>
    public bool SinkIsZero => Volatile.Read(ref _sink[0]) == 0;

    /// <summary>The entry at <paramref name="index"/> of the table with <paramref name="slot"/>: its storage, or the zero sink when absent.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong Entry(int slot, int index)
    {
        if (slot != 0)
        {
            int h = Volatile.Read(ref Header(slot, index >> GroupShift));
            if (h != 0)
            {
                return ref GroupEntry(h >> CountBits, index);
            }
        }

        return ref _sink[0];
    }

    /// <summary>
    /// Whether entry <paramref name="index"/> of the table with <paramref name="slot"/> can read
    /// other than none: its group of 32 is stored, or the sink that absent entries read from is not
    /// zero (a store bypassed <see cref="Store"/>, and every absent entry reads what it left).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool MayBeStored(int slot, int index) =>
        (slot != 0 && Volatile.Read(ref Header(slot, index >> GroupShift)) != 0) || Volatile.Read(ref _sink[0]) != 0;

    /// <summary>
    /// Stores <paramref name="value"/> at <paramref name="index"/>, creating the slot and group if
    /// needed and releasing a PTE table's group that became empty. The caller holds the lock that
    /// orders stores to this table (the PTE lock, the pmd lock, <c>page_table_lock</c>, or
    /// <c>mmap_lock</c> for write), so the group counts change with plain stores; <paramref name="old"/>
    /// is the entry it replaces.
    /// </summary>
    public void Store(ref int tableSlot, int index, ulong old, ulong value, bool releaseEmpty)
    {
        if (old == 0 && value == 0)
        {
            return;
        }

        int slot = Volatile.Read(ref tableSlot);
        if (old != 0)
        {
            ref int hdr = ref Header(slot, index >> GroupShift);
            int h = Volatile.Read(ref hdr);
            Volatile.Write(ref GroupEntry(h >> CountBits, index), value);
            if (value == 0)
            {
                CountCleared(ref tableSlot, ref hdr, releaseEmpty);
            }

            return;
        }

        if (slot == 0)
        {
            slot = EnsureSlot(ref tableSlot);
        }

        ref int header = ref Header(slot, index >> GroupShift);
        int hh = Volatile.Read(ref header);
        if (hh != 0)
        {
            // The count changes only under the table's lock, which the caller holds: a plain store.
            Volatile.Write(ref header, hh + 1);
            Volatile.Write(ref GroupEntry(hh >> CountBits, index), value);
            return;
        }

        int g = TakeGroup();
        Volatile.Write(ref GroupEntry(g, index), value);
        // Release: the group's zeroed entries and this one are visible before the header names it
        // to lockless readers.
        Volatile.Write(ref header, (g << CountBits) | 1);
    }

    // One entry of the group went none, under the table's lock: count it, and give the group back
    // (and the slot, when nothing else is left in it) once the group is empty.
    private void CountCleared(ref int tableSlot, ref int hdr, bool releaseEmpty)
    {
        int left = Volatile.Read(ref hdr) - 1;
        if ((left & CountMask) == 0 && releaseEmpty)
        {
            Volatile.Write(ref hdr, 0);
            Step();
            LayoutChanged();
            Step();
            ReleaseGroup(left >> CountBits);
            ReleaseSlotIfEmpty(ref tableSlot);
            return;
        }

        Volatile.Write(ref hdr, left);
    }

    /// <summary>
    /// <see cref="Cleared"/> of an entry of a PTE table whose group header the caller located
    /// (see <see cref="StoreLocated"/>), under the table's lock: an empty group is released.
    /// </summary>
    public void ClearedLocated(ref int tableSlot, ref int header) => CountCleared(ref tableSlot, ref header, releaseEmpty: true);

    /// <summary>Counts an entry that a caller cleared in place (an exchange with zero) and releases its group if it became empty.</summary>
    public void Cleared(ref int tableSlot, int index, bool releaseEmpty)
    {
        CountCleared(ref tableSlot, ref Header(Volatile.Read(ref tableSlot), index >> GroupShift), releaseEmpty);
    }

    /// <summary>The design state of a table (the seed's <c>pte_ref</c>), or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public object? State(int slot)
    {
        if (slot == 0)
        {
            return null;
        }

        StateCell[]? cells = Volatile.Read(ref _states)[slot >> SlotChunkShift];
        return cells is null ? null : Volatile.Read(ref cells[slot & SlotChunkMask].Value);
    }

    /// <summary>Sets the design state of a table, creating its slot if needed.</summary>
    public void SetState(ref int tableSlot, object? state)
    {
        int slot = Volatile.Read(ref tableSlot);
        if (slot == 0)
        {
            if (state is null)
            {
                return;
            }

            slot = EnsureSlot(ref tableSlot);
        }

        StateCell[]? cells = Volatile.Read(ref _states)[slot >> SlotChunkShift];
        if (cells is null)
        {
            if (state is null)
            {
                return;
            }

            cells = StateChunk(slot >> SlotChunkShift);
        }

        Volatile.Write(ref cells[slot & SlotChunkMask].Value, state);
    }

    // The state cells of a chunk of slots, created on the first state stored in it: a design that
    // keeps no per-table state (none) never pays for them.
    private StateCell[] StateChunk(int chunk)
    {
        lock (_lock)
        {
            var cells = _states[chunk];
            if (cells is null)
            {
                cells = new StateCell[1 << SlotChunkShift];
                Volatile.Write(ref _states[chunk], cells);
                _hostBytes += (long)IntPtr.Size << SlotChunkShift;
            }

            return cells;
        }
    }

    /// <summary>Releases a PTE table's slot once it holds neither an entry nor state (its entries all went none).</summary>
    public void ReleaseSlotIfEmpty(ref int tableSlot)
    {
        int slot = Volatile.Read(ref tableSlot);
        if (slot == 0 || State(slot) is not null)
        {
            return;
        }

        for (int g = 0; g < GroupsPerTable; g++)
        {
            if (Volatile.Read(ref Header(slot, g)) != 0)
            {
                return;
            }
        }

        if (Interlocked.CompareExchange(ref tableSlot, 0, slot) == slot)
        {
            Step();
            LayoutChanged();
            Step();
            ReleaseSlotStorage(slot);
        }
    }

    /// <summary>
    /// Frees a table's storage: every group is unlinked and overwritten with
    /// <paramref name="poison"/>, the layout epoch advances, then the groups and the slot are given
    /// back. The epoch advances even when there was nothing to give back: the caller has just
    /// made the frame stop being a table, and a fill that read its slot word after that (a word
    /// the frame's next use may reuse) must not stay valid.
    /// </summary>
    public void Release(ref int tableSlot, ulong poison)
    {
        int slot = Interlocked.Exchange(ref tableSlot, 0);
        Step();
        if (slot == 0)
        {
            LayoutChanged();
            return;
        }

        Span<int> groups = stackalloc int[GroupsPerTable];
        for (int g = 0; g < GroupsPerTable; g++)
        {
            int h = Interlocked.Exchange(ref Header(slot, g), 0);
            groups[g] = h >> CountBits;
            if (h != 0)
            {
                GroupSpan(h >> CountBits).Fill(poison);
            }
        }

        if (Volatile.Read(ref _states)[slot >> SlotChunkShift] is { } cells)
        {
            Volatile.Write(ref cells[slot & SlotChunkMask].Value, null);
        }

        Step();
        LayoutChanged();
        Step();
        foreach (int g in groups)
        {
            if (g != 0)
            {
                ReleaseGroup(g);
            }
        }

        ReleaseSlotStorage(slot);
    }

    private void ReleaseSlotStorage(int slot)
    {
        lock (_lock)
        {
            _freeSlots.Enqueue(slot);
            _slotsInUse--;
        }
    }

    private int EnsureSlot(ref int tableSlot)
    {
        int slot = TakeSlot();
        int seen = Interlocked.CompareExchange(ref tableSlot, slot, 0);
        if (seen == 0)
        {
            return slot;
        }

        ReleaseSlotStorage(slot);
        return seen;
    }

    private int TakeSlot()
    {
        lock (_lock)
        {
            _slotsInUse++;
            // First in, first out: a freed slot waits behind every other before it is reused.
            if (_freeSlots.Count > 0)
            {
                return _freeSlots.Dequeue();
            }

            int slot = _nextSlot++;
            int c = slot >> SlotChunkShift;
            if (c >= _headers.Length)
            {
                var h = new int[]?[_headers.Length * 2];
                Array.Copy(_headers, h, _headers.Length);
                Volatile.Write(ref _headers, h);
                var s = new StateCell[]?[_states.Length * 2];
                Array.Copy(_states, s, _states.Length);
                Volatile.Write(ref _states, s);
            }

            if (_headers[c] is null)
            {
                Volatile.Write(ref _headers[c], GC.AllocateArray<int>(GroupsPerTable << SlotChunkShift, pinned: true));
                _hostBytes += ((long)GroupsPerTable * sizeof(int)) << SlotChunkShift;
            }

            return slot;
        }
    }

    private int TakeGroup()
    {
        int g;
        lock (_lock)
        {
            _groupsInUse++;
            if (_freeGroups.Count > 0)
            {
                g = _freeGroups.Dequeue();
            }
            else
            {
                g = _nextGroup++;
                int c = g >> GroupChunkShift;
                if (c >= _groups.Length)
                {
                    var n = new ulong[]?[_groups.Length * 2];
                    Array.Copy(_groups, n, _groups.Length);
                    Volatile.Write(ref _groups, n);
                }

                if (_groups[c] is null)
                {
                    Volatile.Write(ref _groups[c], GC.AllocateArray<ulong>(GroupEntries << GroupChunkShift, pinned: true));
                    _hostBytes += (long)(GroupEntries * sizeof(ulong)) << GroupChunkShift;
                }

                return g;
            }
        }

        GroupSpan(g).Clear();
        return g;
    }

    private void ReleaseGroup(int g)
    {
        lock (_lock)
        {
            // First in, first out, as for slots: a lockless reader that still holds this group
            // most likely finds it empty, and rechecks the table's header (see SameEntry).
            _freeGroups.Enqueue(g);
            _groupsInUse--;
        }
    }

    /// <summary>
    /// What is wrong with the stored groups of the table with <paramref name="slot"/>, or null: a
    /// header must name storage that was handed out and not given back, named by no other
    /// table's header (the groups seen so far are in <paramref name="owners"/>, filled as it
    /// goes), and count exactly the group's entries that are not none. For a quiescent store.
    /// </summary>
    public string? Check(int slot, long table, Dictionary<int, long> owners)
    {
        if (slot == 0)
        {
            return null;
        }

        for (int g = 0; g < GroupsPerTable; g++)
        {
            int h = Volatile.Read(ref Header(slot, g));
            if (h == 0)
            {
                continue;
            }

            int id = h >> CountBits;
            if (id == 0 || id >= Volatile.Read(ref _nextGroup))
            {
                return $"group {g} of table {table:x} names storage {id}, which was never handed out";
            }

            if (!owners.TryAdd(id, table))
            {
                return $"group {g} of table {table:x} names storage {id}, which table {owners[id]:x} holds too";
            }

            lock (_lock)
            {
                if (_freeGroups.Contains(id))
                {
                    return $"group {g} of table {table:x} names storage {id}, which was given back";
                }
            }

            int stored = 0;
            foreach (ulong e in GroupSpan(id))
            {
                stored += e != 0 ? 1 : 0;
            }

            if (stored != (h & CountMask))
            {
                return $"group {g} of table {table:x} counts {h & CountMask} entries that are not none, but holds {stored}";
            }
        }

        return null;
    }

    /// <summary>Whether <paramref name="entry"/> is still the storage of entry <paramref name="index"/> of the table with <paramref name="slot"/>.</summary>
    public bool SameEntry(int slot, int index, ref ulong entry) => Unsafe.AreSame(ref Entry(slot, index), ref entry);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref int Header(int slot, int group) =>
        ref Volatile.Read(ref _headers)[slot >> SlotChunkShift]![((slot & SlotChunkMask) << 4) + group];

    private struct StateCell
    {
        public object? Value;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ulong GroupEntry(int g, int index) =>
        ref Volatile.Read(ref _groups)[g >> GroupChunkShift]![((g & GroupChunkMask) << GroupShift) + (index & (GroupEntries - 1))];

    private Span<ulong> GroupSpan(int g) =>
        new(Volatile.Read(ref _groups)[g >> GroupChunkShift], (g & GroupChunkMask) << GroupShift, GroupEntries);
}

/// <summary>
/// The 512 entries of a mapped table, read through its store: an indexer that returns each
/// entry's storage (or the zero sink for an absent one), enumerable like a span.
/// </summary>
public readonly ref struct TableEntries
{
    private readonly TableStore _store;
    private readonly ref int _slot; // the descriptor's TableSlot: read at each access, as a slot can come and go

    internal TableEntries(TableStore store, ref int slot)
    {
        _store = store;
        _slot = ref slot;
    }

    /// <summary>Entries in a table: 512.</summary>
    public int Length => PhysMemory.EntriesPerTable;

    /// <summary>The storage of entry <paramref name="index"/>. Read it freely; store a non-none value only through the set primitives.</summary>
    public ref ulong this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _store.Entry(Volatile.Read(ref _slot), index);
    }

    /// <summary>
    /// The first index at or after <paramref name="index"/> whose entry can be other than none:
    /// <paramref name="index"/> itself when its group of 32 entries is stored, else the first index
    /// of the next group (512 past the last, and for an index already past it, that index). A walk of
    /// a sparse table skips the absent groups with it instead of reading their entries one by one;
    /// what it reads is what the indexer would.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int NextStored(int index) =>
        (uint)index >= PhysMemory.EntriesPerTable || _store.MayBeStored(Volatile.Read(ref _slot), index)
            ? index
            : (index | (TableStore.GroupEntries - 1)) + 1;

    /// <summary>The index of the first entry that is not none, or -1 when all 512 are; reads only the stored groups.</summary>
    public int FirstNotNone()
    {
        int i = 0;
        while (i < PhysMemory.EntriesPerTable)
        {
            int next = NextStored(i);
            if (next != i)
            {
                i = next;
                continue;
            }

            if (Volatile.Read(ref this[i]) != 0)
            {
                return i;
            }

            i++;
        }

        return -1;
    }

    /// <summary>A copy of the 512 entries.</summary>
    public ulong[] ToArray()
    {
        var a = new ulong[PhysMemory.EntriesPerTable];
        for (int i = 0; i < a.Length; i++)
        {
            a[i] = Volatile.Read(ref this[i]);
        }

        return a;
    }

    /// <summary>Enumerates the entries' values.</summary>
    public Enumerator GetEnumerator() => new(this);

    /// <summary>Enumerator over the entries' values.</summary>
    public ref struct Enumerator
    {
        private readonly TableEntries _entries;
        private int _index;

        internal Enumerator(TableEntries entries)
        {
            _entries = entries;
            _index = -1;
        }

        /// <summary>The current entry's value.</summary>
        public readonly ulong Current => Volatile.Read(ref _entries[_index]);

        /// <summary>Advances.</summary>
        public bool MoveNext() => ++_index < PhysMemory.EntriesPerTable;
    }
}
