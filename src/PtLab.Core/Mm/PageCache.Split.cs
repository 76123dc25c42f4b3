using PtLab.Phys;

namespace PtLab.Mm;

// mm/huge_memory.c: split_folio() of a PMD-sized page-cache folio, as MADV_COLD and MADV_PAGEOUT
// do to one they cover only in part.
public sealed partial class SimFile
{
    /// <summary>
    /// <c>split_folio</c> of the PMD-sized folio headed by <paramref name="head"/>, once nothing maps
    /// it: it becomes 512 order-0 pages in the cache, each holding the cache's reference, each on
    /// the file LRU list (<c>lru_add_split_folio</c>), dirty where the folio was. The caller holds
    /// a reference of its own (<c>folio_get</c>), which the split consumes; false, nothing split,
    /// when the folio is no longer this file's whole, something maps a page of it, or another
    /// reference holds it (<c>can_split_folio</c>).
    /// </summary>
    internal bool SplitLargeFolio(long head)
    {
        lock (_lock)
        {
            ref var d = ref _phys.Desc(head);
            ulong first = d.RmapAddress;
            if (d.RmapOwnerId != _ownerId || !_largeFolios.TryGetValue(first, out long cached) || cached != head
                || Volatile.Read(ref _phys.EntireMapCount(head)) != 0)
            {
                return false;
            }

            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                if (_phys.Desc(head + i).MapCount != 0)
                {
                    return false;
                }
            }

            if (!_phys.Lru.Isolate(head))
            {
                return false; // someone else works on it (folio_trylock would fail)
            }

            // The cache's 512 references, the caller's and the isolation's, and nothing else.
            if (!d.TryFreezeRef(PhysMemory.HugeFrames + 2))
            {
                _phys.Lru.Add(head, LruList.File); // folio_putback_lru
                _phys.PutPage(head);
                return false;
            }

            _phys.SplitHugeFolioFrames(head); // each page: the cache's reference
            _largeFolios.Remove(first);
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                _phys.Lru.Add(head + i, LruList.File);
            }
        }

        return true;
    }
}
