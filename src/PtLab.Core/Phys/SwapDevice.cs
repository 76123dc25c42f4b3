using PtLab.Sync;

namespace PtLab.Phys;

/// <summary>
/// A swap device (<c>swap_info_struct</c>): slots of one page each, with a use count per slot
/// (<c>swap_map</c>), holding the content of pages written out by reclaim. Slot 0 is never used,
/// as in the kernel (it holds the swap header).
/// </summary>
public sealed class SwapDevice
{
    private readonly PhysMemory _phys;
    private readonly FrameArrays<byte> _bytes = new(PhysMemory.PageSize);
    private readonly FrameArrays<ulong> _tokens = new(1);
    private readonly FrameArrays<int> _count = new(1);
    private long[] _free = new long[64];
    private int _freeCount;
    private long _next = 1;
    private long _used;
    private int _lock;

    /// <summary>Creates a device of <paramref name="bytes"/> for the pages of <paramref name="phys"/>.</summary>
    public SwapDevice(PhysMemory phys, long bytes)
    {
        _phys = phys;
        Slots = bytes >> PhysMemory.PageShift;
    }

    /// <summary>Slots on the device.</summary>
    public long Slots { get; }

    /// <summary>Slots in use.</summary>
    public long UsedSlots => Volatile.Read(ref _used);

    /// <summary>Pages written out.</summary>
    public long PagesOut { get; private set; }

    /// <summary>Pages read back in.</summary>
    public long PagesIn { get; private set; }

    /// <summary><c>get_swap_page</c> + <c>swap_writepage</c>: a slot holding the page's content, or -1 when full.</summary>
    public long WriteOut(long pfn)
    {
        long slot;
        RawSpinLock.Lock(ref _lock);
        if (_freeCount > 0)
        {
            slot = _free[--_freeCount];
        }
        else if (_next < Slots)
        {
            slot = _next++;
        }
        else
        {
            RawSpinLock.Unlock(ref _lock);
            return -1;
        }

        _used++;
        PagesOut++;
        _count.Slot(slot) = 1;
        RawSpinLock.Unlock(ref _lock);
        Store(slot, pfn);
        return slot;
    }

    /// <summary>
    /// Whether a PMD-sized folio can get 512 slots of one free cluster (<c>folio_alloc_swap</c> of
    /// order 9): a block device's cluster allocator gives them, a swap file's does not.
    /// </summary>
    public bool LargeFolios { get; init; }

    /// <summary>The first slot of a free 512-slot cluster, aligned, that no slot was ever taken from.</summary>
    private long FreeClusterLocked()
    {
        long start = (_next + PhysMemory.HugeFrames - 1) & ~(long)(PhysMemory.HugeFrames - 1);
        return start + PhysMemory.HugeFrames <= Slots ? start : -1;
    }

    /// <summary>Whether <see cref="WriteOutFolio"/> would find a free cluster now.</summary>
    public bool HasFreeCluster
    {
        get
        {
            RawSpinLock.Lock(ref _lock);
            bool free = LargeFolios && FreeClusterLocked() >= 0;
            RawSpinLock.Unlock(ref _lock);
            return free;
        }
    }

    /// <summary>
    /// <c>folio_alloc_swap</c> of a PMD-sized folio + <c>swap_writepage</c>: 512 slots of one free
    /// cluster hold the pages of the folio at <paramref name="head"/>, each with one use (the swap
    /// cache's); returns the first, or -1 when the device takes no large folios or has no free
    /// cluster. The slots skipped to align it go on the free list.
    /// </summary>
    public long WriteOutFolio(long head)
    {
        RawSpinLock.Lock(ref _lock);
        long start = LargeFolios ? FreeClusterLocked() : -1;
        if (start < 0)
        {
            RawSpinLock.Unlock(ref _lock);
            return -1;
        }

        for (long s = _next; s < start; s++)
        {
            if (_freeCount == _free.Length)
            {
                Array.Resize(ref _free, _free.Length * 2);
            }

            _free[_freeCount++] = s;
        }

        _next = start + PhysMemory.HugeFrames;
        _used += PhysMemory.HugeFrames;
        PagesOut += PhysMemory.HugeFrames;
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            _count.Slot(start + i) = 1;
        }

        RawSpinLock.Unlock(ref _lock);
        for (int i = 0; i < PhysMemory.HugeFrames; i++)
        {
            Store(start + i, head + i);
        }

        return start;
    }

    /// <summary>The page's content into the slot.</summary>
    private void Store(long slot, long pfn)
    {
        if (_phys.Content.HoldsData)
        {
            _phys.Content.Read(pfn, 0, _bytes.Block(slot));
        }
        else
        {
            _tokens.Slot(slot) = _phys.Content.Token(pfn);
        }
    }

    /// <summary><c>swap_read_folio</c>: fills a fresh page with the slot's content.</summary>
    public void ReadIn(long slot, long pfn)
    {
        if (_phys.Content is TokenContentStore tokens)
        {
            tokens.Restore(pfn, _tokens.Slot(slot));
        }
        else
        {
            _phys.Content.Zero(pfn);
            _phys.Content.Write(pfn, 0, _bytes.Block(slot));
        }

        RawSpinLock.Lock(ref _lock);
        PagesIn++;
        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary><c>swap_duplicate</c>: one more swap entry refers to the slot (fork copies it, or reclaim unmaps another mapping of the page).</summary>
    public void Duplicate(long slot)
    {
        RawSpinLock.Lock(ref _lock);
        ref int c = ref _count.Slot(slot);
        if (c <= 0)
        {
            RawSpinLock.Unlock(ref _lock);
            throw new InvalidOperationException($"swap_duplicate of unused slot {slot}");
        }

        c++;
        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary><c>swap_free</c>: drops one use of the slot; the last frees it.</summary>
    public void Free(long slot)
    {
        RawSpinLock.Lock(ref _lock);
        ref int c = ref _count.Slot(slot);
        if (c <= 0)
        {
            RawSpinLock.Unlock(ref _lock);
            throw new BadSwapEntryException($"swap_free of unused slot {slot}");
        }

        if (--c == 0)
        {
            if (_freeCount == _free.Length)
            {
                Array.Resize(ref _free, _free.Length * 2);
            }

            _free[_freeCount++] = slot;
            _used--;
        }

        RawSpinLock.Unlock(ref _lock);
    }
}

/// <summary>
/// A swap entry that names no slot in use, or no device at all (the kernel's "Bad swap file entry"
/// and "Unused swap offset entry"). A bug in PtLab.
/// </summary>
/// <param name="message">The entry or slot, and what was wrong with it.</param>
public sealed class BadSwapEntryException(string message) : InvalidOperationException(message);
