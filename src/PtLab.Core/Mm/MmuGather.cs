namespace PtLab.Mm;

/// <summary>
/// <c>struct mmu_gather</c>: collects the range whose TLB entries must go, the pages to free once
/// they have, and the tables to free after the flush and an RCU grace period
/// (<c>MMU_GATHER_RCU_TABLE_FREE</c>, which x86 uses so that lockless walkers stay safe).
/// </summary>
public sealed class MmuGather
{
    private const int FlushBatch = 4096;

    private readonly MmStruct _mm;
    private readonly Cpu? _cpu;
    private List<long>? _pages;
    private List<long>? _tables;
    private ulong _start = ulong.MaxValue;
    private ulong _end;
    private bool _freedTables;

    internal MmuGather(MmStruct mm, Cpu? cpu)
    {
        _mm = mm;
        _cpu = cpu;
        // The page batch is the CPU's spare one where it has one (the kernel's gather batches on
        // its stack): a zap per madvise would otherwise grow a fresh list to its size each time.
        // The exchange hands it to this gather alone; Finish gives it back empty.
        _pages = (cpu is null ? null : Interlocked.Exchange(ref cpu.SpareGatherPages, null)) ?? [];
    }

    /// <summary>The CPU the gather runs on (<c>tlb-&gt;mm</c>'s current CPU), or null.</summary>
    internal Cpu? Cpu => _cpu;

    /// <summary><c>tlb_remove_tlb_entry</c>: the page's translation must be flushed.</summary>
    internal void RemoveTlbEntry(ulong addr)
    {
        if (addr < _start)
        {
            _start = addr;
        }

        if (addr + 4096 > _end)
        {
            _end = addr + 4096;
        }
    }

    /// <summary>Widens the flush range (<c>tlb_flush_pmd_range</c> for freed tables).</summary>
    internal void AddRange(ulong start, ulong end)
    {
        _start = Math.Min(_start, start);
        _end = Math.Max(_end, end);
    }

    /// <summary><c>__tlb_remove_page</c>: the page's mapping reference is dropped after the flush.</summary>
    internal void RemovePage(long pfn) => (_pages ?? throw Finished()).Add(pfn);

    /// <summary>
    /// <c>tlb_remove_table</c> with <c>tlb-&gt;freed_tables</c> set: the table page is freed after a
    /// flush that also drops the paging-structure caches, and a grace period.
    /// </summary>
    internal void RemoveTable(long pfn)
    {
        (_tables ??= []).Add(pfn);
        NoteFreedTable();
    }

    /// <summary>Sets <c>tlb-&gt;freed_tables</c>: the next flush drops the paging-structure caches too.</summary>
    internal void NoteFreedTable() => _freedTables |= !_mm.SkipTableFlushForTesting;

    /// <summary>Whether enough pages are batched that the caller should flush (outside its PTE lock).</summary>
    internal bool ShouldFlush => _pages is { Count: >= FlushBatch };

    /// <summary><c>tlb_flush_mmu</c>: flush, then free what was gathered.</summary>
    internal void Flush()
    {
        if (_end > _start && !_mm.SkipGatherFlushForTesting)
        {
            _mm.TlbFlushMmu(_cpu, _start, _end, _freedTables);
        }

        _start = ulong.MaxValue;
        _end = 0;
        _freedTables = false;
        if (_pages is { Count: > 0 })
        {
            _mm.ReleasePages(_cpu, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_pages));
            _pages.Clear();
        }

        if (_tables is { Count: > 0 })
        {
            var tables = _tables.ToArray();
            _tables.Clear();
            var phys = _mm.Phys;
            _mm.Rcu.CallRcu(() =>
            {
                foreach (long t in tables)
                {
                    phys.FreeTable(t);
                }
            });
        }
    }

    /// <summary><c>tlb_finish_mmu</c>: the last flush; the gather takes no more pages after it.</summary>
    internal void Finish()
    {
        Flush();
        if (_pages is { } pages && _cpu is not null)
        {
            _pages = null;
            Volatile.Write(ref _cpu.SpareGatherPages, pages);
        }
    }

    private static InvalidOperationException Finished() => new("mmu_gather: a page was added after tlb_finish_mmu");
}
