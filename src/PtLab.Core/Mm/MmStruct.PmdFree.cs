using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// Freeing the PMD tables a MADV_DONTNEED left empty (a design's --free-pmd). Upstream frees user
// PMD tables only in free_pgtables; Hildenbrand's page_table_reclaim prototype frees them as here:
// pud_clear under mmap_lock held for write, then the TLB flush and an RCU-deferred free.
//
// The protocol. While it zaps under mmap_lock for read, MADV_DONTNEED notes each PMD table that its
// zap left with every entry none. After it dropped mmap_lock it takes mmap_lock for write and the
// rmap lock for write (as free_pgtables does), so no fault, page walk, zap or reverse-map walk is
// inside any PMD table; then, per noted table, it takes the table's pmd lock and page_table_lock
// (the kernel's lock for pud entries), rechecks that the pud entry still points at that table and
// that all 512 entries are still none (a fault may have filled one between the two lock holds),
// clears the pud (pud_clear), and hands the table to a gather that flushes the TLBs of its whole
// GiB (freed tables: the paging-structure caches go too) and frees it after a grace period
// (tlb_remove_table). The walkers that hold neither lock, GUP-fast and the hardware walker, read
// pud then pmd inside an RCU read section: the table they reached stays allocated until they
// leave it, and it reads all none, since nobody can fill an entry of a table that is unhooked.
// A fault that needs the GiB afterwards finds the pud none and allocates a fresh PMD table under
// page_table_lock.
public sealed partial class MmStruct
{
    // Per CPU: the (PMD table, GiB base) pairs the current madvise call's zaps left empty.
    private List<(long Table, ulong Base)>?[]? _emptiedPmdTables;
    private long _pmdTablesFreedByMadvise;

    /// <summary>PMD tables freed after MADV_DONTNEED left them empty (<c>--free-pmd</c>).</summary>
    public long PmdTablesFreedByMadvise => Volatile.Read(ref _pmdTablesFreedByMadvise);

    /// <summary>
    /// After a MADV_DONTNEED zap of [addr, end) in the GiB of <paramref name="pmdTable"/>: if the
    /// design frees PMD tables and the zap left every entry none, note the table for
    /// <see cref="FreeEmptyPmdTables"/>. <c>mmap_lock</c> is held for read.
    /// </summary>
    private void NoteIfPmdTableEmptied(Cpu cpu, long pmdTable, ulong addr)
    {
        if (Design.FreesPmdTables is null || !PmdTableEmpty(pmdTable, Geometry.Index(addr, 2)))
        {
            return;
        }

        var all = Volatile.Read(ref _emptiedPmdTables)
            ?? Interlocked.CompareExchange(ref _emptiedPmdTables, new List<(long, ulong)>?[Machine.Cpus.Count], null)
            ?? _emptiedPmdTables!;
        var mine = all[cpu.Id] ??= [];
        ulong gib = addr & Geometry.PudMask;
        if (mine.Count == 0 || mine[^1] != (pmdTable, gib))
        {
            mine.Add((pmdTable, gib));
        }
    }

    /// <summary>
    /// Frees the PMD tables the madvise call that just dropped <c>mmap_lock</c> on
    /// <paramref name="cpu"/> left empty, under <c>mmap_lock</c> and the rmap lock held for write.
    /// </summary>
    private void FreeEmptyPmdTables(Cpu cpu)
    {
        var mine = _emptiedPmdTables?[cpu.Id];
        if (mine is not { Count: > 0 } || Design.FreesPmdTables is not { } how)
        {
            return;
        }

        var noted = mine.ToArray();
        mine.Clear();
        MmapLock.DownWrite(cpu.Id);
        RmapLock.DownWrite(cpu.Id);
        var tlb = new MmuGather(this, cpu);
        try
        {
            foreach (var (table, gib) in noted)
            {
                FreeEmptyPmdTable(cpu, tlb, table, gib, how);
            }
        }
        finally
        {
            tlb.Finish();
            RmapLock.UpWrite(cpu.Id);
            MmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary>
    /// <c>pud_clear</c> + <c>pmd_free_tlb</c> of one empty PMD table, if the pud entry for
    /// <paramref name="gib"/> still points at it and it is still empty.
    /// </summary>
    private void FreeEmptyPmdTable(Cpu cpu, MmuGather tlb, long pmdTable, ulong gib, PmdTableFreeing how)
    {
        ulong pgde = Volatile.Read(ref Phys.Table(PgdPfn)[Geometry.Index(gib, 4)]);
        if (Entry.IsNone(pgde))
        {
            return;
        }

        long pudTable = Entry.Pfn(pgde);
        int pudIndex = Geometry.Index(gib, 3);
        if (!PudPointsAt(pudTable, pudIndex, pmdTable))
        {
            return; // freed by another call meanwhile, perhaps replaced by a fresh table in use
        }

        // The pud entry points at the table and mmap_lock is held for write: it stays allocated.
        PmdLock(cpu, pmdTable);
        PageTableLock.Lock(cpu.Id);
        bool free = PudPointsAt(pudTable, pudIndex, pmdTable) && (how.SkipRecheckForTesting || PmdTableEmpty(pmdTable));
        if (free)
        {
            PudClear(pudTable, pudIndex);
        }

        PageTableLock.Unlock(cpu.Id);
        PmdUnlock(cpu, pmdTable);
        if (!free)
        {
            return;
        }

        DecTables(2);
        Interlocked.Increment(ref _pmdTablesFreedByMadvise);
        tlb.AddRange(gib, gib + Geometry.PudSize);
        if (how.SkipRcuForTesting)
        {
            tlb.NoteFreedTable(); // the flush is right; only the grace period is skipped
            tlb.Flush();
            Phys.FreeTable(pmdTable);
            return;
        }

        tlb.RemoveTable(pmdTable);
    }

    private bool PudPointsAt(long pudTable, int pudIndex, long pmdTable)
    {
        ulong pud = Volatile.Read(ref Phys.Table(pudTable)[pudIndex]);
        return !Entry.IsNone(pud) && !Entry.IsHuge(pud) && Entry.Pfn(pud) == pmdTable;
    }

    /// <summary>
    /// Whether every entry of a PMD table is none and it holds no deposited PTE table. The scan
    /// starts at <paramref name="from"/> and wraps: a zap that just emptied that entry most often
    /// finds a neighbour still in use, so the common answer costs a few reads, not 512.
    /// </summary>
    private bool PmdTableEmpty(long pmdTable, int from = 0)
    {
        var entries = Phys.Table(pmdTable);
        for (int n = 0; n < entries.Length; n++)
        {
            if (Volatile.Read(ref entries[(from + n) & (entries.Length - 1)]) != 0)
            {
                return false;
            }
        }

        return !HasDeposits(pmdTable);
    }
}
