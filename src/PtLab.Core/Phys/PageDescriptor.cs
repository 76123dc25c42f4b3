using System.Runtime.InteropServices;

namespace PtLab.Phys;

/// <summary>Page flags, a subset of the kernel's <c>PG_*</c> bits plus PtLab's bookkeeping.</summary>
[Flags]
public enum PageFlags
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>An anonymous page (<c>PageAnon</c>).</summary>
    Anon = 1 << 0,
    /// <summary><c>PG_swapbacked</c>: cleared by MADV_FREE to mark a lazy-free page.</summary>
    SwapBacked = 1 << 1,
    /// <summary><c>PG_dirty</c>.</summary>
    Dirty = 1 << 2,
    /// <summary>On the LRU (<c>PG_lru</c>).</summary>
    Lru = 1 << 3,
    /// <summary>A page-table page (<c>PageTable</c>).</summary>
    Table = 1 << 4,
    /// <summary>Never freed (<c>PG_reserved</c>): the shared zero page.</summary>
    Reserved = 1 << 5,
    /// <summary>On the free list; contents poisoned.</summary>
    Free = 1 << 6,
    /// <summary>In the swap cache (<c>PG_swapcache</c>).</summary>
    SwapCache = 1 << 7,
    /// <summary><c>PG_mlocked</c>: mapped in a <c>VM_LOCKED</c> VMA; kept on the unevictable list, never reclaimed.</summary>
    Mlocked = 1 << 8,
    /// <summary>The first frame of a transparent huge page (<c>PG_head</c> of a PMD-order folio).</summary>
    Head = 1 << 9,
    /// <summary>Any other frame of a transparent huge page; its folio starts at the frame number rounded down to 512.</summary>
    Tail = 1 << 10,
    /// <summary>
    /// <c>PG_reclaim</c>, the bit <c>PG_readahead</c> shares: set on a dirty page-cache page that
    /// reclaim outside kswapd (MADV_PAGEOUT) left for writeback. Fault-around takes it for a
    /// read-ahead mark and skips the page; a fault on the page itself clears it.
    /// </summary>
    Reclaim = 1 << 11,
}

/// <summary>The LRU lists PtLab keeps (<c>enum lru_list</c>, without the active/inactive split).</summary>
public enum LruList
{
    /// <summary>Not on an LRU list.</summary>
    None = 0,
    /// <summary>Swap-backed anonymous pages (<c>LRU_INACTIVE_ANON</c>/<c>LRU_ACTIVE_ANON</c>).</summary>
    Anon = 1,
    /// <summary>Pages reclaim may drop without writing them anywhere: lazy-free anonymous pages (<c>LRU_INACTIVE_FILE</c>).</summary>
    File = 2,
    /// <summary>Mlocked pages, which reclaim never scans (<c>LRU_UNEVICTABLE</c>).</summary>
    Unevictable = 3,
}

/// <summary>
/// The model of <c>struct page</c> / <c>struct ptdesc</c>: one per 4 KiB frame, kept in segment
/// arrays so that descriptors exist only for frames that were ever taken. Packed into 16 bytes,
/// as the kernel packs <c>struct page</c> into 64 with unions: a user page and a table page use
/// the same words differently. What only some frames use (LRU links, a table's entry slot and
/// lock, a huge page's entire mapcount) lives in the frame's <see cref="PageExt"/>, made only for
/// frames that need it.
/// <code>
///  0  rmap word: page index (bits 0-34: address &gt;&gt; 12) | owner id (35-51) | flags (52-63, PG_lru among them)
///  8  refcount (bits 0-15) | mapcount (bits 16-31, signed)       table: level in the mapcount half
/// 12  page: content token when page data is off                  table: generation
/// </code>
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct PageDescriptor
{
    private const int IndexBits = 35;                 // 47-bit user addresses (TASK_SIZE): 47 - 12 = 35
    private const ulong IndexMask = (1UL << IndexBits) - 1;
    private const int OwnerShift = IndexBits;
    private const int OwnerBits = 17;
    private const ulong OwnerMask = (1UL << OwnerBits) - 1;
    private const int FlagsShift = OwnerShift + OwnerBits; // 52: twelve flag bits above
    private const ulong LruBit = (ulong)(uint)PageFlags.Lru << FlagsShift;
    private const int RefMask = 0xFFFF;
    private const int MapOne = 1 << 16;

    /// <summary>Owner ids that fit the rmap word: 2^17 - 1 (id 0 is "none").</summary>
    public const int MaxOwners = (1 << OwnerBits) - 1;

    /// <summary>Frames whose LRU links fit: 2^30 - 2 (4 TiB of simulated RAM).</summary>
    public const long MaxFrames = PageExt.MaxFrames;

    /// <summary>The most references a page can hold: 16 bits, as a pin past it is refused.</summary>
    public const int MaxRefCount = RefMask - 1;

    [FieldOffset(0)]
    private ulong _word;

    [FieldOffset(8)]
    private int _refMap;

    /// <summary>A user page's content token when page data is off; a table page's generation.</summary>
    [FieldOffset(12)]
    public uint Aux;

    /// <summary><see cref="PageFlags"/> bits.</summary>
    public int Flags
    {
        readonly get => (int)(Volatile.Read(in _word) >> FlagsShift);
        set
        {
            // Atomic, as other flags of a mapped page change with atomic bit operations. PG_lru is
            // kept as it is: only the LRU lists change it (SetLru, ClearLru), under their lock.
            ulong old, want;
            do
            {
                old = Volatile.Read(ref _word);
                want = (old & (((1UL << FlagsShift) - 1) | LruBit)) | (((ulong)(uint)value << FlagsShift) & ~LruBit);
            }
            while (Interlocked.CompareExchange(ref _word, want, old) != old);
        }
    }

    /// <summary>
    /// Reverse map: a user page's index (<c>page->index</c>: the linear page index of an anonymous
    /// page, the file offset in pages of a page-cache page), or a table's base address
    /// (<c>ptdesc->pt_index</c>). 35 bits: a table keeps its address in pages.
    /// </summary>
    public ulong RmapAddress
    {
        readonly get => (_word & IndexMask) << ((Flags & (int)PageFlags.Table) != 0 ? 12 : 0);
        set
        {
            ulong v = (Flags & (int)PageFlags.Table) != 0 ? value >> 12 : value;
            ulong old, want;
            do
            {
                old = Volatile.Read(ref _word);
                want = (old & ~IndexMask) | (v & IndexMask);
            }
            while (Interlocked.CompareExchange(ref _word, want, old) != old);
        }
    }

    /// <summary>Reverse map: the id of the owner that maps the page (see <see cref="PhysMemory.RmapOwner"/>); 0 for none.</summary>
    public int RmapOwnerId
    {
        readonly get => (int)((Volatile.Read(in _word) >> OwnerShift) & OwnerMask);
        set
        {
            ulong old, want;
            do
            {
                old = Volatile.Read(ref _word);
                want = (old & ~(OwnerMask << OwnerShift)) | (((ulong)value & OwnerMask) << OwnerShift);
            }
            while (Interlocked.CompareExchange(ref _word, want, old) != old);
        }
    }

    /// <summary><c>page_ref_count</c>.</summary>
    public readonly int RefCount => Volatile.Read(in _refMap) & RefMask;

    /// <summary><c>page_mapcount</c>: how many PTEs map this page.</summary>
    public readonly int MapCount => Volatile.Read(in _refMap) >> 16;

    /// <summary>Table level for table pages: 1 PTE, 2 PMD, 3 PUD, 4 PGD; 0 otherwise.</summary>
    public readonly int Level => (Flags & (int)PageFlags.Table) != 0 ? _refMap >> 16 : 0;

    /// <summary>
    /// <c>PG_lru</c>: the page is on an LRU list. Set and cleared by the LRU lists only, under
    /// their lock, with atomic bit operations on the rmap word (other flags of a mapped page change
    /// concurrently); read without the lock by whoever only needs a hint it rechecks under it.
    /// Which list: <see cref="PhysMemory.LruOf"/>.
    /// </summary>
    public readonly bool OnLru => (Volatile.Read(in _word) & LruBit) != 0;

    /// <summary>Sets <c>PG_lru</c> (<c>folio_set_lru</c>), under the LRU lock.</summary>
    internal void SetLru() => Interlocked.Or(ref _word, LruBit);

    /// <summary>Clears <c>PG_lru</c> (<c>folio_clear_lru</c>), under the LRU lock.</summary>
    internal void ClearLru() => Interlocked.And(ref _word, ~LruBit);

    /// <summary>
    /// <c>__folio_clear_lru_flags</c>: clears PG_lru with a plain store, under the LRU lock, on a
    /// page whose last reference is gone: nobody else may change its flags any more (the freer
    /// overwrites the whole word next), so no atomic operation is needed, as in the kernel.
    /// </summary>
    internal void ClearLruUnreferenced() => Volatile.Write(ref _word, Volatile.Read(ref _word) & ~LruBit);

    /// <summary>A table page's generation: unique per table allocation, so a stale reference is recognised.</summary>
    public readonly int Generation => (Flags & (int)PageFlags.Table) != 0 ? (int)Aux : 0;

    /// <summary>Sets flags atomically, as <c>folio_set_dirty</c> does; returns the flags before.</summary>
    public PageFlags SetFlagsAtomic(PageFlags f) => (PageFlags)(Interlocked.Or(ref _word, (ulong)(uint)f << FlagsShift) >> FlagsShift);

    /// <summary>Clears flags atomically; returns the flags before.</summary>
    public PageFlags ClearFlagsAtomic(PageFlags f) => (PageFlags)(Interlocked.And(ref _word, ~((ulong)(uint)f << FlagsShift)) >> FlagsShift);

    /// <summary>Whether a flag is set.</summary>
    public readonly bool Has(PageFlags f) => (Flags & (int)f) != 0;

    /// <summary>
    /// <c>folio_add_new_anon_rmap</c>'s descriptor update for a page nobody else can see yet: its
    /// flags, owner and address in one store, mapped once.
    /// </summary>
    public void InitAnonRmap(PageFlags flags, int ownerId, ulong index)
    {
        Volatile.Write(ref _word, (index & IndexMask) | (((ulong)ownerId & OwnerMask) << OwnerShift) | ((ulong)(uint)flags << FlagsShift));
        // Plain stores, as folio_add_new_anon_rmap's atomic_set: the allocation's one reference, mapped once.
        Volatile.Write(ref _refMap, 1 | MapOne);
    }

    /// <summary>Sets both counts at once (a page nobody else can see yet).</summary>
    public void SetCounts(int refCount, int mapCount) => Volatile.Write(ref _refMap, (refCount & RefMask) | (mapCount << 16));

    /// <summary>Sets the mapcount, keeping the refcount.</summary>
    public void SetMapCount(int mapCount)
    {
        int old, want;
        do
        {
            old = Volatile.Read(ref _refMap);
            want = (old & RefMask) | (mapCount << 16);
        }
        while (Interlocked.CompareExchange(ref _refMap, want, old) != old);
    }

    /// <summary>Atomically adds to the refcount; returns the new count, or -1 when it went below zero (a bug the caller reports).</summary>
    public int AddRef(int delta)
    {
        int v = Interlocked.Add(ref _refMap, delta);
        int r = v & RefMask;
        return delta < 0 && r == RefMask ? -1 : r;
    }

    /// <summary><c>folio_try_get</c>'s CAS: one more reference unless the count is zero (or saturated).</summary>
    public bool TryAddRef()
    {
        int old;
        do
        {
            old = Volatile.Read(ref _refMap);
            int r = old & RefMask;
            if (r <= 0 || r >= MaxRefCount)
            {
                return false;
            }
        }
        while (Interlocked.CompareExchange(ref _refMap, old + 1, old) != old);
        return true;
    }

    /// <summary>
    /// <c>folio_ref_freeze</c>: sets the refcount from <paramref name="expected"/> to 0, keeping
    /// the mapcount, so that speculative getters (<see cref="TryAddRef"/>) fail until the owner
    /// sets it again; false, nothing changed, when the count is not <paramref name="expected"/>.
    /// </summary>
    public bool TryFreezeRef(int expected)
    {
        int old = Volatile.Read(ref _refMap);
        return (old & RefMask) == expected && Interlocked.CompareExchange(ref _refMap, old & ~RefMask, old) == old;
    }

    /// <summary>Atomically adds to the mapcount; returns the new mapcount (negative on underflow).</summary>
    public int AddMap(int delta) => Interlocked.Add(ref _refMap, delta * MapOne) >> 16;

    /// <summary>Makes the frame a table of <paramref name="level"/> with a fresh generation (its <see cref="PageExt"/> holds its entry slot and lock).</summary>
    internal void InitTable(int level, uint generation)
    {
        Flags = (int)PageFlags.Table;
        Aux = generation;
        SetCounts(1, level);
    }

    /// <summary>
    /// Marks a frame whose last reference is gone free: the rmap word becomes <see cref="PageFlags.Free"/>
    /// alone (PG_lru clear) and both counts zero; the caller clears its <see cref="PageExt"/>. One plain store of the word, not a clear and then
    /// a compare-and-swap of the flags: as in the kernel's <c>free_pages_prepare</c>, which clears
    /// <c>page-&gt;flags</c> with a plain store, whoever dropped the last reference (the page off every
    /// LRU list) owns the descriptor, and nothing else writes the word until the frame is handed out
    /// again (a speculative <c>folio_try_get</c> touches only the counts, and fails on a count of zero).
    /// </summary>
    internal void ResetAsFree()
    {
        Volatile.Write(ref _word, (ulong)(uint)PageFlags.Free << FlagsShift);
        Volatile.Write(ref _refMap, 0);
    }

    /// <summary>Clears the rmap word (owner, index and flags, PG_lru included) of a frame just taken; the caller clears its <see cref="PageExt"/>.</summary>
    internal void ResetRmap() => _word = 0;
}
