using System.Runtime.CompilerServices;
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
    private readonly FrameArrays<PageExt> _pageExt = new(1, segmentShift: 6); // 64 frames a segment: 512 bytes
    private readonly TableStore _tables = new();
    private int _freeLock;
    private int[] _freeStack = new int[1024]; // frame numbers fit in 30 bits (PageDescriptor.MaxFrames)
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
        if (TotalFrames > PageDescriptor.MaxFrames)
        {
            throw new ArgumentOutOfRangeException(nameof(ramBytes), ramBytes, $"RAM above {PageDescriptor.MaxFrames >> 18} GiB is not modelled");
        }

        Lru = new LruLists(this);
        // init_per_zone_wmark_min / __setup_per_zone_wmarks: min = sqrt(16 * lowmem kB) clamped to
        // [128 kB, 256 MiB]; low and high add max(min / 4, 0.1% of memory) once and twice.
        long kb = ramBytes >> 10;
        long minKb = Math.Clamp((long)Math.Sqrt(kb * 16.0), 128, 262144);
        long stepKb = Math.Max(minKb / 4, kb * 10 / 10000);
        MinWatermark = minKb >> 2;
        LowWatermark = (minKb + stepKb) >> 2;
        HighWatermark = (minKb + (2 * stepKb)) >> 2;
        Bytes = pageData ? new ByteContentStore() : null;
        Content = Bytes ?? (IPageContentStore)new TokenContentStore(this);
        ZeroPfn = 0;
        _highWater = 1;
        _used = 1;
        ref var zero = ref Desc(ZeroPfn);
        zero.Flags = (int)PageFlags.Reserved;
        zero.SetCounts(1, 0);
    }

    /// <summary>Frames of RAM.</summary>
    public long TotalFrames { get; }

    /// <summary>Frames in use (the zero page included); frames waiting on the per-CPU lists are free.</summary>
    public long UsedFrames => Volatile.Read(ref _used) - PerCpuListFrames;

    /// <summary>Free frames held on the CPUs' page lists (<c>pcp->count</c> summed).</summary>
    public long PerCpuListFrames
    {
        get
        {
            long n = 0;
            foreach (var l in _pcp)
            {
                n += Volatile.Read(ref l.Count);
            }

            return n;
        }
    }

    // The per-CPU page lists (struct per_cpu_pages): a CPU allocates from its own list under its
    // own lock, a line no other CPU writes, and refills it from the free list a batch at a time,
    // so the free-list lock is taken once per batch rather than once per page.
    private PerCpuPages[] _pcp = [];

    /// <summary>Direct-reclaim rounds without progress before an allocation fails (<c>MAX_RECLAIM_RETRIES</c>).</summary>
    public const int MaxReclaimRetries = 16;

    /// <summary>Frames a per-CPU list takes from the free list at once (<c>pcp->batch</c>).</summary>
    public const int PerCpuBatch = 31;

    // Whether each CPU's list is biased to its CPU (see OwnerBias): on a machine of one CPU
    // without hooks, where nearly every taking of a list is its own CPU's allocation.
    private bool _pcpBiased;

    /// <summary>
    /// Gives each of <paramref name="cpus"/> CPUs a page list of its own; with
    /// <paramref name="ownerBiased"/> a CPU takes from its own list without an atomic (see
    /// <see cref="OwnerBias"/>), for a machine of one CPU whose allocations on a CPU all run on
    /// the thread driving it.
    /// </summary>
    public void EnablePerCpuLists(int cpus, bool ownerBiased = false)
    {
        _pcpBiased = ownerBiased;
        var pcp = new PerCpuPages[cpus];
        for (int i = 0; i < cpus; i++)
        {
            pcp[i] = new PerCpuPages();
        }

        _pcp = pcp;
    }

    private sealed class PerCpuPages
    {
        // Lock word and count on the line before the frames; the frames array is its own object.
        public int Lock;
        public int Count;
        public OwnerBias Bias;
        public readonly long[] Frames = new long[PerCpuBatch];
    }

    // A frame from CPU cpu's list, refilled from the free list when empty; -1 when both are empty.
    private long TakePerCpu(int cpu)
    {
        var l = _pcp[cpu];
        if (!_pcpBiased || !l.Bias.TryOwnerEnter())
        {
            RawSpinLock.Lock(ref l.Lock);
        }

        Profile?.Count(cpu, ProfileOp.PercpuOp);
        if (l.Count == 0)
        {
            RawSpinLock.Lock(ref _freeLock);
            Profile?.Locked(cpu);
            while (l.Count < PerCpuBatch)
            {
                long f;
                if (_freeCount > 0)
                {
                    f = _freeStack[--_freeCount];
                }
                else if (_highWater < TotalFrames)
                {
                    f = _highWater++;
                }
                else if (BreakFreeHugeBlockLocked() is var block and >= 0)
                {
                    f = block; // the rest of the block went to the free list: the next rounds take it
                }
                else
                {
                    break;
                }

                l.Frames[l.Count++] = f;
                _used++;
            }

            RawSpinLock.Unlock(ref _freeLock);
        }

        long pfn = l.Count > 0 ? l.Frames[--l.Count] : -1;
        if (_pcpBiased && l.Bias.OwnerIn)
        {
            l.Bias.OwnerExit();
        }
        else
        {
            RawSpinLock.Unlock(ref l.Lock);
        }

        return pfn;
    }

    /// <summary><c>drain_all_pages</c>: gives every CPU's listed frames back to the free list.</summary>
    public void DrainPerCpuLists() => DrainPerCpuLists(-1);

    // The drain on CPU cpu (-1: none), which takes its own list as its owner.
    private void DrainPerCpuLists(int cpu)
    {
        for (int i = 0; i < _pcp.Length; i++)
        {
            var l = _pcp[i];
            bool owner = _pcpBiased && i == cpu && l.Bias.TryOwnerEnter();
            if (!owner)
            {
                RawSpinLock.Lock(ref l.Lock);
                if (_pcpBiased && i != cpu)
                {
                    l.Bias.OthersEnter();
                }
            }

            if (l.Count > 0)
            {
                PushFree(l.Frames.AsSpan(0, l.Count));
                l.Count = 0;
            }

            if (owner)
            {
                l.Bias.OwnerExit();
            }
            else
            {
                if (_pcpBiased && i != cpu)
                {
                    l.Bias.OthersExit();
                }

                RawSpinLock.Unlock(ref l.Lock);
            }
        }
    }

    /// <summary>Frames not in use.</summary>
    public long FreeFrames => TotalFrames - UsedFrames;

    // Free frames as the watermarks see them: frames on the per-CPU lists do not count (NR_FREE_PAGES).
    private long FreeForWatermarks => TotalFrames - Volatile.Read(ref _used);

    /// <summary>Frames currently used as page tables.</summary>
    public long TableFrames => Volatile.Read(ref _tablesInUse);

    /// <summary>Allocations that failed because RAM was exhausted.</summary>
    public long AllocationFailures => Volatile.Read(ref _allocFailures);

    /// <summary>The shared zero page (<c>ZERO_PAGE(0)</c>).</summary>
    public long ZeroPfn { get; }

    /// <summary>Where user-page contents live.</summary>
    public IPageContentStore Content { get; }

    /// <summary><see cref="Content"/> when it holds real bytes, else null: for a hot path to call it without an interface call.</summary>
    internal ByteContentStore? Bytes { get; }

    /// <summary>Host memory held by descriptors, tables and contents.</summary>
    public long HostBytes => _descriptors.HostBytes + _pageExt.HostBytes + _tables.HostBytes + Content.HostBytes;

    /// <summary>Host memory held by page descriptors (tokens included when page data is off).</summary>
    public long DescriptorHostBytes => _descriptors.HostBytes;

    /// <summary>Host memory held by page extensions (<see cref="PageExt"/>: LRU links, tables' slots and locks).</summary>
    public long PageExtHostBytes => _pageExt.HostBytes;

    /// <summary>Host memory held by table entries, headers and design state slots.</summary>
    public long TableHostBytes => _tables.HostBytes;

    /// <summary>Groups of 32 table entries in use, and table slots in use (tables that ever stored an entry and still hold one, or state).</summary>
    public (long Groups, long Slots) TableStorage => (_tables.GroupsInUse, _tables.SlotsInUse);

    /// <summary>Whether no store went around the set primitives into an absent entry (the zero sink still reads zero).</summary>
    public bool TableSinkIsZero => _tables.SinkIsZero;

    /// <summary>Tests only: see <see cref="TableStore.InterleavingPoint"/>.</summary>
    internal Action? TableInterleavingPoint
    {
        get => _tables.InterleavingPoint;
        set => _tables.InterleavingPoint = value;
    }

    // page->mapping as an id: owners (anon_vmas, files, address spaces) are held weakly, so an id
    // whose owner was collected (no page can still name it: a mapped or cached page keeps its
    // owner reachable) is reused once the ids run out.
    private readonly List<WeakReference<object>?> _owners = [null];
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<object, object> _ownerIds = [];
    private readonly Lock _ownersLock = new();

    /// <summary>The id of <paramref name="owner"/> in the descriptors' rmap word (<c>page->mapping</c>), given on first use.</summary>
    public int OwnerId(object owner)
    {
        if (_ownerIds.TryGetValue(owner, out object? boxed))
        {
            return (int)boxed;
        }

        lock (_ownersLock)
        {
            if (_ownerIds.TryGetValue(owner, out boxed))
            {
                return (int)boxed;
            }

            int id = -1;
            if (_owners.Count > PageDescriptor.MaxOwners)
            {
                for (int i = 1; i < _owners.Count; i++)
                {
                    if (_owners[i] is { } w && !w.TryGetTarget(out _))
                    {
                        id = i;
                        break;
                    }
                }

                if (id < 0)
                {
                    throw new InvalidOperationException($"more than {PageDescriptor.MaxOwners} live rmap owners on one machine");
                }

                _owners[id] = new WeakReference<object>(owner);
            }
            else
            {
                _owners.Add(new WeakReference<object>(owner));
                id = _owners.Count - 1;
            }

            _ownerIds.Add(owner, id);
            return id;
        }
    }

    /// <summary>Gives <paramref name="owner"/> an id (see <see cref="OwnerId"/>).</summary>
    public int RegisterOwner(object owner) => OwnerId(owner);

    /// <summary>The owner a descriptor's rmap names (the anon_vma or file of a page, the address space of a table), or null.</summary>
    public object? RmapOwner(long pfn)
    {
        int id = Desc(pfn).RmapOwnerId;
        if (id == 0)
        {
            return null;
        }

        lock (_ownersLock)
        {
            return _owners[id] is { } w && w.TryGetTarget(out object? o) ? o : null;
        }
    }

    /// <summary>Sets a frame's reverse map: who maps it, and at which address.</summary>
    public void SetRmap(long pfn, int ownerId, ulong address)
    {
        ref var d = ref Desc(pfn);
        d.RmapOwnerId = ownerId;
        d.RmapAddress = address;
    }

    /// <summary>The descriptor of a frame (<c>pfn_to_page</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref PageDescriptor Desc(long pfn) => ref _descriptors.Slot(pfn);

    /// <summary>
    /// The extension words of a frame (<see cref="PageExt"/>), made (zero) on first use. As with
    /// descriptors, a segment once made is never moved or freed, so a reference taken here stays
    /// the frame's; a table's words are made by <see cref="AllocTable"/> before the table is
    /// reachable, and a lockless reader of a stale table finds them as the freer left them
    /// (cleared, as the descriptor's LRU words were when they held them).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref PageExt Ext(long pfn) => ref _pageExt.Slot(pfn);

    /// <summary>The split page-table lock word (<c>ptlock_ptr</c>) of the table in frame <paramref name="table"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref int PtLock(long table) => ref _pageExt.Slot(table).PtLock;

    /// <summary>
    /// Which LRU list holds the page (<c>folio_lru_list</c> of a page with <c>PG_lru</c> set), or
    /// <see cref="LruList.None"/>: PG_lru in the descriptor says whether it is on one, its
    /// extension which, and a page on one without an extension list is on the unlinked anonymous
    /// list. Exact under the LRU lock; without it, a hint to recheck, as a PG_lru test is.
    /// </summary>
    public LruList LruOf(long pfn)
    {
        if (!Desc(pfn).OnLru)
        {
            return LruList.None;
        }

        ref var e = ref _pageExt.SlotIfPresent(pfn);
        return Unsafe.IsNullRef(ref e) || e.Lru == LruList.None ? LruList.Anon : e.Lru;
    }

    /// <summary>Clears a frame's extension words, where it has them (a frame taken or freed).</summary>
    private void ClearExt(long pfn)
    {
        ref var e = ref _pageExt.SlotIfPresent(pfn);
        if (!Unsafe.IsNullRef(ref e))
        {
            e = default;
        }
    }

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

    /// <summary>Per-operation counts, or null unless profiling.</summary>
    public OpProfile? Profile { get; set; }

    /// <summary>Allocation injection, or null (<c>CONFIG_FAULT_INJECTION</c>).</summary>
    public FaultInjector? FaultInjection { get; set; }

    private long AllocFrame(int cpu, AllocSite site)
    {
        if (FaultInjection is { } injector && injector.ShouldFail(site))
        {
            Interlocked.Increment(ref _allocFailures);
            return -1;
        }

        long pfn;
        if ((uint)cpu < (uint)_pcp.Length)
        {
            pfn = TakePerCpu(cpu);
            if (pfn < 0 && PerCpuListFrames > 0)
            {
                DrainPerCpuLists(cpu); // another CPU's list holds what is left
                pfn = TryTake();
            }
        }
        else
        {
            pfn = TryTake();
            Profile?.Locked(cpu); // the free-list lock
        }

        if (Reclaim is { } reclaim)
        {
            if (pfn < 0)
            {
                // Direct reclaim, outside the free-list lock. A round without progress is retried
                // while the LRU still holds pages (should_reclaim_retry, MAX_RECLAIM_RETRIES): a
                // concurrent reclaimer may hold them isolated, or a frame freed meanwhile may
                // have gone to another CPU's list.
                for (int idle = 0, round = 0; idle < MaxReclaimRetries && round < 64 * MaxReclaimRetries && pfn < 0 && cpu >= 0; round++)
                {
                    if (reclaim(cpu, 32) == 0)
                    {
                        if (Lru.Count(LruList.File) + (Swap is null ? 0 : Lru.Count(LruList.Anon)) == 0)
                        {
                            break;
                        }

                        idle++;
                        Thread.Yield();
                    }

                    DrainPerCpuLists(cpu);
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

        InitFrame(pfn, PageFlags.None, refCount: 1);
        return pfn;
    }

    /// <summary>A taken frame's descriptor as a fresh page: no mapping, no table, off the LRU, no entire mapcount.</summary>
    private void InitFrame(long pfn, PageFlags flags, int refCount)
    {
        ref var d = ref Desc(pfn);
        d.ResetRmap();
        ClearExt(pfn);
        if (flags != PageFlags.None)
        {
            d.Flags = (int)flags;
        }

        d.SetCounts(refCount, 0);
    }

    /// <summary>
    /// The work kswapd would do once an allocation left fewer free frames than the low watermark:
    /// reclaim up to the high watermark, done synchronously on <paramref name="cpu"/>.
    /// </summary>
    private void Kswapd(int cpu)
    {
        if (Reclaim is not { } reclaim || cpu < 0 || FreeForWatermarks >= LowWatermark || Interlocked.CompareExchange(ref _kswapd, 1, 0) != 0)
        {
            return;
        }

        try
        {
            long want = HighWatermark - FreeForWatermarks;
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
            if (Bytes is { } bytes)
            {
                bytes.Zero(pfn);
            }
            else
            {
                Content.Zero(pfn);
            }
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

        // A generation unique to this table (wrapping after 2^32 table allocations), so a stale
        // reference to a freed table is told apart from a new table in the same frame.
        // Its slot and lock first, so whoever finds the table through its parent entry finds them.
        Ext(pfn) = default;
        Desc(pfn).InitTable(level, (uint)Interlocked.Increment(ref _tableGeneration));
        Interlocked.Increment(ref _tablesInUse);
        if (Profile is { } profile)
        {
            profile.Count(cpu, ProfileOp.TableZeroed);
            profile.Count(cpu, ProfileOp.SharedAtomic, 2); // the generation and the table count
        }
        return pfn;
    }

    private int _tableGeneration;

    /// <summary>The 512 entries of a table page. Throws if the frame is not a live table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableEntries Table(long pfn)
    {
        ref var d = ref Desc(pfn);
        if ((d.Flags & (int)PageFlags.Table) == 0)
        {
            ThrowNotTable(pfn);
        }

        return new TableEntries(_tables, ref Ext(pfn).TableSlot);
    }

    /// <summary>
    /// Stores an entry of a live table, replacing <paramref name="old"/> (what the caller read
    /// under the table's lock): the one way a none entry becomes non-none, so the entry's group
    /// exists from then on. A PTE table gives back a group whose entries all went none.
    /// </summary>
    public void StoreEntry(long table, int index, ulong old, ulong value, int cpu = -1)
    {
        ref var d = ref Desc(table);

        _tables.Store(ref Ext(table).TableSlot, index, old, value, releaseEmpty: d.Level == 1);
    }

    /// <summary>Counts an entry the caller exchanged with zero in place (<c>ptep_get_and_clear</c>); <paramref name="old"/> is what it held.</summary>
    public void EntryCleared(long table, int index, ulong old, int cpu = -1)
    {
        if (old != 0)
        {
            ref var d = ref Desc(table);
            _tables.Cleared(ref Ext(table).TableSlot, index, releaseEmpty: d.Level == 1);
        }
    }

    /// <summary>
    /// <see cref="EntryCleared"/> of entry <paramref name="index"/> of the mapped PTE table
    /// <paramref name="table"/>, found through the CPU's <paramref name="cache"/> by a caller that
    /// holds the table's lock: where the cache's line still holds the entry's group, its count
    /// goes down through the line, without the descriptor and header lookups.
    /// </summary>
    public void CachedEntryCleared(TableEntryCache cache, TableRef table, int index)
    {
        ref var line = ref cache.At(1);
        if (line.Holds(table.Pfn, index, _tables.LayoutEpoch) && line.Generation == table.Generation)
        {
            _tables.ClearedLocated(ref Ext(table.Pfn).TableSlot, ref line.Headers![line.Header]);
            return;
        }

        _tables.Cleared(ref Ext(table.Pfn).TableSlot, index, releaseEmpty: true);
    }

    /// <summary>
    /// Entry <paramref name="index"/> of the live table in frame <paramref name="pfn"/>, of
    /// <paramref name="level"/>, read through the CPU's <paramref name="cache"/>: the storage
    /// <see cref="Table(long)"/>'s indexer would return (and the same check that the frame is a
    /// table), without the lookups when the cache's line for the level still holds it. For a
    /// caller that holds the lock ordering stores to the table, or that checks what it read with
    /// <see cref="SameCachedEntry"/>; a lockless read of the value is
    /// <see cref="ReadCachedEntry(TableEntryCache, int, long, int)"/> (see
    /// <see cref="TableStore.LayoutEpoch"/> for why).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong CachedEntry(TableEntryCache cache, int level, long pfn, int index)
    {
        ref var line = ref cache.At(level);
        if (line.Holds(pfn, index, _tables.LayoutEpoch))
        {
            return ref line.Entry(index);
        }

        return ref CachedEntryMiss(ref line, pfn, index, checkGeneration: false, 0);
    }

    /// <summary>
    /// Entry <paramref name="index"/> of the mapped table <paramref name="table"/> through the
    /// CPU's <paramref name="cache"/>: what <see cref="Table(TableRef)"/>'s indexer returns, a
    /// stale reference throwing <see cref="UseAfterFreeException"/> as it does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong CachedEntry(TableEntryCache cache, int level, TableRef table, int index)
    {
        ref var line = ref cache.At(level);
        if (line.Holds(table.Pfn, index, _tables.LayoutEpoch) && line.Generation == table.Generation)
        {
            return ref line.Entry(index);
        }

        return ref CachedEntryMiss(ref line, table.Pfn, index, checkGeneration: true, table.Generation);
    }

    /// <summary>
    /// The value of entry <paramref name="index"/> of the table in frame <paramref name="pfn"/>,
    /// read without the table's lock through the CPU's <paramref name="cache"/>, seqlock style:
    /// the line's stamp is checked, the entry read, and the epoch read again, so the value read is
    /// one the table's entry held (never one of a table that took its group since; see
    /// <see cref="TableStore.LayoutEpoch"/>). Volatile reads keep the three in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong ReadCachedEntry(TableEntryCache cache, int level, long pfn, int index)
    {
        ref var line = ref cache.At(level);
        long epoch = _tables.LayoutEpoch;
        if (line.Holds(pfn, index, epoch))
        {
            ulong v = Volatile.Read(ref line.Entry(index));
            if (_tables.LayoutEpoch == epoch)
            {
                return v;
            }
        }

        return ReadCachedEntryMiss(ref line, pfn, index, checkGeneration: false, 0);
    }

    /// <summary><see cref="ReadCachedEntry(TableEntryCache, int, long, int)"/> of the mapped table <paramref name="table"/>, a stale reference throwing <see cref="UseAfterFreeException"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong ReadCachedEntry(TableEntryCache cache, int level, TableRef table, int index)
    {
        ref var line = ref cache.At(level);
        long epoch = _tables.LayoutEpoch;
        if (line.Holds(table.Pfn, index, epoch) && line.Generation == table.Generation)
        {
            ulong v = Volatile.Read(ref line.Entry(index));
            if (_tables.LayoutEpoch == epoch)
            {
                return v;
            }
        }

        return ReadCachedEntryMiss(ref line, table.Pfn, index, checkGeneration: true, table.Generation);
    }

    // The lockless read through the full lookup: the epoch read before the lookup still reads the
    // same after the entry is read, or storage moved meanwhile and the read is done again.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ReadCachedEntryMiss(ref TableEntryCache.Line line, long pfn, int index, bool checkGeneration, int generation)
    {
        while (true)
        {
            long epoch = _tables.LayoutEpoch;
            ulong v = Volatile.Read(ref CachedEntryMiss(ref line, pfn, index, checkGeneration, generation, epoch));
            if (_tables.LayoutEpoch == epoch)
            {
                return v;
            }
        }
    }

    // The full lookup, which fills the line when the entry's group is stored, stamped with the
    // epoch read before the lookup (see TableStore.LayoutEpoch).
    private ref ulong CachedEntryMiss(ref TableEntryCache.Line line, long pfn, int index, bool checkGeneration, int generation) =>
        ref CachedEntryMiss(ref line, pfn, index, checkGeneration, generation, _tables.LayoutEpoch);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ref ulong CachedEntryMiss(ref TableEntryCache.Line line, long pfn, int index, bool checkGeneration, int generation, long epoch)
    {
        _tables.Step();
        ref var d = ref Desc(pfn);
        if (checkGeneration)
        {
            if ((d.Flags & (int)PageFlags.Table) == 0 || d.Generation != generation)
            {
                ThrowStale(new TableRef(pfn, generation));
            }
        }
        else if ((d.Flags & (int)PageFlags.Table) == 0)
        {
            ThrowNotTable(pfn);
        }

        int slot = Volatile.Read(ref Ext(pfn).TableSlot);
        _tables.Step();
        if (!_tables.TryLocate(slot, index, out var storage, out int offset, out var headers, out int header))
        {
            line.Pfn = -1;
            return ref storage[offset];
        }

        line.Pfn = pfn;
        line.Generation = d.Generation;
        line.Group = index >> TableStore.GroupShift;
        line.Epoch = epoch;
        line.Storage = storage;
        line.Offset = offset;
        line.Headers = headers;
        line.Header = header;
        return ref storage[offset + (index & (TableStore.GroupEntries - 1))];
    }

    /// <summary>
    /// <see cref="StoreEntry"/> on the live table <paramref name="table"/> through the CPU's
    /// <paramref name="cache"/>: where its line holds the entry's group, the store goes straight
    /// to the storage and the group's header; otherwise (and for a store of none, which may give
    /// the group back) the full store.
    /// </summary>
    public void CachedStoreEntry(TableEntryCache cache, int level, TableRef table, int index, ulong old, ulong value)
    {
        ref var line = ref cache.At(level);
        if (value != 0 && line.Holds(table.Pfn, index, _tables.LayoutEpoch) && line.Generation == table.Generation)
        {
            TableStore.StoreLocated(ref line.Entry(index), ref line.Headers![line.Header], old, value);
            return;
        }

        StoreEntry(table.Pfn, index, old, value);
    }

    /// <summary>
    /// <see cref="SameEntry"/> for an entry read through <paramref name="cache"/>: while the line
    /// still holds the entry, nothing moved since it was found; otherwise the full check.
    /// </summary>
    public bool SameCachedEntry(TableEntryCache cache, int level, long table, int index, ref ulong entry)
    {
        ref var line = ref cache.At(level);
        if (line.Holds(table, index, _tables.LayoutEpoch))
        {
            return Unsafe.AreSame(ref line.Entry(index), ref entry);
        }

        return SameEntry(table, index, ref entry);
    }

    /// <summary>
    /// What is wrong with how the live tables <paramref name="tables"/> are stored, or null: each
    /// stored group named by one table only, and its count of entries that are not none exact.
    /// For a quiescent machine (an invariant check).
    /// </summary>
    public string? CheckTableStorage(IEnumerable<long> tables)
    {
        var owners = new Dictionary<int, long>();
        foreach (long t in tables)
        {
            if (_tables.Check(Volatile.Read(ref Ext(t).TableSlot), t, owners) is { } problem)
            {
                return problem;
            }
        }

        return null;
    }

    /// <summary>Whether <paramref name="entry"/>, a reference a lockless walker took, is still where entry <paramref name="index"/> of <paramref name="table"/> lives.</summary>
    public bool SameEntry(long table, int index, ref ulong entry) => _tables.SameEntry(Volatile.Read(ref Ext(table).TableSlot), index, ref entry);

    /// <summary>
    /// The table store's layout epoch (<see cref="TableStore.LayoutEpoch"/>): it advances after
    /// every give-back of a table's storage and every <see cref="FreeTable"/>, so a memo of a live
    /// table taken after reading it stays right while it reads the same.
    /// </summary>
    internal long LayoutEpoch
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _tables.LayoutEpoch;
    }

    /// <summary>The reclaim design's per-table state (the seed's <c>pte_ref</c>, the 2021 series' <c>pte_refcount</c>), or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public object? TableState(long table) => _tables.State(Volatile.Read(ref Ext(table).TableSlot));

    /// <summary>
    /// The design state of the live table <paramref name="table"/>, from the one descriptor lookup
    /// that checks it is still the table that was mapped; a stale reference throws
    /// <see cref="UseAfterFreeException"/> as <see cref="Table(TableRef)"/> does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public object? LiveTableState(TableRef table)
    {
        ref var d = ref Desc(table.Pfn);
        if ((d.Flags & (int)PageFlags.Table) == 0 || d.Generation != table.Generation)
        {
            ThrowStale(table);
        }

        return _tables.State(Volatile.Read(ref Ext(table.Pfn).TableSlot));
    }

    /// <summary>A reference to the live table in frame <paramref name="pfn"/> and its design state, from one descriptor lookup.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableRef Ref(long pfn, out object? state)
    {
        ref var d = ref Desc(pfn);
        state = _tables.State(Volatile.Read(ref Ext(pfn).TableSlot));
        return new(pfn, d.Generation);
    }

    /// <summary>Sets the reclaim design's per-table state.</summary>
    public void SetTableState(long table, object? state) => _tables.SetState(ref Ext(table).TableSlot, state);

    private void ThrowNotTable(long pfn) =>
        throw new UseAfterFreeException($"frame {pfn:x} is not a page table (generation {Desc(pfn).Generation})", Environment.StackTrace, FreeStackOf(pfn));

    /// <summary>A reference to the live table in frame <paramref name="pfn"/>, stamped with its generation.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableRef Ref(long pfn) => new(pfn, Desc(pfn).Generation);

    /// <summary>
    /// <see cref="Ref(long)"/> of the PTE table in frame <paramref name="pfn"/>, without the
    /// descriptor lookup where the CPU's <paramref name="cache"/> still holds an entry of that
    /// table: while the layout epoch reads the line's stamp, no table was freed since the line
    /// found it, so the generation it noted is the frame's.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableRef CachedPteTableRef(TableEntryCache cache, long pfn)
    {
        ref var line = ref cache.At(1);
        return line.Pfn == pfn && line.Epoch == _tables.LayoutEpoch ? new(pfn, line.Generation) : Ref(pfn);
    }

    /// <summary>
    /// The entries of a mapped table, after checking that it is still the table that was mapped;
    /// a freed or reused frame throws <see cref="UseAfterFreeException"/> with both stacks.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableEntries Table(TableRef table)
    {
        ref var d = ref Desc(table.Pfn);
        if ((d.Flags & (int)PageFlags.Table) == 0 || d.Generation != table.Generation)
        {
            ThrowStale(table);
        }

        return new TableEntries(_tables, ref Ext(table.Pfn).TableSlot);
    }

    /// <summary>Whether a mapped table is still the same live table (no exception).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
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

        // The frame stops being a table, then its storage is unlinked, the layout epoch advances
        // and the storage is given back (all in Release): from here on no cache line leads here.
        d.Flags &= ~(int)PageFlags.Table;
        _tables.Step();
        ref var e = ref Ext(pfn);
        _tables.Release(ref e.TableSlot, TablePoison);
        e.PtLock = 0;
        d.SetCounts(0, 0);
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
        PoisonFreed(pfn);
        PushFree([pfn]);
    }

    private void PoisonFreed(long pfn)
    {
        ref var d = ref Desc(pfn);
        if ((d.Flags & (int)PageFlags.Free) != 0)
        {
            throw new BadPageException($"double free of frame {pfn:x}");
        }

        d.ResetAsFree();
        ClearExt(pfn);
    }

    /// <summary>Frees pages whose last reference is gone: off the LRU under one lock, then onto the free list.</summary>
    private void FreeBatch(ReadOnlySpan<long> pfns)
    {
        Lru.RemoveAll(pfns);
        foreach (long pfn in pfns)
        {
            PoisonFreed(pfn);
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
        Profile?.Locked(-1);
        while (_freeCount + pfns.Length > _freeStack.Length)
        {
            Array.Resize(ref _freeStack, _freeStack.Length * 2);
        }

        for (int i = 0; i < pfns.Length; i++)
        {
            _freeStack[_freeCount + i] = (int)pfns[i];
        }

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

        int r = d.AddRef(-1);
        Profile?.Count(-1, ProfileOp.SharedAtomic);
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
        Profile?.Count(-1, ProfileOp.SharedAtomic, pfns.Length);
        foreach (long page in pfns)
        {
            long pfn = page;
            ref var d = ref Desc(pfn);
            int flags = d.Flags;
            if ((flags & (int)PageFlags.Tail) != 0)
            {
                pfn = page & ~(long)(HugeFrames - 1); // the folio's head (CompoundHead)
                d = ref Desc(pfn);
                flags = d.Flags;
            }

            if ((flags & (int)PageFlags.Reserved) != 0)
            {
                continue;
            }

            int r = d.AddRef(-1);
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

        Profile?.Count(-1, ProfileOp.SharedAtomic);
        return d.TryAddRef();
    }

    /// <summary>Takes a reference (<c>get_page</c>) on the page's folio.</summary>
    public void GetPage(long pfn)
    {
        ref var d = ref Desc(CompoundHead(pfn));
        Profile?.Count(-1, ProfileOp.SharedAtomic);
        if (!d.Has(PageFlags.Reserved) && d.AddRef(1) >= PageDescriptor.MaxRefCount)
        {
            throw new BadPageException($"page refcount overflow on frame {pfn:x}");
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
