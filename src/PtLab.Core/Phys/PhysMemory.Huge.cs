using PtLab.Sync;

namespace PtLab.Phys;

// PMD-order folios (transparent huge pages): 512 contiguous frames aligned to 512, so that one
// PMD entry can map them all.
public sealed partial class PhysMemory
{
    /// <summary><c>HPAGE_PMD_ORDER</c>.</summary>
    public const int HugeOrder = 9;

    /// <summary><c>HPAGE_PMD_NR</c>: frames in a transparent huge page.</summary>
    public const int HugeFrames = 1 << HugeOrder;

    private readonly Lock _hugeZeroLock = new();
    private long[] _hugeFree = new long[16]; // heads of free 512-frame blocks, under _freeLock
    private int _hugeFreeCount;
    private long _hugeZeroPfn = -1;
    private long _hugeAllocated;

    /// <summary>The huge zero page's first frame, or -1 before the first read fault that wanted it.</summary>
    public long HugeZeroPfn => Volatile.Read(ref _hugeZeroPfn);

    /// <summary>
    /// Frames that are never freed: the zero page, the huge zero page once it exists, and the
    /// kernel pages of special mappings once one was mapped.
    /// </summary>
    public long ReservedFrames => (HugeZeroPfn >= 0 ? 1 + HugeFrames : 1) + SpecialFrameCount;

    /// <summary>Transparent huge pages allocated so far (<c>thp_fault_alloc</c> and friends together).</summary>
    public long HugePagesAllocated => Volatile.Read(ref _hugeAllocated);

    /// <summary><c>compound_head</c>: the first frame of the folio holding <paramref name="pfn"/>.</summary>
    public long CompoundHead(long pfn) =>
        (Desc(pfn).Flags & (int)PageFlags.Tail) != 0 ? pfn & ~(long)(HugeFrames - 1) : pfn;

    /// <summary>
    /// <c>folio_entire_mapcount</c>'s word: how many PMDs map the whole folio headed by
    /// <paramref name="head"/>, kept on its first tail frame as the kernel keeps it, so the packed
    /// descriptor needs no field of its own.
    /// </summary>
    public ref int EntireMapCount(long head) => ref Ext(head + 1).FirstTailEntireMapCount;

    /// <summary>Whether <paramref name="pfn"/> belongs to a transparent huge page.</summary>
    public bool IsHugeFrame(long pfn) => (Desc(pfn).Flags & (int)(PageFlags.Head | PageFlags.Tail)) != 0;

    /// <summary>
    /// <c>vma_alloc_folio(GFP_TRANSHUGE, HPAGE_PMD_ORDER)</c>: a transparent huge page with one
    /// reference on its head, contents not cleared, or -1 when no aligned free block of 512 frames
    /// exists. With <paramref name="directReclaim"/> (the THP <c>defrag</c> setting allows it)
    /// reclaim runs first; the model has no compaction, so reclaim helps only when it frees a whole block.
    /// </summary>
    public long AllocHugeFolio(int cpu, bool directReclaim)
    {
        if (FaultInjection is { } injector && injector.ShouldFail(AllocSite.Page))
        {
            Interlocked.Increment(ref _allocFailures);
            return -1;
        }

        long head = TryTakeHuge();
        if (head < 0 && directReclaim && cpu >= 0 && Reclaim is { } reclaim)
        {
            for (int attempt = 0; attempt < 4 && head < 0; attempt++)
            {
                if (reclaim(cpu, HugeFrames) == 0)
                {
                    break;
                }

                head = TryTakeHuge();
            }
        }

        if (head < 0)
        {
            return -1;
        }

        Kswapd(cpu);
        for (int i = 0; i < HugeFrames; i++)
        {
            InitFrame(head + i, i == 0 ? PageFlags.Head : PageFlags.Tail, refCount: i == 0 ? 1 : 0);
        }

        Interlocked.Increment(ref _hugeAllocated);
        return head;
    }

    /// <summary>
    /// <c>__split_unmapped_folio</c> to order 0 of a huge page whose refcount the caller froze
    /// (<see cref="PageDescriptor.TryFreezeRef"/>), off every LRU list: every frame becomes a page
    /// of its own with the head's Anon, SwapBacked, Dirty and Mlocked flags, its reverse map and
    /// mapcount kept, and one reference per mapping plus one for the caller (dropped with
    /// <see cref="PutPage"/> once the caller is done: a frame nothing maps is then freed).
    /// </summary>
    public void SplitHugeFolioFrames(long head)
    {
        const PageFlags inherited = PageFlags.Anon | PageFlags.SwapBacked | PageFlags.Dirty | PageFlags.Mlocked;
        ref var h = ref Desc(head);
        var flags = (PageFlags)h.Flags & inherited;
        for (int i = HugeFrames - 1; i >= 0; i--)
        {
            ref var d = ref Desc(head + i);
            d.Flags = (int)flags;
            ClearExt(head + i); // the first tail's entire mapcount, 0 by now; no frame is on a list
            d.SetCounts(d.MapCount + 1, d.MapCount);
        }
    }

    /// <summary>Zeroes every frame of a transparent huge page (<c>folio_zero_user</c>).</summary>
    public void ZeroHugeFolio(long head)
    {
        for (int i = 0; i < HugeFrames; i++)
        {
            Content.Zero(head + i);
        }
    }

    /// <summary>
    /// <c>mm_get_huge_zero_folio</c>: the huge zero page, allocated at first use and never freed
    /// (the kernel's shrinker frees it once unused; the model keeps it), or -1 if no block is free.
    /// </summary>
    public long HugeZeroFolio()
    {
        long z = Volatile.Read(ref _hugeZeroPfn);
        if (z >= 0)
        {
            return z;
        }

        lock (_hugeZeroLock)
        {
            if (_hugeZeroPfn >= 0)
            {
                return _hugeZeroPfn;
            }

            long head = TryTakeHuge();
            if (head < 0)
            {
                return -1;
            }

            for (int i = 0; i < HugeFrames; i++)
            {
                InitFrame(head + i, PageFlags.Reserved | (i == 0 ? PageFlags.Head : PageFlags.Tail), refCount: 1);
                Content.Zero(head + i);
            }

            Volatile.Write(ref _hugeZeroPfn, head);
            return head;
        }
    }

    /// <summary>Takes a free aligned block of 512 frames: a freed one, else fresh frames above the high-water mark.</summary>
    private long TryTakeHuge()
    {
        RawSpinLock.Lock(ref _freeLock);
        Profile?.Locked(-1);
        long head;
        if (_hugeFreeCount > 0)
        {
            head = _hugeFree[--_hugeFreeCount];
        }
        else
        {
            long aligned = (_highWater + HugeFrames - 1) & ~(long)(HugeFrames - 1);
            if (aligned + HugeFrames > TotalFrames)
            {
                RawSpinLock.Unlock(ref _freeLock);
                return -1;
            }

            // The frames skipped to reach the alignment become ordinary free frames.
            int skipped = (int)(aligned - _highWater);
            while (_freeCount + skipped > _freeStack.Length)
            {
                Array.Resize(ref _freeStack, _freeStack.Length * 2);
            }

            for (long f = _highWater; f < aligned; f++)
            {
                _freeStack[_freeCount++] = (int)f;
            }

            _highWater = aligned + HugeFrames;
            head = aligned;
        }

        _used += HugeFrames;
        RawSpinLock.Unlock(ref _freeLock);
        return head;
    }

    /// <summary>Frees a transparent huge page whose last reference went: all 512 frames, back as one block.</summary>
    private void FreeHugeFolio(long head)
    {
        Lru.RemoveAll([head]);
        for (int i = 0; i < HugeFrames; i++)
        {
            PoisonFreed(head + i);
        }

        RawSpinLock.Lock(ref _freeLock);
        Profile?.Locked(-1);
        if (_hugeFreeCount == _hugeFree.Length)
        {
            Array.Resize(ref _hugeFree, _hugeFree.Length * 2);
        }

        _hugeFree[_hugeFreeCount++] = head;
        _used -= HugeFrames;
        RawSpinLock.Unlock(ref _freeLock);
    }

    /// <summary>
    /// With no single free frame left, splits a free huge block into single free frames and
    /// returns one of them (the buddy allocator's split of a high-order block). Caller holds the free-list lock.
    /// </summary>
    private long BreakFreeHugeBlockLocked()
    {
        if (_hugeFreeCount == 0)
        {
            return -1;
        }

        long head = _hugeFree[--_hugeFreeCount];
        while (_freeCount + HugeFrames > _freeStack.Length)
        {
            Array.Resize(ref _freeStack, _freeStack.Length * 2);
        }

        for (long f = head + 1; f < head + HugeFrames; f++)
        {
            _freeStack[_freeCount++] = (int)f;
        }

        return head;
    }
}
