using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>
/// Page reclaim (<c>mm/vmscan.c</c>): scans the file LRU from its oldest end and discards clean
/// lazy-free pages through the reverse map. No swap device is modelled, so swap-backed anonymous
/// pages are never reclaimed, as on a machine without swap.
/// </summary>
internal sealed class Vmscan
{
    private const int Batch = 32; // SWAP_CLUSTER_MAX

    private readonly Machine _machine;
    private long _scanned;
    private long _discarded;
    private long _redirtied;
    private long _referenced;
    private long _swappedOut;

    public Vmscan(Machine machine) => _machine = machine;

    /// <summary>Lazy-free pages discarded (<c>PGLAZYFREED</c>).</summary>
    public long Discarded => Volatile.Read(ref _discarded);

    /// <summary>Lazy-free pages found dirty again and made swap-backed.</summary>
    public long Redirtied => Volatile.Read(ref _redirtied);

    /// <summary>Anonymous pages written to swap (<c>PSWPOUT</c>).</summary>
    public long SwappedOut => Volatile.Read(ref _swappedOut);

    /// <summary>Pages scanned.</summary>
    public long Scanned => Volatile.Read(ref _scanned);

    /// <summary>Pages kept because their entry was young.</summary>
    public long Referenced => Volatile.Read(ref _referenced);

    /// <summary><c>shrink_inactive_list</c> over the file LRU: tries to free <paramref name="want"/> frames on CPU <paramref name="cpuId"/>.</summary>
    public long Reclaim(int cpuId, long want)
    {
        var phys = _machine.Phys;
        var cpu = _machine.Cpus[cpuId];
        Span<long> isolated = stackalloc long[Batch];
        long freed = 0;
        long budget = Math.Max(want * 4, Batch); // give up after scanning this many pages
        // Lazy-free pages first (they cost nothing to drop), then, with swap, anonymous pages.
        var list = LruList.File;
        while (freed < want && budget > 0)
        {
            int n = phys.Lru.IsolateTail(list, isolated);
            if (n == 0)
            {
                if (list == LruList.File && phys.Swap is not null)
                {
                    list = LruList.Anon;
                    continue;
                }

                break;
            }

            budget -= n;
            Interlocked.Add(ref _scanned, n);
            long before = phys.FreeFrames;
            for (int i = 0; i < n; i++)
            {
                ShrinkOne(cpu, isolated[i]);
            }

            phys.PutPages(isolated[..n]); // the isolation references
            freed += Math.Max(0, phys.FreeFrames - before);
        }

        return freed;
    }

    /// <summary>
    /// <c>reclaim_pages</c> (MADV_PAGEOUT): runs isolated pages through <c>shrink_folio_list</c>
    /// without the referenced check, then drops the isolation references.
    /// </summary>
    public void ReclaimIsolated(Cpu cpu, ReadOnlySpan<long> pfns)
    {
        Interlocked.Add(ref _scanned, pfns.Length);
        foreach (long pfn in pfns)
        {
            ShrinkOne(cpu, pfn);
        }

        _machine.Phys.PutPages(pfns);
    }

    /// <summary><c>shrink_folio_list</c> for one isolated page.</summary>
    private void ShrinkOne(Cpu cpu, long pfn)
    {
        var phys = _machine.Phys;
        ref var d = ref phys.Desc(pfn);
        if (d.RmapOwner is not MmStruct mm || (Volatile.Read(ref d.MapCount) == 0 && Volatile.Read(ref d.EntireMapCount) == 0 && !d.Has(PageFlags.Head)))
        {
            return; // unmapped meanwhile: dropping the isolation reference frees it
        }

        bool lazyFree = (d.Flags & (int)PageFlags.SwapBacked) == 0;
        var outcome = d.Has(PageFlags.Head)
            ? mm.TryToUnmapHugePmd(cpu, pfn, d.RmapAddress)
            : mm.TryToUnmapOne(cpu, pfn, d.RmapAddress);
        switch (outcome)
        {
            case UnmapOutcome.SwappedOut:
                Interlocked.Increment(ref _swappedOut);
                break;
            case UnmapOutcome.Discarded:
                Interlocked.Increment(ref _discarded);
                break;
            case UnmapOutcome.Redirtied:
                Interlocked.Increment(ref _redirtied);
                phys.Lru.Add(pfn, LruList.Anon); // folio_putback_lru: swap-backed again
                break;
            case UnmapOutcome.Referenced:
                Interlocked.Increment(ref _referenced);
                phys.Lru.Add(pfn, lazyFree ? LruList.File : LruList.Anon); // FOLIOREF_KEEP: another pass later
                break;
            case UnmapOutcome.Busy:
                phys.Lru.Add(pfn, lazyFree ? LruList.File : LruList.Anon);
                break;
            case UnmapOutcome.NotMapped:
                break;
        }
    }
}

/// <summary>What <c>try_to_unmap_one</c> did with a lazy-free page.</summary>
internal enum UnmapOutcome
{
    /// <summary>Clean: the entry was cleared and the page can go.</summary>
    Discarded,
    /// <summary>Written since MADV_FREE: the entry was restored and the page made swap-backed.</summary>
    Redirtied,
    /// <summary>Accessed since MADV_FREE: the young bit was cleared and the page kept for now.</summary>
    Referenced,
    /// <summary>The address space was busy tearing down tables, or swap was full; try later.</summary>
    Busy,
    /// <summary>Written to swap; a swap entry replaced the page's entry.</summary>
    SwappedOut,
    /// <summary>No entry maps the page there any more.</summary>
    NotMapped,
}
