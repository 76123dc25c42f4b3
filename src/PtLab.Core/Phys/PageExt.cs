using System.Diagnostics.CodeAnalysis;

namespace PtLab.Phys;

/// <summary>
/// The words of a frame that only some frames use, kept beside its <see cref="PageDescriptor"/>
/// (as the kernel's <c>page_ext</c> keeps per-page data outside <c>struct page</c>) in storage
/// made only for the frames that need it, 64 frames at a time (<see cref="PhysMemory.Ext"/>):
/// a page on a linked LRU list, a page on the unevictable list, a table page, the first tail
/// frame of a transparent huge page. An anonymous page of a machine without swap uses none: its
/// LRU list is not linked (<see cref="LruLists"/>). All zero is "nothing": links -1, list none,
/// no mlock count, no stored entry, lock free, no entire mapcount.
/// <code>
/// 0  page: LRU prev + 1; unevictable: mlock_count   table: slot of its entries (0: none stored)
///    first tail frame of a huge page: the folio's entire mapcount
/// 4  page: LRU next + 1, list                        table: split lock word (ptlock)
/// </code>
/// A frame's words are written only by whoever owns them: the LRU lists under their lock, the
/// table's allocator and freer, the huge page's rmap; <see cref="PhysMemory.FreeFrame"/> clears
/// them with the descriptor.
/// </summary>
public struct PageExt
{
    private const int LinkBits = 30;
    private const int LinkMask = (1 << LinkBits) - 1;

    private int _lruPrev;
    private int _lruNext;

    /// <summary>A table page's slot in the table store, 0 while it has no stored entry (<see cref="PageFlags.Table"/> only).</summary>
    [UnscopedRef]
    public ref int TableSlot => ref _lruPrev;

    /// <summary>The split page-table lock word (<c>ptlock</c>) of a table page.</summary>
    [UnscopedRef]
    public ref int PtLock => ref _lruNext;

    /// <summary>
    /// On the first tail frame of a transparent huge page: how many PMDs map the whole folio
    /// (<c>_entire_mapcount</c>, which the kernel too keeps in the folio's second page). Tail
    /// frames are never on an LRU list, so the word is free; read it through
    /// <see cref="PhysMemory.EntireMapCount"/>.
    /// </summary>
    [UnscopedRef]
    internal ref int FirstTailEntireMapCount => ref _lruPrev;

    /// <summary>
    /// Which linked or unevictable LRU list holds the page; <see cref="LruList.None"/> off them
    /// and on an unlinked anonymous list (read the page's list with <see cref="PhysMemory.LruOf"/>).
    /// </summary>
    public LruList Lru
    {
        readonly get => (LruList)((uint)_lruNext >> LinkBits);
        set => _lruNext = (_lruNext & LinkMask) | ((int)value << LinkBits);
    }

    /// <summary>Previous page on its LRU list (towards the head, the newest), or -1.</summary>
    public long LruPrev
    {
        readonly get => _lruPrev - 1;
        set => _lruPrev = (int)(value + 1);
    }

    /// <summary>Next page on its LRU list (towards the tail, the oldest), or -1.</summary>
    public long LruNext
    {
        readonly get => (_lruNext & LinkMask) - 1;
        set => _lruNext = (_lruNext & ~LinkMask) | (int)(value + 1);
    }

    /// <summary>
    /// <c>folio->mlock_count</c>: how many <c>VM_LOCKED</c> mappings have mlocked the page, kept
    /// while it is on the unevictable list, which, as in the kernel, links nothing: the word of
    /// its LRU links holds the count. 0 off that list.
    /// </summary>
    internal int MlockCount
    {
        readonly get => Lru == LruList.Unevictable ? _lruPrev : 0;
        set => _lruPrev = value;
    }

    /// <summary>Frames whose LRU links fit: 2^30 - 2 (4 TiB of simulated RAM).</summary>
    internal const long MaxFrames = LinkMask - 1;
}
