using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>
/// Page reclaim (<c>mm/vmscan.c</c>): scans the file LRU from its oldest end, discarding clean
/// lazy-free pages and evicting page-cache pages through the reverse map, then, with a swap
/// device, the anonymous LRU, writing pages to swap.
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
    private long _fileEvicted;
    private long _runs;
    private long _thpSwpOut;
    private long _thpSwpOutFallback;

    // One reusable rmap-walk result list per CPU (a CPU runs one reclaim at a time).
    private readonly List<RmapMapping>[] _mappings;

    public Vmscan(Machine machine)
    {
        _machine = machine;
        _mappings = new List<RmapMapping>[machine.Options.Cpus];
        for (int i = 0; i < _mappings.Length; i++)
        {
            _mappings[i] = [];
        }
    }

    /// <summary>Calls of <see cref="Reclaim"/> (kswapd's work and direct reclaim): how often memory ran short.</summary>
    public long Runs => Volatile.Read(ref _runs);

    /// <summary>Lazy-free pages discarded (<c>PGLAZYFREED</c>).</summary>
    public long Discarded => Volatile.Read(ref _discarded);

    /// <summary>Lazy-free pages found dirty again and made swap-backed.</summary>
    public long Redirtied => Volatile.Read(ref _redirtied);

    /// <summary>Huge pages written to swap whole (<c>THP_SWPOUT</c>).</summary>
    public long ThpSwpOut => Volatile.Read(ref _thpSwpOut);

    /// <summary>Huge pages split for swap because no huge swap slot could be had (<c>THP_SWPOUT_FALLBACK</c>).</summary>
    public long ThpSwpOutFallback => Volatile.Read(ref _thpSwpOutFallback);

    /// <summary>Counts a huge page split for swap-out (<c>THP_SWPOUT_FALLBACK</c>).</summary>
    public void CountThpSwpOutFallback() => Interlocked.Increment(ref _thpSwpOutFallback);

    /// <summary>Anonymous pages written to swap (<c>PSWPOUT</c>).</summary>
    public long SwappedOut => Volatile.Read(ref _swappedOut);

    /// <summary>Pages scanned.</summary>
    public long Scanned => Volatile.Read(ref _scanned);

    /// <summary>Pages kept because their entry was young.</summary>
    public long Referenced => Volatile.Read(ref _referenced);

    /// <summary>Page-cache pages evicted.</summary>
    public long FileEvicted => Volatile.Read(ref _fileEvicted);

    /// <summary><c>shrink_inactive_list</c> over the file LRU: tries to free <paramref name="want"/> frames on CPU <paramref name="cpuId"/>.</summary>
    public long Reclaim(int cpuId, long want)
    {
        Interlocked.Increment(ref _runs);
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
            for (int i = 0; i < n; i++)
            {
                ShrinkOne(cpu, isolated[i]);
            }

            // nr_reclaimed: the frames whose last reference was the isolation's. Measuring the
            // free count before and after instead would read another CPU's allocations as no
            // progress and send a faulting CPU to an OOM with lazy-free pages still on the list.
            freed += phys.PutPages(isolated[..n]);
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
            ShrinkOne(cpu, pfn, ignoreReferences: true);
        }

        _machine.Phys.PutPages(pfns);
    }

    /// <summary>
    /// <c>shrink_folio_list</c> for one isolated page: <c>folio_referenced</c> over every mapping
    /// the reverse map finds (any young one keeps the page; skipped for MADV_PAGEOUT), then
    /// <c>try_to_unmap</c> over every mapping. A lazy-free page that is clean everywhere is
    /// discarded; an anonymous page goes to swap; a page-cache page, once no mapping is left,
    /// leaves the cache (written back if dirty).
    /// </summary>
    private void ShrinkOne(Cpu cpu, long pfn, bool ignoreReferences = false)
    {
        var phys = _machine.Phys;
        ref var d = ref phys.Desc(pfn);
        var owner = phys.RmapOwner(pfn);
        bool anon = (d.Flags & (int)PageFlags.Anon) != 0;
        bool huge = d.Has(PageFlags.Head);
        if (owner is null || (anon && !huge && d.MapCount == 0))
        {
            return; // unmapped or truncated meanwhile: dropping the isolation reference frees it
        }

        if (huge && !anon)
        {
            // A PMD-sized page-cache folio: evicted whole when nothing maps it; a mapped one is
            // kept (the model does not unmap file folios for reclaim) and goes back on the list.
            if (owner is SimFile file && file.TryEvictLarge(pfn))
            {
                Interlocked.Add(ref _fileEvicted, PhysMemory.HugeFrames);
            }
            else if (d.RmapOwnerId != 0)
            {
                phys.Lru.Add(pfn, LruList.File);
            }

            return;
        }

        if (huge)
        {
            ShrinkHuge(cpu, pfn);
            return;
        }

        bool lazyFree = anon && (d.Flags & (int)PageFlags.SwapBacked) == 0;
        var list = anon && !lazyFree ? LruList.Anon : LruList.File;
        var mappings = _mappings[cpu.Id];
        MmStruct.RmapWalk(phys, pfn, mappings);
        foreach (var m in ignoreReferences ? [] : mappings)
        {
            if (m.Mm.FolioReferencedOne(cpu, pfn, m.Address))
            {
                Interlocked.Increment(ref _referenced);
                phys.Lru.Add(pfn, list); // FOLIOREF_ACTIVATE/KEEP: another pass later
                return;
            }
        }

        long swapSlot = -1;
        var outcome = UnmapOutcome.NotMapped;
        foreach (var m in mappings)
        {
            outcome = m.Mm.TryToUnmapOne(cpu, pfn, m.Address, ref swapSlot, m.Droppable);
            if (outcome is UnmapOutcome.Busy or UnmapOutcome.Redirtied)
            {
                break; // the walk stops at the first mapping that keeps the page
            }
        }

        if (swapSlot >= 0)
        {
            phys.Swap!.Free(swapSlot); // the page leaves the swap cache: only the entries use the slot now
        }

        if (outcome == UnmapOutcome.Redirtied)
        {
            Interlocked.Increment(ref _redirtied);
            phys.Lru.Add(pfn, LruList.Anon); // folio_putback_lru: swap-backed again
            return;
        }

        if (owner is SimFile { IsShmem: true } shmem)
        {
            // On no LRU list of the model. Unmapped and clean (only ever read), it leaves its file,
            // whose hole reads as zeros again (shmem_recalc_inode counts it freed); a dirty one
            // stays, as shmem_writeout keeps it without swap.
            if (d.MapCount == 0 && shmem.TryEvict(pfn))
            {
                Interlocked.Increment(ref _fileEvicted);
            }

            return;
        }

        if (d.MapCount > 0)
        {
            phys.Lru.Add(pfn, list); // still mapped somewhere: try again later
            return;
        }

        if (!anon)
        {
            if (ignoreReferences && (d.Flags & (int)PageFlags.Dirty) != 0)
            {
                // Outside kswapd a dirty file page is not written back here: it is marked
                // PG_reclaim and activated (shrink_folio_list), left for the flusher.
                d.SetFlagsAtomic(PageFlags.Reclaim);
                phys.Lru.Add(pfn, list);
                return;
            }

            if (owner is SimFile file && file.TryEvict(pfn))
            {
                Interlocked.Increment(ref _fileEvicted);
            }
            else if (d.RmapOwnerId != 0)
            {
                phys.Lru.Add(pfn, list); // held by someone else (a GUP reference): keep it cached
            }

            return;
        }

        if (lazyFree)
        {
            Interlocked.Increment(ref _discarded);
        }
        else if (swapSlot >= 0)
        {
            Interlocked.Increment(ref _swappedOut);
        }
    }

    /// <summary>
    /// <c>shrink_folio_list</c> for an isolated huge page: <c>try_to_unmap</c> of its PMD mapping
    /// (see <see cref="MmStruct.TryToUnmapHugePmd"/>), where the reverse map finds one. One mapped
    /// by the 512 entries of a PTE table is unmapped there whole, not split: a lazy-free one is
    /// discarded (<see cref="MmStruct.TryToUnmapLazyFreeFolioPtes"/>), a swap-backed one written
    /// to one swap cluster (<see cref="MmStruct.TryToUnmapSwapFolioPtes"/>, <c>THP_SWPOUT</c>).
    /// </summary>
    private void ShrinkHuge(Cpu cpu, long head)
    {
        var phys = _machine.Phys;
        ref var d = ref phys.Desc(head);
        bool lazyFree = (d.Flags & (int)PageFlags.SwapBacked) == 0;
        bool pteMapped = Volatile.Read(ref phys.EntireMapCount(head)) == 0;
        var mappings = _mappings[cpu.Id];
        MmStruct.RmapWalk(phys, head, mappings);
        var outcome = UnmapOutcome.NotMapped;
        long firstSlot = -1;
        foreach (var m in mappings)
        {
            outcome = !pteMapped ? m.Mm.TryToUnmapHugePmd(cpu, head, m.Address, m.Droppable)
                : lazyFree ? m.Mm.TryToUnmapLazyFreeFolioPtes(cpu, head, m.Address, m.Droppable)
                : m.Mm.TryToUnmapSwapFolioPtes(cpu, head, m.Address, out firstSlot);
            if (outcome != UnmapOutcome.NotMapped)
            {
                break;
            }
        }

        switch (outcome)
        {
            case UnmapOutcome.SwappedOut:
                for (int i = 0; i < PhysMemory.HugeFrames; i++)
                {
                    phys.Swap!.Free(firstSlot + i); // the folio leaves the swap cache: only the entries use the slots now
                }

                Interlocked.Increment(ref _thpSwpOut);
                Interlocked.Add(ref _swappedOut, PhysMemory.HugeFrames);
                break;
            case UnmapOutcome.Discarded:
                Interlocked.Add(ref _discarded, PhysMemory.HugeFrames); // PGLAZYFREED counts pages
                break;
            case UnmapOutcome.Redirtied:
                Interlocked.Increment(ref _redirtied);
                phys.Lru.Add(head, LruList.Anon); // folio_putback_lru: swap-backed again
                break;
            case UnmapOutcome.Referenced:
                Interlocked.Increment(ref _referenced);
                phys.Lru.Add(head, lazyFree ? LruList.File : LruList.Anon); // FOLIOREF_KEEP: another pass later
                break;
            case UnmapOutcome.Busy:
            case UnmapOutcome.NotMapped when pteMapped: // not whole in one table: kept for now
                phys.Lru.Add(head, lazyFree ? LruList.File : LruList.Anon);
                break;
        }
    }
}

/// <summary>What <c>try_to_unmap_one</c> did with one mapping of a page.</summary>
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
    /// <summary>A page-cache page lost this mapping.</summary>
    Unmapped,
}
