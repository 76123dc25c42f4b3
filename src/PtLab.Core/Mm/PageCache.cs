using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>A file's identity: the device and inode numbers (<c>st_dev</c>, <c>st_ino</c>).</summary>
/// <param name="Device">The device number.</param>
/// <param name="Inode">The inode number.</param>
public readonly record struct FileId(ulong Device, ulong Inode)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Device:x}:{Inode}";
}

/// <summary>
/// A simulated file: its inode (identity and size, <c>i_size</c>) and its <c>address_space</c>: the
/// page cache (<c>i_pages</c>, page index to frame) and the VMAs that map it (<c>i_mmap</c>). A regular
/// file keeps the content of pages not in the cache in a backing store (its blocks on disk); a shmem
/// file (<see cref="IsShmem"/>, the file behind a shared anonymous mapping or a memfd) has no
/// backing store: its pages live in the cache until they are punched out or the file goes away.
/// </summary>
/// <remarks>
/// <para>
/// How the page cache gets populated: a file starts cold, as one nobody has read since boot. A
/// fault on a missing page of a regular file reads in the mmap read-around window
/// (<c>do_sync_mmap_readahead</c>: <see cref="ReadAheadPages"/> pages centred on the fault, from the
/// fault on in an executable or MADV_SEQUENTIAL VMA, none around it under MADV_RANDOM; below end
/// of file), unless the file's faults miss far more than fault-around hits (<c>mmap_miss</c> above
/// 100); a fault on a readahead mark reads the next window in larger folios
/// (<see cref="AsyncReadAhead"/>). Read fault-around maps only pages already cached, as
/// <c>filemap_map_pages</c> does. A shmem page is allocated by its fault alone.
/// <see cref="Populate"/> brings pages in the way a <c>read()</c> or <c>write()</c> of them would (a
/// file just written, a library in use), and <see cref="Write"/> stores data through the cache as
/// <c>pwrite</c> does.
/// </para>
/// <para>
/// Every cached page holds one reference for the cache, and one more per mapping entry (with its
/// mapcount). A page's descriptor names this file as its owner and its index as its rmap index
/// (<c>page-&gt;mapping</c>, <c>page-&gt;index</c>); a page removed from the cache loses its owner,
/// so a fault that looked it up before the removal sees that under the PTE lock and backs off.
/// Regular file pages are on the file LRU list, where reclaim may unmap and evict them (writing a
/// dirty one back first); shmem pages are kept off the LRU lists: the model does not swap shmem.
/// </para>
/// </remarks>
public sealed partial class SimFile
{
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, long> _pages = [];

    // The PMD-sized folios in the cache: first index to head frame. Every index of one is also in
    // _pages (head + offset); a folio leaves this map whole when any of its pages leaves the cache.
    private readonly Dictionary<ulong, long> _largeFolios = [];

    // The smaller large folios (orders 1 to 8), whose pages are frames of their own: first index to
    // order, and each of their pages' index to the folio's first index. A folio leaves these maps
    // whole when any of its pages leaves the cache (its other pages stay, as single pages).
    private readonly Dictionary<ulong, int> _smallFolios = [];
    private readonly Dictionary<ulong, ulong> _folioStart = [];
    private readonly List<Vma> _mmap = [];
    private readonly Dictionary<ulong, byte[]> _storedBytes = [];
    private readonly Dictionary<ulong, ulong> _storedTokens = [];
    private readonly PhysMemory _phys;

    // This file's id in the descriptors' rmap word (page->mapping).
    private readonly int _ownerId;
    private int _users;
    private ulong _size;

    // The readahead state of users that name no open file of their own (a mapping made without
    // one, read() through the file itself): one per file, the model's behaviour before it kept
    // a state per open file.
    private readonly FileRaState _sharedRa;

    // Large folios ever added (a fast test that skips the folio lookups for files that never had one).
    private int _largeFolioCount;
    private long _readIns;
    private long _writebacks;
    private long _evicted;

    internal SimFile(FileTable table, FileId id, ulong size, bool shmem)
    {
        Table = table;
        _phys = table.Machine.Phys;
        _ownerId = _phys.OwnerId(this);
        Id = id;
        _size = size;
        IsShmem = shmem;
        ReadAheadPages = shmem ? 0 : table.Machine.Options.ReadAheadKb / 4;
        _sharedRa = new FileRaState(this);
    }

    /// <summary>The lock the readahead states of this file are read and written under.</summary>
    internal Lock RaLock => _lock;

    /// <summary>
    /// The readahead state shared by every user that names no open file of its own
    /// (<see cref="Open"/>): a mapping made without one, <see cref="Read"/> without one.
    /// </summary>
    public FileRaState SharedRa => _sharedRa;

    /// <summary>
    /// An open of this file (<c>do_dentry_open</c> + <c>file_ra_state_init</c>): a readahead state
    /// of its own, cold, for the mappings made from it and its <c>read()</c>s.
    /// </summary>
    public FileRaState Open() => new(this);

    /// <summary>
    /// <c>mapping_large_folio_support</c>: whether the file system builds large folios in this
    /// file's page cache (<c>mapping_set_large_folios</c> in its inode constructor). When false,
    /// <c>page_cache_ra_order</c> falls back to order-0 pages and resets the state's order, for
    /// every window, the VM_HUGEPAGE one included. True by default (xfs, ext4 on Linux 6.18).
    /// </summary>
    public bool LargeFolios { get; set; } = true;

    /// <summary>
    /// The mmap read-around window in pages (<c>ra_pages</c>, from the device's <c>read_ahead_kb</c>;
    /// 0 for a shmem file, which has no readahead).
    /// </summary>
    public int ReadAheadPages { get; set; }

    /// <summary>The file's identity.</summary>
    public FileId Id { get; }

    /// <summary>
    /// <c>i_size</c> in bytes. A fault at or beyond it (rounded up to a page) gets SIGBUS. A file
    /// only grows in the model (<see cref="Grow"/>); truncation is not modelled.
    /// </summary>
    public ulong Size => Volatile.Read(ref _size);

    /// <summary>Extends the file to <paramref name="size"/> bytes if it is smaller (a write past its end, or <c>ftruncate</c> upwards); the new part reads as zeros.</summary>
    public void Grow(ulong size)
    {
        lock (_lock)
        {
            if (size > _size)
            {
                Volatile.Write(ref _size, size);
            }
        }
    }

    /// <summary>Whether this is a shmem (tmpfs) file: pages are RssShmem, allocated on fault, never written back.</summary>
    public bool IsShmem { get; }

    /// <summary>The machine's file table this file belongs to.</summary>
    internal FileTable Table { get; }

    /// <summary>Pages in the page cache (<c>mapping-&gt;nrpages</c>).</summary>
    public long CachedPages
    {
        get
        {
            lock (_lock)
            {
                return _pages.Count;
            }
        }
    }

    /// <summary>VMAs mapping the file now (the size of <c>i_mmap</c>).</summary>
    public int MappingVmas
    {
        get
        {
            lock (_lock)
            {
                return _mmap.Count;
            }
        }
    }

    /// <summary>Pages read in from the backing store (or allocated, for shmem) by faults and <see cref="Populate"/>.</summary>
    public long ReadIns => Volatile.Read(ref _readIns);

    /// <summary>Dirty pages written back to the backing store when they left the cache.</summary>
    public long Writebacks => Volatile.Read(ref _writebacks);

    /// <summary>Pages reclaim evicted from the cache.</summary>
    public long Evicted => Volatile.Read(ref _evicted);

    /// <summary>
    /// Whether a shared writable mapping maps pages read-only first, so that the first write
    /// faults and dirties the page (<c>vma_wants_writenotify</c>: true for a file whose mapping
    /// can write back, false for shmem).
    /// </summary>
    internal bool WantsWriteNotify => !IsShmem;

    /// <summary>Pages below end of file: <c>DIV_ROUND_UP(i_size, PAGE_SIZE)</c>.</summary>
    internal ulong PagesInFile => (Size + PhysMemory.PageSize - 1) >> PhysMemory.PageShift;

    /// <summary>Whether frame <paramref name="pfn"/> is still this file's page at <paramref name="index"/> (not truncated meanwhile).</summary>
    internal bool StillCached(long pfn, ulong index)
    {
        ref var d = ref _phys.Desc(pfn);
        return d.RmapOwnerId == _ownerId && d.RmapAddress == index;
    }

    /// <summary>Whether the page at <paramref name="index"/> is in the page cache (<c>mincore_page</c>).</summary>
    public bool IsCached(ulong index)
    {
        lock (_lock)
        {
            return _pages.ContainsKey(index);
        }
    }

    /// <summary><c>filemap_get_folio</c>: the cached page at <paramref name="index"/> with a reference taken, or -1.</summary>
    internal long FindGetPage(ulong index)
    {
        lock (_lock)
        {
            if (!_pages.TryGetValue(index, out long pfn))
            {
                return -1;
            }

            _phys.GetPage(pfn);
            return pfn;
        }
    }

    /// <summary>
    /// The walk of <c>filemap_map_pages</c> (<c>next_uptodate_folio</c>): for each index in
    /// [<paramref name="first"/>, <paramref name="first"/> + <paramref name="pfns"/>.Length), the
    /// cached page with a reference taken, or -1. Returns how many were found.
    /// </summary>
    internal int FindGetPages(ulong first, Span<long> pfns)
    {
        int found = 0;
        lock (_lock)
        {
            for (int i = 0; i < pfns.Length; i++)
            {
                if (_pages.TryGetValue(first + (ulong)i, out long pfn))
                {
                    _phys.GetPage(pfn);
                    pfns[i] = pfn;
                    found++;
                }
                else
                {
                    pfns[i] = -1;
                }
            }
        }

        return found;
    }

    /// <summary>
    /// <c>filemap_fault</c> / <c>shmem_fault</c> for an index below end of file: the cached page, or
    /// a page read in from the backing store (a zeroed one for a hole or for shmem), with a
    /// reference taken for the caller. Returns -1 when no memory could be found. Reclaim may run
    /// on CPU <paramref name="cpu"/> while allocating; no lock is held then.
    /// </summary>
    internal long GetPage(int cpu, ulong index)
    {
        long pfn = FindGetPage(index);
        if (pfn >= 0)
        {
            return pfn;
        }

        long fresh = _phys.AllocFrame(cpu);
        if (fresh < 0)
        {
            return -1;
        }

        lock (_lock)
        {
            if (_pages.TryGetValue(index, out pfn))
            {
                // Someone read it in first: use theirs.
                _phys.GetPage(pfn);
            }
            else
            {
                FillFromStore(fresh, index);
                AddToPageCache(fresh, index);
                _phys.GetPage(fresh);
                Interlocked.Increment(ref _readIns);
                return fresh;
            }
        }

        _phys.PutPage(fresh);
        return pfn;
    }

    /// <summary>
    /// The cold-miss part of <c>filemap_fault</c> for a regular file (<c>do_sync_mmap_readahead</c>),
    /// for a fault at <paramref name="index"/> in a VMA with <paramref name="vmFlags"/> mapping the
    /// file's pages [<paramref name="vmaFirst"/>, <paramref name="vmaEnd"/>). A VM_HUGEPAGE VMA
    /// reads from the index rounded down to 512, two PMD-sized folios (one under MADV_RANDOM), the
    /// second one the asynchronous part (taken before any other case, readahead setting and
    /// <c>mmap_miss</c> regardless). Otherwise MADV_RANDOM without VM_EXEC reads only the faulting
    /// page; MADV_SEQUENTIAL reads <see cref="ReadAheadPages"/> pages from the fault on; otherwise the
    /// miss is counted (<c>mmap_miss</c>) and, unless misses far outnumber fault-around's hits, an
    /// executable VMA reads the window from the fault on, within the VMA (the arch's exec folio
    /// order is 0 on x86, and there is no asynchronous part), and any other reads it centred on the
    /// fault (start at index − ra/2, its last quarter the asynchronous part) in order-0 folios. Each
    /// window goes through <see cref="PageCacheRaOrder"/> and is kept as the readahead state
    /// <paramref name="ra"/> (the open file's <c>file_ra_state</c>; the file's shared one when null), which <see cref="AsyncReadAhead"/> moves on. The faulting page is read
    /// always. Returns false when memory ran out before the faulting page was in; the caller then
    /// retries the fault, as the kernel does after dropping mmap_lock for the read.
    /// </summary>
    internal bool ReadAround(int cpu, FileRaState? ra, ulong index, VmFlags vmFlags, ulong vmaFirst, ulong vmaEnd)
    {
        ra ??= _sharedRa;
        const int mmapLotsaMiss = 100;
        int raPages = ReadAheadPages;
        bool exec = (vmFlags & VmFlags.Exec) != 0;
        if ((vmFlags & VmFlags.HugePage) != 0 && !IsShmem)
        {
            const ulong nr = PhysMemory.HugeFrames;
            ulong size = (vmFlags & VmFlags.RandRead) != 0 ? nr : 2 * nr;
            return PageCacheRaOrder(cpu, ra, index, index & ~(nr - 1), size, nr, PhysMemory.HugeOrder);
        }

        if ((vmFlags & VmFlags.RandRead) != 0 && !exec)
        {
            // no readahead: the page alone
        }
        else if (raPages > 0 && (vmFlags & VmFlags.SeqRead) != 0)
        {
            // page_cache_sync_ra of ra_pages from the fault: the initial window at index 0 keeps
            // half of itself as its asynchronous part and becomes the readahead state; elsewhere
            // (a file never read() has no previous position) the read is a standalone one.
            return index == 0
                ? PageCacheRaOrder(cpu, ra, index, 0, (ulong)raPages, (ulong)(raPages / 2), 0)
                : DoPageCacheRa(cpu, index, index, (ulong)raPages, 0);
        }
        else if (raPages > 0)
        {
            int miss;
            lock (_lock)
            {
                if (ra.MmapMiss < mmapLotsaMiss * 10)
                {
                    ra.MmapMiss++;
                }

                miss = ra.MmapMiss;
            }

            if (miss <= mmapLotsaMiss && exec)
            {
                ulong first = Math.Max(index, vmaFirst);
                ulong end = Math.Max(index + 1, Math.Min(first + (ulong)raPages, vmaEnd));
                return PageCacheRaOrder(cpu, ra, index, first, end - first, 0, 0);
            }

            if (miss <= mmapLotsaMiss)
            {
                ulong first = index > (ulong)(raPages / 2) ? index - (ulong)(raPages / 2) : 0;
                return PageCacheRaOrder(cpu, ra, index, first, (ulong)raPages, (ulong)(raPages / 4), 0);
            }
        }

        return EnsurePage(cpu, index);
    }

    /// <summary>
    /// <c>page_cache_async_ra</c> as <c>do_async_mmap_readahead</c> calls it, when a fault at
    /// <paramref name="index"/> found its folio (of <paramref name="folioPages"/> pages) carrying the
    /// readahead mark, which the caller has cleared: if the fault is where the last window's
    /// asynchronous part starts (rounded down to the folio), the next window follows the last one,
    /// as large (<c>get_next_ra_size</c>); otherwise the window starts at the first page not cached
    /// after the fault. The folio order grows by two (<c>ra-&gt;order += 2</c>), the window's end is
    /// aligned to it, and the whole window is the asynchronous part, so its first folio gets the
    /// mark. Reading starts at once and is complete at once (the model has no I/O). Nothing is done
    /// under MADV_RANDOM or without a readahead window.
    /// </summary>
    internal void AsyncReadAhead(int cpu, FileRaState? ra, ulong index, ulong folioPages) => PageCacheAsyncRa(cpu, ra ?? _sharedRa, index, folioPages, (ulong)ReadAheadPages);

    /// <summary><c>page_cache_async_ra</c> for a folio at <paramref name="index"/> of <paramref name="folioPages"/> pages and a request of <paramref name="req"/> pages.</summary>
    private void PageCacheAsyncRa(int cpu, FileRaState ra, ulong index, ulong folioPages, ulong req)
    {
        ulong max = (ulong)ReadAheadPages;
        if (max == 0 || IsShmem)
        {
            return;
        }

        ulong start, size;
        int order;
        lock (_lock)
        {
            ulong expected = (ra.Start + ra.Size - ra.AsyncSize) & ~(folioPages - 1);
            if (index == expected)
            {
                start = ra.Start + ra.Size;
                size = Math.Max(ra.Size, NextRaSize(ra.Size, max));
            }
            else
            {
                start = index + 1;
                while (start - index <= max && _pages.ContainsKey(start))
                {
                    start++;
                }

                if (start - index > max)
                {
                    return;
                }

                size = NextRaSize(start - index + req, max);
            }

            order = ra.Order + 2;
        }

        ulong align = 1UL << Math.Min(order, System.Numerics.BitOperations.TrailingZeroCount(max));
        ulong end = start + size, alignedEnd = end & ~(align - 1);
        if (alignedEnd > start)
        {
            size -= end - alignedEnd;
        }

        PageCacheRaOrder(cpu, ra, ulong.MaxValue, start, size, size, order);
    }

    /// <summary>
    /// <c>filemap_read</c> (<c>read()</c>, <c>pread()</c>) of [<paramref name="offset"/>,
    /// +<paramref name="length"/>) as far as end of file, as far as the page cache is concerned: a
    /// missing page starts synchronous readahead (<c>page_cache_sync_ra</c>, a request of the pages
    /// left to read; order 0, the window four times the request at the start of the file or after
    /// the previous read's end, else sized by the cached pages before it), a batch of cached folios
    /// that ends in one carrying the readahead mark starts asynchronous readahead from it
    /// (<see cref="AsyncReadAhead"/>, whose folio order grows by two each time). The end of the read
    /// is kept as the previous position (<c>prev_pos</c>). Reclaim may run on CPU
    /// <paramref name="cpu"/>. Returns false when memory ran out.
    /// </summary>
    public bool Read(ulong offset, ulong length, int cpu = -1, FileRaState? ra = null)
    {
        ra ??= _sharedRa;
        ulong end = Math.Min(offset + length, Size);
        if (IsShmem || offset >= end)
        {
            return true;
        }

        ulong lastIndex = (end + PhysMemory.PageSize - 1) >> PhysMemory.PageShift;
        ulong index = offset >> PhysMemory.PageShift;
        while (index < lastIndex)
        {
            if (!IsCached(index))
            {
                SyncReadAhead(cpu, ra, index, lastIndex - index);
                if (!EnsurePage(cpu, index))
                {
                    return false;
                }
            }

            // filemap_get_read_batch: the cached folios from index on, up to and including the
            // first one carrying the readahead mark.
            ulong next = index;
            (ulong First, ulong Pages, long Head)? marked = null;
            while (next < lastIndex && CachedFrame(next) is long pfn and >= 0)
            {
                var folio = FolioOf(pfn, next) ?? (next, 1, pfn);
                next = folio.First + folio.Pages;
                if ((_phys.Desc(folio.Head).Flags & (int)PageFlags.Reclaim) != 0)
                {
                    marked = folio;
                    break;
                }
            }

            if (marked is { } m && ClearReadAhead(m.Head, m.First).Marked)
            {
                PageCacheAsyncRa(cpu, ra, m.First, m.Pages, lastIndex - m.First);
            }

            index = next;
        }

        lock (_lock)
        {
            ra.PrevPos = end;
        }

        return true;
    }

    /// <summary><c>page_cache_sync_ra</c> for a read that missed the cache at <paramref name="index"/>, <paramref name="req"/> pages long.</summary>
    private void SyncReadAhead(int cpu, FileRaState ra, ulong index, ulong req)
    {
        ulong max = (ulong)ReadAheadPages;
        if (max == 0)
        {
            return; // force_page_cache_ra of the one page: the caller reads it
        }

        ulong prevIndex;
        lock (_lock)
        {
            prevIndex = ra.PrevPos >> PhysMemory.PageShift;
        }

        if (index == 0 || req > max || index - prevIndex <= 1)
        {
            // Start of file, an oversized read, or a sequential miss: a fresh window.
            ulong size = InitRaSize(req, max);
            PageCacheRaOrder(cpu, ra, ulong.MaxValue, index, size, size > req ? size - req : size >> 1, 0);
            return;
        }

        // page_cache_prev_miss: how many pages before index are cached (the history of a stream).
        ulong contig = 0;
        bool toStart = false;
        lock (_lock)
        {
            while (contig < max && _pages.ContainsKey(index - 1 - contig))
            {
                contig++;
                if (contig == index)
                {
                    toStart = true;
                    break;
                }
            }
        }

        if (contig <= req)
        {
            DoPageCacheRa(cpu, ulong.MaxValue, index, req, 0); // a standalone small read
            return;
        }

        if (toStart)
        {
            contig *= 2; // cached from the start of the file: a long stream
        }

        PageCacheRaOrder(cpu, ra, ulong.MaxValue, index, Math.Min(contig + req, max), 1, 0);
    }

    /// <summary><c>get_init_ra_size</c>: the first window, the request rounded up to a power of two, times four while small, times two while medium, else the maximum.</summary>
    private static ulong InitRaSize(ulong size, ulong max)
    {
        ulong n = System.Numerics.BitOperations.RoundUpToPowerOf2(size);
        return n <= max / 32 ? n * 4 : n <= max / 4 ? n * 2 : max;
    }

    /// <summary><c>get_next_ra_size</c>: a window grows fourfold while small, then twofold, up to <paramref name="max"/>.</summary>
    private static ulong NextRaSize(ulong cur, ulong max) => cur < max / 16 ? 4 * cur : cur <= max / 2 ? 2 * cur : max;

    /// <summary>
    /// <c>page_cache_ra_order</c>: reads the window [<paramref name="start"/>, +<paramref name="size"/>)
    /// (cut at end of file) in folios of the order asked for, at most PMD order and the window's
    /// log2, each one smaller where its index is not aligned to it or it would pass end of file;
    /// the folio holding <c>start + size − async</c> (rounded down to its size) gets the readahead
    /// mark. At the first folio that cannot be added (a page of it already cached, or no memory for
    /// it) the rest of the window is read as order-0 pages by <see cref="DoPageCacheRa"/>; a file
    /// without large folio support (<see cref="LargeFolios"/>) reads the whole window so, at order 0.
    /// The window and the order used become the readahead state <paramref name="ra"/>.
    /// <paramref name="fault"/> is the faulting index (ulong.MaxValue for none): it gets no mark (the
    /// fault consumes it) and is read in any case. Returns false when memory ran out before the
    /// faulting page was in.
    /// </summary>
    private bool PageCacheRaOrder(int cpu, FileRaState ra, ulong fault, ulong start, ulong size, ulong async, int order)
    {
        ulong fileEnd = PagesInFile;
        int newOrder = Math.Min(Math.Min(order, PhysMemory.HugeOrder), size == 0 ? 0 : System.Numerics.BitOperations.Log2(size));
        bool large = LargeFolios;
        lock (_lock)
        {
            (ra.Start, ra.Size, ra.AsyncSize, ra.Order) = (start, size, async, large ? newOrder : 0);
        }

        if (!large)
        {
            // page_cache_ra_order's fallback: do_page_cache_ra of the whole window.
            return (size == 0 || start >= fileEnd || DoPageCacheRa(cpu, fault, start, size, async))
                && (fault == ulong.MaxValue || EnsurePage(cpu, fault));
        }

        if (size == 0 || start >= fileEnd)
        {
            return fault == ulong.MaxValue || EnsurePage(cpu, fault);
        }

        ulong limit = Math.Min(fileEnd - 1, start + size - 1);
        ulong mark = start + size - async;
        ulong index = start;
        bool failed = false;
        while (index <= limit)
        {
            int o = newOrder;
            if ((index & ((1UL << o) - 1)) != 0)
            {
                o = System.Numerics.BitOperations.TrailingZeroCount(index);
            }

            while (o > 0 && index + (1UL << o) - 1 > limit)
            {
                o--;
            }

            bool marked = index == (mark & ~((1UL << o) - 1)) && index != fault;
            if (!AddReadAheadFolio(cpu, index, o, marked))
            {
                failed = true;
                break;
            }

            index += 1UL << o;
        }

        if (failed && size > index - start && !DoPageCacheRa(cpu, fault, index, size - (index - start), async))
        {
            return false;
        }

        return fault == ulong.MaxValue || EnsurePage(cpu, fault);
    }

    /// <summary>
    /// <c>do_page_cache_ra</c> + <c>page_cache_ra_unbounded</c>: reads the pages of
    /// [<paramref name="index"/>, +<paramref name="count"/>) that are not cached, cut at end of file
    /// first, as order-0 folios; the page <paramref name="async"/> before the cut end gets the
    /// readahead mark if newly read (and not the faulting page <paramref name="fault"/>). Stops at
    /// the first page it has no memory for; returns false if that left the faulting page out.
    /// </summary>
    private bool DoPageCacheRa(int cpu, ulong fault, ulong index, ulong count, ulong async)
    {
        ulong fileEnd = PagesInFile;
        if (index >= fileEnd)
        {
            return true;
        }

        count = Math.Min(count, fileEnd - index);
        ulong mark = async <= count && async > 0 ? index + count - async : ulong.MaxValue;
        for (ulong i = index; i < index + count; i++)
        {
            if (IsCached(i))
            {
                continue;
            }

            if (!AddReadAheadFolio(cpu, i, 0, i == mark && i != fault) && !IsCached(i))
            {
                return fault == ulong.MaxValue || fault < i || fault >= index + count;
            }
        }

        return true;
    }

    /// <summary>The faulting page, read alone if readahead left it out (<c>filemap_fault</c>'s own read). Returns false when no memory was left for it.</summary>
    private bool EnsurePage(int cpu, ulong index)
    {
        if (IsCached(index))
        {
            return true;
        }

        long pfn = GetPage(cpu, index);
        if (pfn < 0)
        {
            return false;
        }

        _phys.PutPage(pfn);
        return true;
    }

    /// <summary>
    /// <c>ra_alloc_folio</c>: a folio of 2^<paramref name="order"/> pages at <paramref name="first"/>,
    /// read in and added to the cache (<c>filemap_add_folio</c>), with the readahead mark when
    /// <paramref name="mark"/>. A PMD-order folio is a real huge page (<see cref="AddLargeFolio"/>);
    /// a smaller large folio is kept as its pages, each a frame of its own, and the cache's note of
    /// where the folio starts and how large it is (the model's frames are either single pages or
    /// huge pages; what a folio's size changes above the page cache is how fault-around maps it).
    /// False when a page of it is cached already (<c>-EEXIST</c>) or no memory was found.
    /// </summary>
    private bool AddReadAheadFolio(int cpu, ulong first, int order, bool mark)
    {
        if (order == PhysMemory.HugeOrder)
        {
            return !AnyCached(first, PhysMemory.HugeFrames) && AddLargeFolio(cpu, first, mark);
        }

        int nr = 1 << order;
        Span<long> frames = nr <= 64 ? stackalloc long[nr] : new long[nr];
        for (int i = 0; i < nr; i++)
        {
            frames[i] = _phys.AllocFrame(cpu);
            if (frames[i] < 0)
            {
                _phys.PutPages(frames[..i].ToArray());
                return false;
            }
        }

        lock (_lock)
        {
            bool raced = false;
            for (int i = 0; i < nr && !raced; i++)
            {
                raced = _pages.ContainsKey(first + (ulong)i);
            }

            if (!raced)
            {
                for (int i = 0; i < nr; i++)
                {
                    FillFromStore(frames[i], first + (ulong)i);
                    AddToPageCache(frames[i], first + (ulong)i);
                    if (mark)
                    {
                        // PG_readahead is a folio flag: every page of a split-frame folio carries it.
                        _phys.Desc(frames[i]).SetFlagsAtomic(PageFlags.Reclaim);
                    }

                    if (nr > 1)
                    {
                        _folioStart[first + (ulong)i] = first;
                    }
                }

                if (nr > 1)
                {
                    _smallFolios[first] = order;
                    _largeFolioCount++;
                }

                Interlocked.Add(ref _readIns, nr);
                return true;
            }
        }

        _phys.PutPages(frames.ToArray());
        return false;
    }

    private bool AnyCached(ulong first, ulong count)
    {
        lock (_lock)
        {
            for (ulong i = first; i < first + count; i++)
            {
                if (_pages.ContainsKey(i))
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>
    /// <c>ra_alloc_folio</c> at PMD order + <c>filemap_add_folio</c> + the read: a PMD-sized folio
    /// for indexes [<paramref name="first"/>, +512), each page filled from the store, the cache
    /// holding one reference per page, on the file LRU list as one entry (reclaim evicts it whole
    /// when nothing maps it: <see cref="TryEvictLarge"/>). Returns false when no aligned free block
    /// was found or a page got cached meanwhile.
    /// </summary>
    private bool AddLargeFolio(int cpu, ulong first, bool readAheadMark)
    {
        long head = _phys.AllocHugeFolio(cpu, directReclaim: false);
        if (head < 0)
        {
            return false;
        }

        lock (_lock)
        {
            bool raced = false;
            for (ulong i = first; i < first + PhysMemory.HugeFrames && !raced; i++)
            {
                raced = _pages.ContainsKey(i);
            }

            if (!raced)
            {
                for (int i = 0; i < PhysMemory.HugeFrames; i++)
                {
                    FillFromStore(head + i, first + (ulong)i);
                    AddToPageCache(head + i, first + (ulong)i);
                }

                // The allocation's reference becomes the first page's cache reference.
                _phys.Desc(head).AddRef(PhysMemory.HugeFrames - 1);
                _largeFolios.Add(first, head);
                _largeFolioCount++;
                _phys.Lru.Add(head, LruList.File); // one entry for the folio, as folio_add_lru
                if (readAheadMark)
                {
                    _phys.Desc(head).SetFlagsAtomic(PageFlags.Reclaim);
                }

                Interlocked.Add(ref _readIns, PhysMemory.HugeFrames);
                return true;
            }
        }

        _phys.PutPage(head);
        return false;
    }

    /// <summary>
    /// The PMD-sized folio holding <paramref name="pfn"/>, cached at <paramref name="index"/>:
    /// its first index and head frame, or null for a single page (or a large folio no longer whole).
    /// </summary>
    internal (ulong First, long Head)? LargeFolioOf(long pfn, ulong index)
    {
        long head = _phys.CompoundHead(pfn);
        if (head == pfn && (_phys.Desc(pfn).Flags & (int)PageFlags.Head) == 0)
        {
            return null;
        }

        ulong first = index - (ulong)(pfn - head);
        lock (_lock)
        {
            return _largeFolios.TryGetValue(first, out long h) && h == head ? (first, head) : null;
        }
    }

    /// <summary>
    /// The large folio holding <paramref name="pfn"/>, cached at <paramref name="index"/>, of any
    /// order: its first index, its pages and its first page's frame (the head of a PMD-sized one);
    /// null for a single page.
    /// </summary>
    internal (ulong First, ulong Pages, long Head)? FolioOf(long pfn, ulong index)
    {
        if (Volatile.Read(ref _largeFolioCount) == 0)
        {
            return null;
        }

        if (LargeFolioOf(pfn, index) is { } large)
        {
            return (large.First, PhysMemory.HugeFrames, large.Head);
        }

        lock (_lock)
        {
            return _folioStart.TryGetValue(index, out ulong first) && _smallFolios.TryGetValue(first, out int order) && _pages.TryGetValue(first, out long head)
                ? (first, 1UL << order, head)
                : null;
        }
    }

    /// <summary>
    /// Clears PG_readahead on the folio of the page <paramref name="pfn"/> cached at
    /// <paramref name="index"/> (every page of a split-frame folio carries it; a huge page keeps it
    /// on its head). Returns whether it was set, and the folio's size in pages.
    /// </summary>
    internal (bool Marked, ulong Pages) ClearReadAhead(long pfn, ulong index)
    {
        if (FolioOf(pfn, index) is not { } folio)
        {
            return ((_phys.Desc(pfn).ClearFlagsAtomic(PageFlags.Reclaim) & PageFlags.Reclaim) != 0, 1);
        }

        if (folio.Pages == PhysMemory.HugeFrames)
        {
            return ((_phys.Desc(folio.Head).ClearFlagsAtomic(PageFlags.Reclaim) & PageFlags.Reclaim) != 0, folio.Pages);
        }

        bool marked = false;
        lock (_lock)
        {
            for (ulong i = folio.First; i < folio.First + folio.Pages; i++)
            {
                if (_pages.TryGetValue(i, out long p))
                {
                    marked |= (_phys.Desc(p).ClearFlagsAtomic(PageFlags.Reclaim) & PageFlags.Reclaim) != 0;
                }
            }
        }

        return (marked, folio.Pages);
    }

    /// <summary>The folios in the cache, in index order: (first index, pages) for each, a single page as a folio of one.</summary>
    public IReadOnlyList<(ulong First, ulong Pages)> Folios()
    {
        var result = new List<(ulong, ulong)>();
        lock (_lock)
        {
            var indexes = _pages.Keys.ToArray();
            Array.Sort(indexes);
            for (int i = 0; i < indexes.Length;)
            {
                ulong index = indexes[i];
                ulong pages = _largeFolios.ContainsKey(index) ? PhysMemory.HugeFrames
                    : _smallFolios.TryGetValue(index, out int order) ? 1UL << order : 1;
                result.Add((index, pages));
                i += (int)pages;
            }
        }

        return result;
    }

    /// <summary>Fault-around mapped <paramref name="pages"/> cached pages: so many hits make up for misses (<c>mmap_miss</c>).</summary>
    internal void FaultAroundHits(FileRaState? ra, int pages)
    {
        ra ??= _sharedRa;
        lock (_lock)
        {
            ra.MmapMiss = Math.Max(0, ra.MmapMiss - pages);
        }
    }

    /// <summary>
    /// Brings the pages of [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>)
    /// below end of file into the page cache, as a <c>read()</c> or <c>write()</c> of them would.
    /// Returns false when memory ran out.
    /// </summary>
    public bool Populate(ulong offset, ulong length)
    {
        ulong first = offset >> PhysMemory.PageShift;
        ulong end = Math.Min(PagesInFile, (offset + length + PhysMemory.PageSize - 1) >> PhysMemory.PageShift);
        for (ulong i = first; i < end; i++)
        {
            long pfn = GetPage(-1, i);
            if (pfn < 0)
            {
                return false;
            }

            _phys.PutPage(pfn);
        }

        return true;
    }

    /// <summary>
    /// Puts the pages [<paramref name="first"/>, +<paramref name="pages"/>) below end of file in the
    /// cache as folios of 2^<paramref name="order"/> pages, uptodate and without the readahead mark:
    /// pages a reader brought in before the model saw the file (a library in use, a file read or
    /// written earlier), with the folio sizes its readahead gave them. A folio is added whole where
    /// it is aligned, lies below end of file and none of its pages is cached yet; otherwise its
    /// missing pages are added as order-0 pages, as they are where no large folio could be
    /// allocated. Orders above PMD order are taken as PMD order. Returns false when memory ran out.
    /// </summary>
    public bool AddCached(ulong first, ulong pages, int order)
    {
        ulong end = Math.Min(PagesInFile, first + pages);
        order = Math.Clamp(order, 0, PhysMemory.HugeOrder);
        if (IsShmem || !LargeFolios)
        {
            order = 0;
        }

        ulong nr = 1UL << order;
        for (ulong index = first; index < end;)
        {
            if (order > 0 && (index & (nr - 1)) == 0 && index + nr <= end && !AnyCached(index, nr) && AddReadAheadFolio(-1, index, order, mark: false))
            {
                index += nr;
                continue;
            }

            ulong stop = order > 0 ? Math.Min(end, (index | (nr - 1)) + 1) : end;
            for (; index < stop; index++)
            {
                if (!EnsurePage(-1, index))
                {
                    return false;
                }
            }
        }

        return true;
    }

    /// <summary>
    /// <c>pwrite</c>: stores <paramref name="data"/> at <paramref name="offset"/> through the page
    /// cache, marking each page dirty. Bytes beyond end of file are refused (the size is fixed).
    /// Returns false when memory ran out.
    /// </summary>
    public bool Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset + (ulong)data.Length > Size || offset + (ulong)data.Length < offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"writing {data.Length} bytes at {offset} goes past the end of a {Size}-byte file");
        }

        while (!data.IsEmpty)
        {
            ulong index = offset >> PhysMemory.PageShift;
            int off = (int)(offset & (PhysMemory.PageSize - 1));
            int n = Math.Min(PhysMemory.PageSize - off, data.Length);
            long pfn = GetPage(-1, index);
            if (pfn < 0)
            {
                return false;
            }

            _phys.Content.Write(pfn, off, data[..n]);
            _phys.Desc(pfn).SetFlagsAtomic(PageFlags.Dirty);
            _phys.PutPage(pfn);
            data = data[n..];
            offset += (ulong)n;
        }

        return true;
    }

    /// <summary>
    /// <c>fsync</c>/<c>fdatasync</c>: writes every dirty cached page back to the file's store; the
    /// pages stay cached, clean. Returns pages written.
    /// </summary>
    public long Sync()
    {
        if (IsShmem)
        {
            return 0;
        }

        long written = 0;
        lock (_lock)
        {
            foreach (var (index, pfn) in _pages)
            {
                if (WriteBack(pfn, index))
                {
                    written++;
                }
            }
        }

        return written;
    }

    /// <summary>
    /// <c>drop_caches</c> (or <c>POSIX_FADV_DONTNEED</c>) for this file: evicts every clean cached
    /// page that no mapping and no one else holds; dirty pages stay until written back
    /// (<see cref="Sync"/>). Shmem pages have nowhere to go and stay. Returns pages freed.
    /// </summary>
    public long DropCache()
    {
        if (IsShmem)
        {
            return 0;
        }

        var doomed = new List<long>();
        lock (_lock)
        {
            foreach (var (first, head) in _largeFolios.ToArray())
            {
                // A large folio goes whole: no page of it mapped or dirty, no reference but the cache's.
                bool busy = Volatile.Read(ref _phys.EntireMapCount(head)) != 0 || _phys.Desc(head).RefCount != PhysMemory.HugeFrames;
                for (int i = 0; i < PhysMemory.HugeFrames && !busy; i++)
                {
                    ref var d = ref _phys.Desc(head + i);
                    busy = d.MapCount != 0 || (d.Flags & (int)PageFlags.Dirty) != 0;
                }

                if (!busy)
                {
                    for (int i = 0; i < PhysMemory.HugeFrames; i++)
                    {
                        DeleteFromPageCache(head + i, first + (ulong)i);
                        doomed.Add(head + i);
                    }
                }
            }

            foreach (var (index, pfn) in _pages.ToArray())
            {
                ref var d = ref _phys.Desc(pfn);
                if ((d.Flags & (int)(PageFlags.Head | PageFlags.Tail)) == 0 && d.MapCount == 0 && d.RefCount == 1 && (d.Flags & (int)PageFlags.Dirty) == 0)
                {
                    DeleteFromPageCache(pfn, index);
                    doomed.Add(pfn);
                }
            }
        }

        return _phys.PutPages(doomed.ToArray());
    }

    /// <summary>
    /// A folio the host removed from this file's cache (<c>filemap_remove_folio</c>, as reported by
    /// <c>mm_filemap_delete_from_page_cache</c>: reclaim, truncation, invalidation by another
    /// process, <c>POSIX_FADV_DONTNEED</c>): the pages of [<paramref name="first"/>, +<paramref name="pages"/>)
    /// leave the model's cache too, a large folio of the model whole where the range holds all of
    /// it. The host removes a folio only once no page table maps it and its data is on disk, so a
    /// dirty page is written back first; a page the model still maps (or holds otherwise), and a
    /// large folio reaching outside the range, stay. Shmem pages have no other copy and stay.
    /// Returns the pages removed and those kept.
    /// </summary>
    public (long Removed, long Kept) Invalidate(ulong first, ulong pages)
    {
        if (IsShmem)
        {
            return (0, 0);
        }

        ulong end = first + pages;
        var doomed = new List<long>();
        long kept = 0;
        lock (_lock)
        {
            for (ulong index = first; index < end; index++)
            {
                if (!_pages.TryGetValue(index, out long pfn))
                {
                    continue;
                }

                ref var d = ref _phys.Desc(pfn);
                if ((d.Flags & (int)(PageFlags.Head | PageFlags.Tail)) != 0)
                {
                    // A PMD-sized folio: removed whole when the range holds it and nothing maps it.
                    long head = _phys.CompoundHead(pfn);
                    ulong start = index - (ulong)(pfn - head);
                    bool busy = start < first || start + PhysMemory.HugeFrames > end
                        || Volatile.Read(ref _phys.EntireMapCount(head)) != 0 || _phys.Desc(head).RefCount != PhysMemory.HugeFrames;
                    for (int i = 0; i < PhysMemory.HugeFrames && !busy; i++)
                    {
                        busy = _phys.Desc(head + i).MapCount != 0;
                    }

                    ulong stop = Math.Min(end, start + PhysMemory.HugeFrames);
                    if (busy)
                    {
                        kept += (long)(stop - index);
                    }
                    else
                    {
                        for (int i = 0; i < PhysMemory.HugeFrames; i++)
                        {
                            WriteBack(head + i, start + (ulong)i);
                            DeleteFromPageCache(head + i, start + (ulong)i);
                            doomed.Add(head + i);
                        }
                    }

                    index = stop - 1;
                    continue;
                }

                if (d.MapCount != 0 || d.RefCount != 1)
                {
                    kept++;
                    continue;
                }

                WriteBack(pfn, index);
                DeleteFromPageCache(pfn, index);
                doomed.Add(pfn);
            }
        }

        _phys.PutPages(doomed.ToArray());
        return (doomed.Count, kept);
    }

    /// <summary>
    /// Reclaim's end of a file page: if it is still cached here, unmapped, and held only by the
    /// cache and by reclaim's isolation, a clean page leaves the cache (<c>__remove_mapping</c>) and
    /// the cache's reference is dropped; a dirty one is written back (<c>pageout</c>) and stays,
    /// clean, for a later pass, as writeback keeps it in the kernel. A shmem page leaves only
    /// clean (its content is the hole's zeros); a dirty one has nowhere to go without swap.
    /// Returns whether it was evicted.
    /// </summary>
    internal bool TryEvict(long pfn)
    {
        bool evicted = false;
        lock (_lock)
        {
            ref var d = ref _phys.Desc(pfn);
            ulong index = d.RmapAddress;
            if (d.RmapOwnerId == _ownerId && _pages.TryGetValue(index, out long cached) && cached == pfn
                && d.MapCount == 0 && d.RefCount == 2
                && !(IsShmem ? (d.Flags & (int)PageFlags.Dirty) != 0 : WriteBack(pfn, index)))
            {
                DeleteFromPageCache(pfn, index);
                evicted = true;
            }
        }

        if (evicted)
        {
            Interlocked.Increment(ref _evicted);
            _phys.PutPage(pfn); // the cache's reference; reclaim drops its isolation reference
        }

        return evicted;
    }

    /// <summary>
    /// Reclaim's end of a PMD-sized folio headed by <paramref name="head"/>: if it is still this
    /// file's, whole in the cache, mapped nowhere (no PMD leaf, no PTE) and held only by the cache
    /// (a reference per page) and reclaim's isolation, all its pages leave the cache together
    /// (<c>__remove_mapping</c> of a large folio) and the cache's references go; dirty pages are
    /// written back first and the folio stays, clean, for a later pass. Every reference is taken
    /// under the cache lock or through a mapping, so the counts checked under the lock cannot
    /// grow before the pages are gone from the cache, after which a racing fault that looked one up
    /// sees under its PTE lock that it was truncated. Returns whether it was evicted.
    /// </summary>
    internal bool TryEvictLarge(long head)
    {
        lock (_lock)
        {
            ref var d = ref _phys.Desc(head);
            ulong first = d.RmapAddress;
            if (d.RmapOwnerId != _ownerId || !_largeFolios.TryGetValue(first, out long cached) || cached != head
                || Volatile.Read(ref _phys.EntireMapCount(head)) != 0 || d.RefCount != PhysMemory.HugeFrames + 1)
            {
                return false;
            }

            bool dirty = false;
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                if (_phys.Desc(head + i).MapCount != 0)
                {
                    return false;
                }

                dirty |= WriteBack(head + i, first + (ulong)i);
            }

            if (dirty)
            {
                return false;
            }

            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                DeleteFromPageCache(head + i, first + (ulong)i);
            }
        }

        Interlocked.Add(ref _evicted, PhysMemory.HugeFrames);
        var refs = new long[PhysMemory.HugeFrames];
        for (int i = 0; i < refs.Length; i++)
        {
            refs[i] = head + i;
        }

        _phys.PutPages(refs); // the cache's references; reclaim drops its isolation reference
        return true;
    }

    /// <summary>
    /// The page-cache half of <c>collapse_file</c> for shmem: the PMD-sized folio headed by
    /// <paramref name="head"/> (its allocation reference held) replaces the pages cached at
    /// [<paramref name="first"/>, +512), each sub-page taking the content of the page it replaces,
    /// and the holes their stored content (zeros: <c>shmem_alloc_and_add_folio</c> is not needed,
    /// the new folio fills them). <paramref name="mapped"/>[i] is the frame the caller's one mapping
    /// maps at index first + i (or -1); every cached page must be held by the cache and that
    /// mapping only (<c>is_refcount_suitable</c> after <c>try_to_unmap</c>). The check and the
    /// replacement are one step under the cache lock, where every lookup and eviction takes its
    /// reference, so a page cannot gain one in between. The folio is dirty (shmem keeps it without
    /// a store) and on no LRU list, as shmem pages in this model; the cache holds one reference per
    /// page and the caller gets one more for its PMD mapping. The replaced frames go to
    /// <paramref name="removed"/>, each still holding the cache's reference for the caller to drop.
    /// </summary>
    internal ShmemCollapseResult CollapseShmemRange(ulong first, long head, ReadOnlySpan<long> mapped, List<long> removed)
    {
        lock (_lock)
        {
            bool any = false;
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                if (!_pages.TryGetValue(first + (ulong)i, out long pfn))
                {
                    if (mapped[i] >= 0)
                    {
                        return ShmemCollapseResult.PageCount; // mapped, but no longer cached
                    }

                    continue;
                }

                any = true;
                ref var d = ref _phys.Desc(pfn);
                int maps = mapped[i] == pfn ? 1 : 0;
                if ((d.Flags & (int)(PageFlags.Head | PageFlags.Tail)) != 0)
                {
                    return ShmemCollapseResult.Compound;
                }

                if (d.MapCount != maps || d.RefCount != 1 + maps || (mapped[i] >= 0 && mapped[i] != pfn))
                {
                    return ShmemCollapseResult.PageCount;
                }
            }

            if (!any)
            {
                return ShmemCollapseResult.Truncated; // nothing cached in the range
            }

            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                ulong index = first + (ulong)i;
                if (_pages.TryGetValue(index, out long pfn))
                {
                    _phys.Content.Copy(pfn, head + i);
                    DeleteFromPageCache(pfn, index);
                    removed.Add(pfn);
                }
                else
                {
                    FillFromStore(head + i, index);
                }

                AddToPageCache(head + i, index);
                _phys.Desc(head + i).SetFlagsAtomic(PageFlags.Dirty);
            }

            _phys.Desc(head).AddRef(PhysMemory.HugeFrames);
            _largeFolios.Add(first, head);
            _largeFolioCount++;
            return ShmemCollapseResult.Succeed;
        }
    }

    /// <summary>The frame caching page <paramref name="index"/>, or -1 (for tests and reports; no reference taken).</summary>
    public long CachedFrame(ulong index)
    {
        lock (_lock)
        {
            return _pages.TryGetValue(index, out long pfn) ? pfn : -1;
        }
    }

    /// <summary>
    /// The page-cache half of a hole punch (<c>shmem_truncate_range</c>,
    /// <c>truncate_inode_pages_range</c>): removes the pages of [<paramref name="first"/>,
    /// <paramref name="end"/>) from the cache and forgets their stored content, so the range reads
    /// as zeros. The cache's references are dropped: a page nobody maps is freed now, one still
    /// mapped when its last mapping goes. Returns the removed frames.
    /// </summary>
    internal List<long> RemovePages(ulong first, ulong end)
    {
        var removed = new List<long>();
        lock (_lock)
        {
            foreach (var (index, pfn) in _pages.ToArray())
            {
                if (index >= first && index < end)
                {
                    DeleteFromPageCache(pfn, index);
                    removed.Add(pfn);
                }
            }

            foreach (ulong index in _storedBytes.Keys.Concat(_storedTokens.Keys).ToArray())
            {
                if (index >= first && index < end)
                {
                    _storedBytes.Remove(index);
                    _storedTokens.Remove(index);
                }
            }
        }

        return removed;
    }

    /// <summary>
    /// <see cref="RemovePages"/> for a short range: each index looked up rather than every cached
    /// page visited. For shmem, whose model folios are single pages.
    /// </summary>
    internal List<long> RemoveShmemPagesIn(ulong first, ulong end)
    {
        if (!IsShmem)
        {
            throw new InvalidOperationException($"{this} is not shmem: its large folios are removed whole (Invalidate)");
        }

        var removed = new List<long>();
        lock (_lock)
        {
            for (ulong index = first; index < end; index++)
            {
                if (_pages.TryGetValue(index, out long pfn))
                {
                    DeleteFromPageCache(pfn, index);
                    removed.Add(pfn);
                }

                _storedBytes.Remove(index);
                _storedTokens.Remove(index);
            }
        }

        return removed;
    }

    /// <summary>
    /// Whether a page table maps any cached page of [<paramref name="first"/>, <paramref name="end"/>)
    /// (its mapcount, or its large folio's entire mapcount): a short range, each index looked up.
    /// </summary>
    internal bool AnyMappedIn(ulong first, ulong end)
    {
        lock (_lock)
        {
            for (ulong index = first; index < end; index++)
            {
                if (_pages.TryGetValue(index, out long pfn) && IsMapped(pfn))
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>Whether a page table maps the frame: its mapcount, or its large folio's entire mapcount.</summary>
    internal bool IsMapped(long pfn) =>
        _phys.Desc(pfn).MapCount != 0
        || ((_phys.Desc(pfn).Flags & (int)(PageFlags.Head | PageFlags.Tail)) != 0 && Volatile.Read(ref _phys.EntireMapCount(_phys.CompoundHead(pfn))) != 0);

    /// <summary>Drops the cache's references on frames <see cref="RemovePages"/> took out.</summary>
    internal void ReleaseRemoved(List<long> removed) => _phys.PutPages(removed.ToArray());

    /// <summary>Links a VMA into <c>i_mmap</c> and takes a file reference for it (<c>vma_link_file</c>, <c>get_file</c>).</summary>
    internal void LinkVma(Vma vma)
    {
        lock (_lock)
        {
            _mmap.Add(vma);
            _users++;
        }
    }

    /// <summary>Unlinks a VMA from <c>i_mmap</c> and drops its file reference (<c>unlink_file_vma</c>, <c>fput</c>).</summary>
    internal void UnlinkVma(Vma vma)
    {
        bool removed;
        lock (_lock)
        {
            removed = _mmap.Remove(vma);
        }

        if (removed)
        {
            Put();
        }
    }

    /// <summary>The VMAs mapping the file, for an rmap walk (<c>rmap_walk_file</c>).</summary>
    internal Vma[] MappingSnapshot()
    {
        lock (_lock)
        {
            return [.. _mmap];
        }
    }

    /// <summary>
    /// Adds to <paramref name="into"/> each address space with a VMA mapping the file that is not
    /// in it or in <paramref name="skip"/> yet: a scan of <c>i_mmap</c>, with no copy of it (a file
    /// can be mapped by thousands of VMAs, as a JIT's double-mapped code file is).
    /// </summary>
    internal void AddMappingAddressSpaces(List<MmStruct> into, List<MmStruct> skip)
    {
        lock (_lock)
        {
            foreach (var v in _mmap)
            {
                if (!into.Contains(v.Mm) && !skip.Contains(v.Mm))
                {
                    into.Add(v.Mm);
                }
            }
        }
    }

    /// <summary>
    /// Adds to <paramref name="into"/> the VMAs of <paramref name="mm"/> that map pages of
    /// [<paramref name="first"/>, <paramref name="end"/>) of the file (<c>vma_interval_tree_foreach</c>,
    /// as a scan of <c>i_mmap</c>).
    /// </summary>
    internal void AddMappingsOf(MmStruct mm, ulong first, ulong end, List<Vma> into)
    {
        lock (_lock)
        {
            foreach (var v in _mmap)
            {
                if (ReferenceEquals(v.Mm, mm) && v.PgOff < end && first < v.PgOff + (v.Length >> PhysMemory.PageShift))
                {
                    into.Add(v);
                }
            }
        }
    }

    /// <summary>Takes a reference, as an open file descriptor holds one (<c>get_file</c>).</summary>
    public void Get()
    {
        lock (_lock)
        {
            _users++;
        }
    }

    /// <summary>
    /// Drops a reference (<c>fput</c>). When the last goes, a shmem file is destroyed and its pages
    /// freed (<c>shmem_evict_inode</c>); a regular file keeps its cache, as an inode stays cached.
    /// </summary>
    public void Put()
    {
        bool last;
        lock (_lock)
        {
            if (_users <= 0)
            {
                throw new InvalidOperationException($"file {Id}: reference count underflow");
            }

            last = --_users == 0;
        }

        if (last && IsShmem)
        {
            ReleaseRemoved(RemovePages(0, ulong.MaxValue));
            Table.Forget(this);
        }
    }

    private void AddToPageCache(long pfn, ulong index)
    {
        ref var d = ref _phys.Desc(pfn);
        // A shmem page is swap-backed (so it counts as RssShmem); a regular file page is not. A
        // page of a large folio keeps its head or tail mark.
        int compound = d.Flags & (int)(PageFlags.Head | PageFlags.Tail);
        d.Flags = (IsShmem ? (int)PageFlags.SwapBacked : 0) | compound;
        d.SetMapCount(0);
        d.RmapAddress = index;
        d.RmapOwnerId = _ownerId;
        _pages.Add(index, pfn);
        if (!IsShmem && compound == 0)
        {
            _phys.Lru.Add(pfn, LruList.File);
        }
    }

    /// <summary>Writes a dirty page back to the store and marks it clean (and no longer under reclaim); returns whether it was dirty.</summary>
    private bool WriteBack(long pfn, ulong index)
    {
        ref var d = ref _phys.Desc(pfn);
        if ((d.Flags & (int)PageFlags.Dirty) == 0)
        {
            return false;
        }

        Store(pfn, index);
        d.ClearFlagsAtomic(PageFlags.Dirty | PageFlags.Reclaim); // folio_end_writeback clears PG_reclaim
        Interlocked.Increment(ref _writebacks);
        return true;
    }

    /// <summary>Takes a page out of the cache (<c>__filemap_remove_folio</c>): it loses its owner, so racing faults back off.</summary>
    private void DeleteFromPageCache(long pfn, ulong index)
    {
        if (_largeFolios.Count > 0 && (_phys.Desc(pfn).Flags & (int)(PageFlags.Head | PageFlags.Tail)) != 0)
        {
            _largeFolios.Remove(index - (ulong)(pfn - _phys.CompoundHead(pfn)));
        }

        if (_folioStart.Count > 0 && _folioStart.TryGetValue(index, out ulong first) && _smallFolios.Remove(first, out int order))
        {
            for (ulong i = first; i < first + (1UL << order); i++)
            {
                _folioStart.Remove(i);
            }
        }

        _pages.Remove(index);
        _phys.Desc(pfn).RmapOwnerId = 0;
    }

    private void FillFromStore(long pfn, ulong index)
    {
        var content = _phys.Content;
        if (content is TokenContentStore tokens)
        {
            tokens.Restore(pfn, _storedTokens.GetValueOrDefault(index));
            return;
        }

        content.Zero(pfn);
        if (_storedBytes.TryGetValue(index, out byte[]? bytes))
        {
            content.Write(pfn, 0, bytes);
        }
    }

    private void Store(long pfn, ulong index)
    {
        var content = _phys.Content;
        if (content.Token(pfn) == 0)
        {
            _storedBytes.Remove(index);
            _storedTokens.Remove(index);
        }
        else if (content.HoldsData)
        {
            var bytes = new byte[PhysMemory.PageSize];
            content.Read(pfn, 0, bytes);
            _storedBytes[index] = bytes;
        }
        else
        {
            _storedTokens[index] = content.Token(pfn);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{(IsShmem ? "shmem" : "file")} {Id} ({Size} bytes)";
}

/// <summary>
/// The machine's files by identity (the inode cache), and the shmem files behind shared
/// anonymous mappings.
/// </summary>
public sealed class FileTable
{
    /// <summary>The device number shmem files get (the internal shm mount).</summary>
    public const ulong ShmemDevice = 0;

    private readonly Dictionary<FileId, SimFile> _files = [];
    private ulong _nextShmemInode = 1;

    internal FileTable(Machine machine) => Machine = machine;

    /// <summary>The machine.</summary>
    public Machine Machine { get; }

    /// <summary>Files known now.</summary>
    public int Count
    {
        get
        {
            lock (_files)
            {
                return _files.Count;
            }
        }
    }

    /// <summary>
    /// The regular file <paramref name="id"/> (<c>iget</c>): the one already known, grown to
    /// <paramref name="size"/> bytes if it was smaller, or a new one of that size with a cold page cache.
    /// </summary>
    public SimFile GetOrCreate(FileId id, ulong size) => GetOrCreate(id, size, shmem: false);

    /// <summary>
    /// <see cref="GetOrCreate(FileId, ulong)"/> for a file that, when new, is a shmem (tmpfs) file
    /// if <paramref name="shmem"/>: one on a tmpfs mount, which lives while a mapping or a
    /// <see cref="SimFile.Get"/> holds it.
    /// </summary>
    public SimFile GetOrCreate(FileId id, ulong size, bool shmem)
    {
        lock (_files)
        {
            if (_files.TryGetValue(id, out var f))
            {
                f.Grow(size);
                return f;
            }

            f = new SimFile(this, id, size, shmem);
            _files.Add(id, f);
            return f;
        }
    }

    /// <summary>
    /// A new shmem file of <paramref name="size"/> bytes (<c>shmem_file_setup</c>: the file behind a
    /// shared anonymous mapping, or a memfd). It lives while a mapping or a <see cref="SimFile.Get"/>
    /// holds it; the caller gets no reference of its own.
    /// </summary>
    public SimFile CreateShmem(ulong size)
    {
        lock (_files)
        {
            var f = new SimFile(this, new FileId(ShmemDevice, _nextShmemInode++), size, shmem: true);
            _files.Add(f.Id, f);
            return f;
        }
    }

    /// <summary>The file with this identity, if known.</summary>
    public SimFile? Find(FileId id)
    {
        lock (_files)
        {
            return _files.GetValueOrDefault(id);
        }
    }

    /// <summary>
    /// <c>sync; echo 1 &gt; drop_caches</c>: writes every regular file's dirty pages back, then
    /// evicts its unmapped pages. Returns pages freed.
    /// </summary>
    public long DropCaches()
    {
        SimFile[] files;
        lock (_files)
        {
            files = [.. _files.Values];
        }

        return files.Sum(f =>
        {
            f.Sync();
            return f.DropCache();
        });
    }

    /// <summary>Pages in every file's page cache.</summary>
    public long CachedPages()
    {
        SimFile[] files;
        lock (_files)
        {
            files = [.. _files.Values];
        }

        return files.Sum(f => f.CachedPages);
    }

    internal void Forget(SimFile file)
    {
        lock (_files)
        {
            _files.Remove(file.Id);
        }
    }
}

/// <summary>What <see cref="SimFile.CollapseShmemRange"/> found.</summary>
internal enum ShmemCollapseResult
{
    /// <summary>The folio replaced the range.</summary>
    Succeed,

    /// <summary>Nothing is cached in the range (<c>SCAN_TRUNCATED</c>).</summary>
    Truncated,

    /// <summary>A page of a large folio is there (<c>SCAN_PAGE_COMPOUND</c>).</summary>
    Compound,

    /// <summary>A page has a reference beyond the cache and the caller's mapping (<c>SCAN_PAGE_COUNT</c>).</summary>
    PageCount,
}
