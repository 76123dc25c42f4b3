using PtLab.Sync;

namespace PtLab.Phys;

/// <summary>
/// The LRU lists of one node (<c>struct lruvec</c>): doubly linked through the pages' extension
/// words (<see cref="PageExt"/>), newest at the head, under one lock (<c>lruvec-&gt;lru_lock</c>).
/// A page on a list has PG_lru set in its descriptor. On a machine without swap the anonymous
/// list is counted but not linked, as the unevictable list is: reclaim scans it only with swap
/// (<c>can_reclaim_anon_pages</c>; swap is configured when the machine boots, never later), and
/// nothing else reads its order, so its pages need no extension words at all.
/// </summary>
internal sealed class LruLists
{
    private readonly PhysMemory _phys;
    private readonly long[] _head = [-1, -1, -1, -1];
    private readonly long[] _tail = [-1, -1, -1, -1];
    private readonly long[] _count = new long[4];
    private int _lock;
    private bool? _linkAnon; // whether the anonymous list is linked: the machine's swap, latched at the first add

    public LruLists(PhysMemory phys) => _phys = phys;

    public long Count(LruList list) => Volatile.Read(ref _count[(int)list]);

    /// <summary>Whether the lock is held right now (for a stuck CPU's report; stale as soon as read).</summary>
    internal bool LockedForReport => Volatile.Read(ref _lock) != 0;

    /// <summary><c>folio_add_lru</c>: adds at the head.</summary>
    public void Add(long pfn, LruList list)
    {
        RawSpinLock.Lock(ref _lock);
        _phys.Profile?.Locked(-1);
        AddLocked(pfn, list);
        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary>Moves a page to the head of <paramref name="list"/> if it is on an LRU (<c>lru_lazyfree_fn</c>, rotation).</summary>
    public void Move(long pfn, LruList list)
    {
        RawSpinLock.Lock(ref _lock);
        if (_phys.Desc(pfn).OnLru)
        {
            DelLocked(pfn);
            AddLocked(pfn, list);
        }

        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary>Takes pages off their LRU lists, where on one, under one lock (<c>folios_put_refs</c>).</summary>
    public void RemoveAll(ReadOnlySpan<long> pfns)
    {
        bool locked = false;
        foreach (long pfn in pfns)
        {
            // Only this freer can still see PG_lru set on a page whose last reference it dropped,
            // apart from isolation, which clears it under the lock: recheck once locked.
            ref var d = ref _phys.Desc(pfn);
            if (!d.OnLru)
            {
                continue;
            }

            if (!locked)
            {
                RawSpinLock.Lock(ref _lock);
                locked = true;
            }

            if (d.OnLru)
            {
                DelLocked(pfn, ref d, unreferenced: true);
            }
        }

        if (locked)
        {
            RawSpinLock.Unlock(ref _lock);
        }
    }

    /// <summary>
    /// <c>__mlock_folio</c>: a page just mlocked (PG_mlocked set by the caller) through one more
    /// <c>VM_LOCKED</c> mapping. On the unevictable list its count goes up; on an evictable list
    /// it moves there with a count of one; isolated (on no list), nothing more can be done.
    /// </summary>
    public void MlockFolio(long pfn)
    {
        RawSpinLock.Lock(ref _lock);
        ref var d = ref _phys.Desc(pfn);
        var on = _phys.LruOf(pfn);
        if (on == LruList.Unevictable)
        {
            if (d.Has(PageFlags.Mlocked))
            {
                _phys.Ext(pfn).MlockCount++;
            }
        }
        else if (on != LruList.None && d.Has(PageFlags.Mlocked))
        {
            DelLocked(pfn);
            AddLocked(pfn, LruList.Unevictable);
            _phys.Ext(pfn).MlockCount = 1;
        }

        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary>
    /// <c>__mlock_new_folio</c>: a new page mapped into a <c>VM_LOCKED</c> VMA goes straight to
    /// the unevictable list, counted once.
    /// </summary>
    public void AddNewMlocked(long pfn)
    {
        RawSpinLock.Lock(ref _lock);
        AddLocked(pfn, LruList.Unevictable);
        _phys.Ext(pfn).MlockCount = 1;
        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary>
    /// <c>__munlock_folio</c>: one <c>VM_LOCKED</c> mapping let go of the page. On the unevictable
    /// list its count goes down, and only the last clears PG_mlocked and moves it to
    /// <paramref name="evictable"/>; a count that isolation reset to 0 (<c>lru_add</c> errs low)
    /// takes the first munlock for the last. An isolated page just loses PG_mlocked.
    /// </summary>
    public void MunlockFolio(long pfn, LruList evictable)
    {
        RawSpinLock.Lock(ref _lock);
        ref var d = ref _phys.Desc(pfn);
        if (_phys.LruOf(pfn) == LruList.Unevictable)
        {
            ref var e = ref _phys.Ext(pfn);
            int count = e.MlockCount;
            if (count > 0)
            {
                e.MlockCount = --count;
            }

            if (count == 0)
            {
                d.ClearFlagsAtomic(PageFlags.Mlocked);
                DelLocked(pfn);
                AddLocked(pfn, evictable);
            }
        }
        else
        {
            d.ClearFlagsAtomic(PageFlags.Mlocked);
        }

        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary>
    /// <c>folio_isolate_lru</c>: takes one page off its LRU list with an extra reference held for
    /// the caller; false when it is on none (being freed, or isolated by someone else).
    /// </summary>
    public bool Isolate(long pfn)
    {
        RawSpinLock.Lock(ref _lock);
        bool taken = _phys.Desc(pfn).OnLru && _phys.TryGetPage(pfn);
        if (taken)
        {
            DelLocked(pfn);
        }

        RawSpinLock.Unlock(ref _lock);
        return taken;
    }

    /// <summary>
    /// <c>isolate_lru_folios</c>: takes up to <paramref name="into"/>.Length of the oldest pages
    /// off <paramref name="list"/>, each with an extra reference held for the caller.
    /// </summary>
    public int IsolateTail(LruList list, Span<long> into)
    {
        int n = 0;
        RawSpinLock.Lock(ref _lock);
        while (n < into.Length && _tail[(int)list] >= 0)
        {
            long pfn = _tail[(int)list];
            var on = _phys.LruOf(pfn);
            if (on != list)
            {
                // The tail says it is elsewhere (or nowhere): taking it off would not move the tail,
                // and this loop would spin for ever under the lock. A corrupt list is a bug: say so.
                RawSpinLock.Unlock(ref _lock);
                throw new BadPageException($"frame {pfn:x} is the tail of the {list} LRU list but is on {(on == LruList.None ? "no list (PG_lru clear)" : $"the {on} list")}: the list is corrupt");
            }

            DelLocked(pfn);
            // folio_try_get: a page whose last reference is being dropped is left to its freer.
            if (_phys.Desc(pfn).TryAddRef())
            {
                into[n++] = pfn;
            }
        }

        RawSpinLock.Unlock(ref _lock);
        return n;
    }

    /// <summary>Whether <paramref name="list"/> is linked through its pages (scanned from its tail).</summary>
    private bool Linked(LruList list) => list == LruList.File || (list == LruList.Anon && (_linkAnon ??= _phys.Swap is not null));

    private void AddLocked(long pfn, LruList list)
    {
        ref var d = ref _phys.Desc(pfn);
        if (d.Has(PageFlags.Mlocked))
        {
            list = LruList.Unevictable; // folio_evictable: an mlocked page goes back where reclaim never looks
        }

        int l = (int)list;
        _count[l]++;
        if (list == LruList.Anon && !Linked(list))
        {
            // Counted, not linked: PG_lru alone says where the page is (LruOf), no extension words.
            d.SetLru();
            return;
        }

        ref var e = ref _phys.Ext(pfn);
        e.Lru = list;
        e.LruPrev = -1;
        if (list == LruList.Unevictable)
        {
            // lruvec_add_folio links no unevictable folio; lru_add sets mlock_count to 0 (an
            // undercount that reclaim would fix), which the mlock paths then raise.
            e.LruNext = -1;
            e.MlockCount = 0;
            d.SetLru();
            return;
        }

        e.LruNext = _head[l];
        if (_head[l] >= 0)
        {
            _phys.Ext(_head[l]).LruPrev = pfn;
        }
        else
        {
            _tail[l] = pfn;
        }

        _head[l] = pfn;
        d.SetLru();
    }

    private void DelLocked(long pfn) => DelLocked(pfn, ref _phys.Desc(pfn), unreferenced: false);

    /// <summary>
    /// <c>lruvec_del_folio</c> of a page on a list, and its PG_lru cleared: atomically, or with a
    /// plain store for a page being freed (<paramref name="unreferenced"/>, see
    /// <see cref="PageDescriptor.ClearLruUnreferenced"/>).
    /// </summary>
    private void DelLocked(long pfn, ref PageDescriptor d, bool unreferenced)
    {
        var list = _phys.LruOf(pfn);
        int l = (int)list;
        _count[l]--;
        if (unreferenced)
        {
            d.ClearLruUnreferenced();
        }
        else
        {
            d.ClearLru();
        }

        if (!Linked(list))
        {
            if (list != LruList.Anon)
            {
                ref var u = ref _phys.Ext(pfn);
                u.Lru = LruList.None;
                u.LruPrev = u.LruNext = -1; // the mlock count too
            }

            return;
        }

        ref var e = ref _phys.Ext(pfn);
        if (e.LruPrev >= 0)
        {
            _phys.Ext(e.LruPrev).LruNext = e.LruNext;
        }
        else
        {
            _head[l] = e.LruNext;
        }

        if (e.LruNext >= 0)
        {
            _phys.Ext(e.LruNext).LruPrev = e.LruPrev;
        }
        else
        {
            _tail[l] = e.LruPrev;
        }

        e.Lru = LruList.None;
        e.LruPrev = e.LruNext = -1;
    }
}
