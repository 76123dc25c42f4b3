using PtLab.Sync;

namespace PtLab.Phys;

/// <summary>
/// Physical memory: 4 KiB frames with page descriptors, a free list and a RAM limit. Frames are
/// handed out lazily (a high-water mark plus a LIFO free list), so host memory grows only with the
/// frames in use. Frame 0 is the shared zero page.
/// </summary>
public sealed partial class PhysMemory
{
    /// <summary><c>PAGE_SHIFT</c>.</summary>
    public const int PageShift = 12;

    /// <summary><c>PAGE_SIZE</c>.</summary>
    public const int PageSize = 1 << PageShift;

    /// <summary>Entries per table page: 4096 / 8 = 512.</summary>
    public const int EntriesPerTable = PageSize / sizeof(ulong);

    /// <summary>Written over every entry of a freed table page, so a stale walker reads garbage it can recognise.</summary>
    public const ulong TablePoison = 0xDEAD_4EAD_DEAD_4EADUL;

    private readonly FrameArrays<PageDescriptor> _descriptors = new(1);
    private readonly TableStore _tables = new();
    private int _freeLock;
    private long[] _freeStack = new long[1024];
    private int _freeCount;
    private long _highWater;
    private long _used;
    private long _tablesInUse;
    private long _allocFailures;

    /// <summary>Creates physical memory of <paramref name="ramBytes"/> bytes.</summary>
    public PhysMemory(long ramBytes, bool pageData = true)
    {
        if (ramBytes < 16L * PageSize)
        {
            throw new ArgumentOutOfRangeException(nameof(ramBytes), ramBytes, "RAM must be at least 64 KiB");
        }

        TotalFrames = ramBytes >> PageShift;
        Lru = new LruLists(this);
        // init_per_zone_wmark_min / __setup_per_zone_wmarks: min = sqrt(16 * lowmem kB) clamped to
        // [128 kB, 256 MiB]; low and high add max(min / 4, 0.1% of memory) once and twice.
        long kb = ramBytes >> 10;
        long minKb = Math.Clamp((long)Math.Sqrt(kb * 16.0), 128, 262144);
        long stepKb = Math.Max(minKb / 4, kb * 10 / 10000);
        MinWatermark = minKb >> 2;
        LowWatermark = (minKb + stepKb) >> 2;
        HighWatermark = (minKb + (2 * stepKb)) >> 2;
        Content = pageData ? new ByteContentStore() : new TokenContentStore();
        ZeroPfn = 0;
        _highWater = 1;
        _used = 1;
        ref var zero = ref Desc(ZeroPfn);
        zero.Flags = (int)PageFlags.Reserved;
        zero.RefCount = 1;
    }

    /// <summary>Frames of RAM.</summary>
    public long TotalFrames { get; }

    /// <summary>Frames in use (the zero page included).</summary>
    public long UsedFrames => Volatile.Read(ref _used);

    /// <summary>Frames not in use.</summary>
    public long FreeFrames => TotalFrames - UsedFrames;

    /// <summary>Frames currently used as page tables.</summary>
    public long TableFrames => Volatile.Read(ref _tablesInUse);

    /// <summary>Allocations that failed because RAM was exhausted.</summary>
    public long AllocationFailures => Volatile.Read(ref _allocFailures);

    /// <summary>The shared zero page (<c>ZERO_PAGE(0)</c>).</summary>
    public long ZeroPfn { get; }

    /// <summary>Where user-page contents live.</summary>
    public IPageContentStore Content { get; }

    /// <summary>Host memory held by descriptors, tables and contents.</summary>
    public long HostBytes => _descriptors.HostBytes + _tables.HostBytes + Content.HostBytes;

    /// <summary>The descriptor of a frame (<c>pfn_to_page</c>).</summary>
    public ref PageDescriptor Desc(long pfn) => ref _descriptors.Slot(pfn);

    /// <summary>The swap device, or null when none is configured.</summary>
    public SwapDevice? Swap { get; set; }

    /// <summary>The LRU lists.</summary>
    internal LruLists Lru { get; }

    /// <summary>Frames of the min watermark (<c>WMARK_MIN</c>).</summary>
    public long MinWatermark { get; }

    /// <summary>Frames of the low watermark: below it, kswapd is woken (<c>WMARK_LOW</c>).</summary>
    public long LowWatermark { get; }

    /// <summary>Frames of the high watermark: kswapd reclaims up to it (<c>WMARK_HIGH</c>).</summary>
    public long HighWatermark { get; }

    /// <summary>Pages on the anonymous (swap-backed) LRU list.</summary>
    public long LruAnonPages => Lru.Count(LruList.Anon);

    /// <summary>Pages on the file LRU list (here: lazy-free pages awaiting reclaim).</summary>
    public long LruFilePages => Lru.Count(LruList.File);

    /// <summary>Mlocked pages, on the unevictable list (<c>Unevictable</c> in /proc/meminfo).</summary>
    public long LruUnevictablePages => Lru.Count(LruList.Unevictable);

    /// <summary>
    /// Page reclaim: asked for a number of frames, returns how many it freed. Called by the
    /// allocation that crosses the low watermark (the work kswapd would do, done synchronously
    /// here) and by an allocation that found no free frame (direct reclaim).
    /// </summary>
    public Func<int, long, long>? Reclaim { get; set; }

    private int _kswapd;

    /// <summary>
    /// Takes a free frame (<c>alloc_page</c>) with refcount 1, or returns -1 when RAM is exhausted
    /// and reclaim could not help. The frame's data is not cleared. Reclaim runs on
    /// <paramref name="cpu"/> (none when -1).
    /// </summary>
    public long AllocFrame(int cpu = -1) => AllocFrame(cpu, AllocSite.Page);

    /// <summary>Allocation injection, or null (<c>CONFIG_FAULT_INJECTION</c>).</summary>
    public FaultInjector? FaultInjection { get; set; }

    private long AllocFrame(int cpu, AllocSite site)
    {
        if (FaultInjection is { } injector && injector.ShouldFail(site))
        {
            Interlocked.Increment(ref _allocFailures);
            return -1;
        }

        long pfn = TryTake();
        if (Reclaim is { } reclaim)
        {
            if (pfn < 0)
            {
                // Direct reclaim, outside the free-list lock; a few rounds, as the kernel retries.
                for (int attempt = 0; attempt < 4 && pfn < 0; attempt++)
                {
                    if (cpu < 0 || reclaim(cpu, 32) == 0)
                    {
                        break;
                    }

                    pfn = TryTake();
                }
            }
            else
            {
                Kswapd(cpu);
            }
        }

        if (pfn < 0)
        {
            Interlocked.Increment(ref _allocFailures);
            return -1;
        }

        InitFrame(ref Desc(pfn), PageFlags.None, refCount: 1);
        return pfn;
    }

    /// <summary>A taken frame's descriptor as a fresh page: no mapping, no table, off the LRU.</summary>
    private static void InitFrame(ref PageDescriptor d, PageFlags flags, int refCount)
    {
        d.Flags = (int)flags;
        d.RefCount = refCount;
        d.MapCount = 0;
        d.EntireMapCount = 0;
        d.PtLock = 0;
        d.Level = 0;
        d.RmapAddress = 0;
        d.RmapOwner = null;
        d.TableState = null;
        d.Lru = LruList.None;
        d.LruPrev = d.LruNext = -1;
    }

    /// <summary>
    /// The work kswapd would do once an allocation left fewer free frames than the low watermark:
    /// reclaim up to the high watermark, done synchronously on <paramref name="cpu"/>.
    /// </summary>
    private void Kswapd(int cpu)
    {
        if (Reclaim is not { } reclaim || cpu < 0 || FreeFrames >= LowWatermark || Interlocked.CompareExchange(ref _kswapd, 1, 0) != 0)
        {
            return;
        }

        try
        {
            long want = HighWatermark - FreeFrames;
            while (want > 0)
            {
                long got = reclaim(cpu, Math.Min(want, 1024));
                if (got == 0)
                {
                    break;
                }

                want -= got;
            }
        }
        finally
        {
            Volatile.Write(ref _kswapd, 0);
        }
    }

    /// <summary>Allocates a zero-filled page for user data (<c>alloc_zeroed_user_highpage</c>).</summary>
    public long AllocZeroedPage(int cpu = -1)
    {
        long pfn = AllocFrame(cpu);
        if (pfn >= 0)
        {
            Content.Zero(pfn);
        }

        return pfn;
    }

    /// <summary>Allocates a zeroed page-table page of the given level (<c>pte_alloc_one</c> and friends); <paramref name="cpu"/> runs reclaim if needed.</summary>
    public long AllocTable(int level, int cpu = -1)
    {
        // The PGD comes with the address space (mm_alloc), not from a fault: never injected.
        long pfn = AllocFrame(cpu, level == 4 ? AllocSite.None : AllocSite.Table);
        if (pfn < 0)
        {
            return -1;
        }

        ref var d = ref Desc(pfn);
        d.TableSlot = _tables.Take();
        d.Flags = (int)PageFlags.Table;
        d.Level = level;
        Interlocked.Increment(ref _tablesInUse);
        return pfn;
    }

    /// <summary>The 512 entries of a table page. Throws if the frame is not a live table.</summary>
    public Span<ulong> Table(long pfn)
    {
        ref var d = ref Desc(pfn);
        if ((d.Flags & (int)PageFlags.Table) == 0)
        {
            ThrowNotTable(pfn);
        }

        return _tables.Entries(d.TableSlot);
    }

    private void ThrowNotTable(long pfn) =>
        throw new UseAfterFreeException($"frame {pfn:x} is not a page table (generation {Desc(pfn).Generation})", Environment.StackTrace, FreeStackOf(pfn));

    /// <summary>A reference to the live table in frame <paramref name="pfn"/>, stamped with its generation.</summary>
    public TableRef Ref(long pfn) => new(pfn, Desc(pfn).Generation);

    /// <summary>
    /// The entries of a mapped table, after checking that it is still the table that was mapped;
    /// a freed or reused frame throws <see cref="UseAfterFreeException"/> with both stacks.
    /// </summary>
    public Span<ulong> Table(TableRef table)
    {
        ref var d = ref Desc(table.Pfn);
        if ((d.Flags & (int)PageFlags.Table) == 0 || d.Generation != table.Generation)
        {
            ThrowStale(table);
        }

        return _tables.Entries(d.TableSlot);
    }

    /// <summary>Whether a mapped table is still the same live table (no exception).</summary>
    public bool IsLive(TableRef table)
    {
        ref var d = ref Desc(table.Pfn);
        return (d.Flags & (int)PageFlags.Table) != 0 && d.Generation == table.Generation;
    }

    private void ThrowStale(TableRef table) =>
        throw new UseAfterFreeException(
            $"use after free: {table} was freed (frame now generation {Desc(table.Pfn).Generation}, flags {(PageFlags)Desc(table.Pfn).Flags})",
            Environment.StackTrace,
            FreeStackOf(table.Pfn));

    /// <summary>Record the stack of every table free, for use-after-free reports (slow; tests turn it on).</summary>
    public bool RecordFreeStacks { get; set; }

    private readonly Dictionary<long, string> _freeStacks = [];

    private string? FreeStackOf(long pfn)
    {
        lock (_freeStacks)
        {
            return _freeStacks.GetValueOrDefault(pfn);
        }
    }

    /// <summary>Frees a table page: poisons its entries and bumps its generation (<c>pte_free</c>).</summary>
    public void FreeTable(long pfn)
    {
        ref var d = ref Desc(pfn);
        if (!d.Has(PageFlags.Table))
        {
            throw new BadPageException($"freeing frame {pfn:x} as a table, but it is not one");
        }

        if (RecordFreeStacks)
        {
            lock (_freeStacks)
            {
                _freeStacks[pfn] = Environment.StackTrace;
            }
        }

        d.Flags &= ~(int)PageFlags.Table;
        _tables.Release(d.TableSlot, TablePoison);
        Interlocked.Decrement(ref _tablesInUse);
        FreeFrame(pfn);
    }

    /// <summary>Returns a frame to the free list (<c>__free_page</c>).</summary>
    public void FreeFrame(long pfn)
    {
        ref var d = ref Desc(pfn);
        if (d.Has(PageFlags.Reserved))
        {
            throw new BadPageException($"freeing reserved frame {pfn:x}");
        }

        Lru.RemoveAll([pfn]);
        PoisonFreed(ref d, pfn);
        PushFree([pfn]);
    }

    private static void PoisonFreed(ref PageDescriptor d, long pfn)
    {
        if ((d.Flags & (int)PageFlags.Free) != 0)
        {
            throw new BadPageException($"double free of frame {pfn:x}");
        }

        d.Flags = (int)PageFlags.Free;
        d.RefCount = 0;
        d.MapCount = 0;
        d.RmapOwner = null;
        d.TableState = null;
        d.Generation++;
    }

    /// <summary>Frees pages whose last reference is gone: off the LRU under one lock, then onto the free list.</summary>
    private void FreeBatch(ReadOnlySpan<long> pfns)
    {
        Lru.RemoveAll(pfns);
        foreach (long pfn in pfns)
        {
            PoisonFreed(ref Desc(pfn), pfn);
        }

        PushFree(pfns);
    }

    private void PushFree(ReadOnlySpan<long> pfns)
    {
        if (pfns.IsEmpty)
        {
            return;
        }

        RawSpinLock.Lock(ref _freeLock);
        while (_freeCount + pfns.Length > _freeStack.Length)
        {
            Array.Resize(ref _freeStack, _freeStack.Length * 2);
        }

        pfns.CopyTo(_freeStack.AsSpan(_freeCount));
        _freeCount += pfns.Length;
        _used -= pfns.Length;
        RawSpinLock.Unlock(ref _freeLock);
    }

    /// <summary>Drops a reference; frees the frame at zero (<c>put_page</c>). Returns true if freed.</summary>
    public bool PutPage(long pfn)
    {
        pfn = CompoundHead(pfn);
        ref var d = ref Desc(pfn);
        if (d.Has(PageFlags.Reserved))
        {
            return false;
        }

        int r = Interlocked.Decrement(ref d.RefCount);
        if (r < 0)
        {
            throw new BadPageException($"page refcount underflow on frame {pfn:x}");
        }

        if (r == 0)
        {
            if (d.Has(PageFlags.Head))
            {
                FreeHugeFolio(pfn);
            }
            else
            {
                FreeFrame(pfn);
            }

            return true;
        }

        return false;
    }

    /// <summary>
    /// Drops one reference on each page and frees those that reach zero with one free-list lock
    /// (<c>release_pages</c>). Returns how many were freed.
    /// </summary>
    public int PutPages(ReadOnlySpan<long> pfns)
    {
        Span<long> batch = stackalloc long[64];
        int n = 0, freed = 0;
        foreach (long page in pfns)
        {
            long pfn = CompoundHead(page);
            ref var d = ref Desc(pfn);
            if (d.Has(PageFlags.Reserved))
            {
                continue;
            }

            int r = Interlocked.Decrement(ref d.RefCount);
            if (r < 0)
            {
                throw new BadPageException($"page refcount underflow on frame {pfn:x}");
            }

            if (r > 0)
            {
                continue;
            }

            if (d.Has(PageFlags.Head))
            {
                FreeHugeFolio(pfn); // a transparent huge page goes back whole
                freed += HugeFrames;
                continue;
            }

            batch[n++] = pfn;
            if (n == batch.Length)
            {
                FreeBatch(batch);
                freed += n;
                n = 0;
            }
        }

        FreeBatch(batch[..n]);
        return freed + n;
    }

    /// <summary>
    /// <c>folio_try_get</c>: takes a reference unless the page is already on its way to the free list
    /// (count zero). Always succeeds for reserved pages.
    /// </summary>
    public bool TryGetPage(long pfn)
    {
        ref var d = ref Desc(CompoundHead(pfn));
        if (d.Has(PageFlags.Reserved))
        {
            return true;
        }

        int r;
        do
        {
            r = Volatile.Read(ref d.RefCount);
            if (r <= 0)
            {
                return false;
            }
        }
        while (Interlocked.CompareExchange(ref d.RefCount, r + 1, r) != r);
        return true;
    }

    /// <summary>Takes a reference (<c>get_page</c>).</summary>
    public void GetPage(long pfn)
    {
        ref var d = ref Desc(CompoundHead(pfn));
        if (!d.Has(PageFlags.Reserved))
        {
            Interlocked.Increment(ref d.RefCount);
        }
    }

    private long TryTake()
    {
        RawSpinLock.Lock(ref _freeLock);
        long pfn;
        if (_freeCount > 0)
        {
            pfn = _freeStack[--_freeCount];
        }
        else if (_highWater < TotalFrames)
        {
            pfn = _highWater++;
        }
        else if (BreakFreeHugeBlockLocked() is var block and >= 0)
        {
            pfn = block;
        }
        else
        {
            RawSpinLock.Unlock(ref _freeLock);
            return -1;
        }

        _used++;
        RawSpinLock.Unlock(ref _freeLock);
        return pfn;
    }
}

/// <summary>
/// A frame in a state the kernel reports with <c>bad_page()</c> or a <c>BUG</c>: a double free, a
/// free of a reserved or non-table frame as a table, a page refcount or mapcount below zero, a
/// table count below zero. A bug in PtLab.
/// </summary>
/// <param name="message">What was wrong, naming the frame.</param>
public sealed class BadPageException(string message) : InvalidOperationException(message);
