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
/// arrays so that descriptors exist only for frames that were ever taken.
/// </summary>
public struct PageDescriptor
{
    /// <summary><see cref="PageFlags"/> bits.</summary>
    public int Flags;

    /// <summary><c>page_ref_count</c>.</summary>
    public int RefCount;

    /// <summary><c>page_mapcount</c>: how many PTEs map this page.</summary>
    public int MapCount;

    /// <summary>On the head of a transparent huge page: how many PMDs map the whole folio (<c>_entire_mapcount</c>).</summary>
    public int EntireMapCount;

    /// <summary>The split page-table lock word (<c>ptlock</c>) of a table page.</summary>
    public int PtLock;

    /// <summary>Bumped each time the frame is freed, so a stale reference can be recognised.</summary>
    public int Generation;

    /// <summary>Slot of a table page's entries in the table store; meaningful only while <see cref="PageFlags.Table"/> is set.</summary>
    public int TableSlot;

    /// <summary>Table level for table pages: 1 PTE, 2 PMD, 3 PUD, 4 PGD; 0 otherwise.</summary>
    public int Level;

    /// <summary>Which LRU list holds the page (<see cref="LruList"/>); <see cref="LruList.None"/> when off the LRU.</summary>
    public LruList Lru;

    /// <summary>Previous page on its LRU list (towards the head, the newest), or -1.</summary>
    public long LruPrev;

    /// <summary>Next page on its LRU list (towards the tail, the oldest), or -1.</summary>
    public long LruNext;

    /// <summary>Reverse map: the user address a private anonymous page is mapped at (<c>page->index</c>).</summary>
    public ulong RmapAddress;

    /// <summary>Reverse map: the address space that maps the page (<c>page->mapping</c>'s anon_vma owner).</summary>
    public object? RmapOwner;

    /// <summary>Per-table state owned by the reclaim design (the seed's <c>pte_ref</c>, the 2021 series' <c>pte_refcount</c>).</summary>
    public object? TableState;

    /// <summary>Whether a flag is set.</summary>
    public readonly bool Has(PageFlags f) => (Flags & (int)f) != 0;
}
