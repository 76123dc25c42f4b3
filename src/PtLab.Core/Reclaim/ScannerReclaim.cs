using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Reclaim;

/// <summary>What one scan of an address space, or one pass of the scanner over a machine, did.</summary>
/// <param name="Scanned">PTE tables whose entries the lockless scan read.</param>
/// <param name="Hinted">Tables skipped because their "scanned, nothing to free" hint was still set.</param>
/// <param name="Delayed">Empty tables left for a later pass because they were emptied too recently.</param>
/// <param name="Raced">Candidates the locked recheck found changed (pmd no longer the same, or an entry back).</param>
/// <param name="Freed">Tables unhooked and handed to the gather.</param>
/// <param name="Skipped">Address spaces passed over because their <c>mmap_lock</c> was busy or they were exiting.</param>
public readonly record struct ScanStats(long Scanned, long Hinted, long Delayed, long Raced, long Freed, long Skipped)
{
    /// <summary>The sum of two scans.</summary>
    public static ScanStats operator +(ScanStats a, ScanStats b) =>
        new(a.Scanned + b.Scanned, a.Hinted + b.Hinted, a.Delayed + b.Delayed, a.Raced + b.Raced, a.Freed + b.Freed, a.Skipped + b.Skipped);
}

/// <summary>
/// The <c>scanner</c> design: David Hildenbrand's asynchronous page-table reclaim (linux-mm,
/// 2021-22, prototype branch <c>page_table_reclaim</c>, <c>mm/pgtable_reclaim.c</c>), with Qi
/// Zheng's per-mm ranking. Nothing is counted on the fault path: a background scanner (a kernel
/// thread like khugepaged, <see cref="Kscand"/>) walks an address space's PTE tables without
/// their locks, under RCU as upstream's walkers do, and frees the empty and zero-page-only ones
/// after taking <c>mmap_lock</c> for read, the pmd lock and the PTE lock and rechecking.
/// </summary>
/// <remarks>
/// <para>
/// Zaps keep upstream's <c>CONFIG_PT_RECLAIM</c> rule (a MADV_DONTNEED covering a whole empty table
/// frees it), so the scanner adds to what a kernel ships today: the tables that no single zap
/// covers whole, the tables of MADV_FREE pages that reclaim emptied, and zero-page-only tables.
/// </para>
/// <para>
/// One scan of a table: <c>pte_offset_map</c> (RCU read section), read the 512 entries, leave.
/// If every entry is none or the zero page, take the pmd lock and check that the pmd still points
/// at the table that was scanned (<c>pmd_same</c>: a concurrent zap may have freed it, and a fault
/// installed another); holding the pmd lock keeps the table hooked and alive, so take its PTE lock
/// and recheck every entry (a fault may have repopulated it since the lockless read). Then clear the
/// zero-page entries and the pmd, and hand the table to the scan's gather, which flushes the TLBs
/// for its 2 MiB and frees it after a grace period, as <c>pte_free_tlb</c> does for every design
/// that follows upstream's walker protocol.
/// </para>
/// <para>
/// A table keeps a hint: "scanned, nothing to free". Every set or clear of one of its entries
/// (under its PTE lock) clears it, by bumping the table's modification count past the count the
/// scan saw, so a table nobody touched since its last fruitless scan is not read again. A table
/// also remembers the scan pass during which it was last modified; one modified within the last
/// <see cref="ScanDelay"/> passes is left for a later pass (memory given back is often reused at
/// once). Each address space counts its candidate tables (an entry cleared, or a zero-page entry
/// set, since the table's last scan); the scanner visits the address space with the most first.
/// </para>
/// <para>
/// Triggers: memory pressure (page reclaim ran since the last scan: the model's kswapd work at the
/// low watermark, or direct reclaim), seen at the end of the next madvise of the address space,
/// which scans it there under the <c>mmap_lock</c> it already holds for read; every
/// <see cref="ScanPeriod"/> madvise calls when that is set; and <see cref="Kscand.Pass"/>, the
/// scanner thread's pass over every address space of a machine, which the systematic tester runs on
/// a CPU of its own and a measured run when its workload goes idle.
/// </para>
/// </remarks>
public sealed class ScannerReclaim : UpstreamWalkerReclaim, IExplicitTableReclaim
{
    // Upstream's zap-time rule, which this design keeps.
    private readonly PtReclaim _zapRule = new();
    private long _pass;
    private long _candidates;
    private long _madviseCalls;
    private long _reclaimRunsSeen;
    private long _scanned;
    private long _hinted;
    private long _delayed;
    private long _raced;
    private long _freed;

    /// <inheritdoc/>
    public override string Name => "scanner";

    /// <summary>Passes a table must go unmodified before a scan frees it; 0 frees any table not modified during the current pass.</summary>
    public int ScanDelay { get; init; }

    /// <summary>Scan the address space every this many madvise calls; 0 for no periodic scan (pressure and idle passes only).</summary>
    public int ScanPeriod { get; init; }

    /// <summary>Test-only mutation: free on what the lockless scan saw, without rechecking the table under the PTE lock.</summary>
    internal bool SkipScanRecheckForTesting { get; init; }

    /// <summary>Test-only mutation: lock and free the scanned table without checking that the pmd still points at it.</summary>
    internal bool SkipScanPmdSameForTesting { get; init; }

    /// <summary>Tables with an entry cleared, or a zero-page entry set, since their last scan: this address space's rank.</summary>
    public long Candidates => Volatile.Read(ref _candidates);

    /// <summary>Scans of this address space so far.</summary>
    public long Passes => Volatile.Read(ref _pass);

    /// <summary>Everything the scans of this address space did.</summary>
    public ScanStats Totals => new(
        Volatile.Read(ref _scanned), Volatile.Read(ref _hinted), Volatile.Read(ref _delayed), Volatile.Read(ref _raced), Volatile.Read(ref _freed), 0);

    /// <summary>Tables the zap-time rule freed (upstream's fast and slow paths).</summary>
    public long ZapFrees => _zapRule.FastPathFrees + _zapRule.SlowPathFrees;

    /// <summary>A new table: never scanned, no hint.</summary>
    public override void PteTableCtor(MmStruct mm, Cpu cpu, long pteTable) =>
        mm.Phys.SetTableState(pteTable, new TableHint { ModifiedPass = Volatile.Read(ref _pass) });

    /// <summary>A table leaves: it is no longer a candidate.</summary>
    public override void PteTableDtor(MmStruct mm, long pteTable)
    {
        if (mm.Phys.TableState(pteTable) is TableHint h && Interlocked.Exchange(ref h.Candidate, 0) == 1)
        {
            Interlocked.Decrement(ref _candidates);
        }
    }

    /// <inheritdoc/>
    public override bool TracksEntries => true;

    /// <summary>Clears the table's hint, under its PTE lock; a zero-page entry makes it a candidate.</summary>
    public override void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry) =>
        Modified(mm, cpu, pteTable, candidate: IsZeroPage(newEntry) || Entry.IsNone(newEntry));

    /// <summary>Clears the table's hint, under its PTE lock, and makes it a candidate.</summary>
    public override void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry) =>
        Modified(mm, cpu, pteTable, candidate: !Entry.IsNone(oldEntry));

    /// <summary>Upstream's fast path: a whole-table DONTNEED of an empty table unhooks it under the PTE lock.</summary>
    public override bool ZapPteTableLocked(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable) => _zapRule.ZapPteTableLocked(mm, cpu, zap, pteTable);

    /// <summary>Upstream's free of the unhooked table through the gather, or its locked slow path.</summary>
    public override void AfterZapPteTable(MmStruct mm, Cpu cpu, in ZapInfo zap, TableRef pteTable, bool unhooked, MmuGather tlb) =>
        _zapRule.AfterZapPteTable(mm, cpu, zap, pteTable, unhooked, tlb);

    /// <summary>
    /// The end of a madvise call, <c>mmap_lock</c> held for read: scan this address space if page
    /// reclaim ran since the last scan (memory pressure), or if <see cref="ScanPeriod"/> calls went by.
    /// </summary>
    public override void AfterMadvise(MmStruct mm, Cpu cpu)
    {
        long calls = Interlocked.Increment(ref _madviseCalls);
        long runs = mm.Machine.Vmscan.Runs;
        bool pressure = runs != Volatile.Read(ref _reclaimRunsSeen);
        if (pressure || (ScanPeriod > 0 && calls % ScanPeriod == 0))
        {
            Volatile.Write(ref _reclaimRunsSeen, runs);
            ScanLocked(mm, cpu);
        }
    }

    /// <summary>MADV_PT_RECLAIM: the scanner's locked check and free, for one table, at once (no delay, no hint).</summary>
    public bool ReclaimPteTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, MmuGather tlb)
    {
        var t = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (t.IsNone)
        {
            return false;
        }

        PteUnmap(mm, cpu, t);
        return FreeLocked(mm, cpu, pmdTable, pmdIndex, t, tlb, pass: long.MaxValue, delay: 0) == Outcome.Freed;
    }

    /// <summary>
    /// One scan of <paramref name="mm"/>, whose <c>mmap_lock</c> the caller holds for read: every
    /// PTE table under its VMAs whose hint is not set is read without locks, and the empty and
    /// zero-page-only ones old enough are freed after the locked recheck, through one gather.
    /// </summary>
    public ScanStats ScanLocked(MmStruct mm, Cpu cpu)
    {
        mm.MmapLock.AssertHeld(cpu.Id);
        long pass = Interlocked.Increment(ref _pass);
        var stats = default(ScanStats);
        var tlb = new MmuGather(mm, cpu);
        try
        {
            ulong done = 0; // the end of the last 2 MiB scanned: VMAs sharing a table see it once
            foreach (var vma in mm.Vmas)
            {
                for (ulong addr = Math.Max(vma.Start & Geometry.PmdMask, done); addr < vma.End; addr += Geometry.PmdSize)
                {
                    done = addr + Geometry.PmdSize;
                    long pmdTable = mm.PmdTableOf(addr);
                    if (pmdTable >= 0)
                    {
                        stats += ScanTable(mm, cpu, pmdTable, Geometry.Index(addr, 2), pass, tlb);
                    }
                }
            }
        }
        finally
        {
            tlb.Finish();
        }

        Interlocked.Add(ref _scanned, stats.Scanned);
        Interlocked.Add(ref _hinted, stats.Hinted);
        Interlocked.Add(ref _delayed, stats.Delayed);
        Interlocked.Add(ref _raced, stats.Raced);
        Interlocked.Add(ref _freed, stats.Freed);
        return stats;
    }

    private ScanStats ScanTable(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, long pass, MmuGather tlb)
    {
        // The lockless part: under RCU the table cannot be freed while it is read.
        var t = PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        if (t.IsNone)
        {
            return default;
        }

        var hint = mm.Phys.TableState(t.Pfn) as TableHint;
        long seen = hint is null ? 0 : Volatile.Read(ref hint.Modifications);
        if (hint is not null && Volatile.Read(ref hint.ScannedAt) == seen)
        {
            PteUnmap(mm, cpu, t);
            return new(0, 1, 0, 0, 0, 0);
        }

        if (hint is not null && Interlocked.Exchange(ref hint.Candidate, 0) == 1)
        {
            Interlocked.Decrement(ref _candidates);
        }

        mm.Machine.Sync.Scheduler?.Reached(PtLab.Sync.SchedulingPointKind.EntryLoad, t.Pfn);
        bool freeable = OnlyNoneOrZeroPage(mm.Phys.Table(t));
        long modifiedPass = hint is null ? 0 : Volatile.Read(ref hint.ModifiedPass);
        PteUnmap(mm, cpu, t);
        if (!freeable)
        {
            // The hint holds while the modifications stay at the count read before the scan: a set
            // or clear during the scan has already moved them on, and so left the hint clear.
            if (hint is not null)
            {
                Volatile.Write(ref hint.ScannedAt, seen);
            }

            return new(1, 0, 0, 0, 0, 0);
        }

        var outcome = OldEnough(pass, modifiedPass, ScanDelay) ? FreeLocked(mm, cpu, pmdTable, pmdIndex, t, tlb, pass, ScanDelay) : Outcome.Delayed;
        if (outcome == Outcome.Delayed && hint is not null)
        {
            MarkCandidate(hint); // still one: a later pass frees it
        }

        return outcome switch
        {
            Outcome.Freed => new(1, 0, 0, 0, 1, 0),
            Outcome.Delayed => new(1, 0, 1, 0, 0, 0),
            _ => new(1, 0, 0, 1, 0, 0),
        };
    }

    /// <summary>
    /// The locked part: the pmd lock, <c>pmd_same</c> against the table scanned, the PTE lock, the
    /// recheck of every entry and of the table's age; then the zero-page entries and the pmd are
    /// cleared and the table goes to the gather.
    /// </summary>
    private Outcome FreeLocked(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef scanned, MmuGather tlb, long pass, int delay)
    {
        mm.PmdLock(cpu, pmdTable);
        ulong pmd = Volatile.Read(ref mm.Phys.Table(pmdTable)[pmdIndex]);
        if (!SkipScanPmdSameForTesting && (Entry.IsNone(pmd) || Entry.IsHuge(pmd) || Entry.Pfn(pmd) != scanned.Pfn || !mm.Phys.IsLive(scanned)))
        {
            mm.PmdUnlock(cpu, pmdTable);
            return Outcome.Raced;
        }

        // The pmd lock keeps the table hooked, and so alive, while it is held.
        mm.PtlLock(cpu, scanned.Pfn);
        var outcome = Outcome.Freed;
        if (!SkipScanRecheckForTesting)
        {
            var hint = mm.Phys.TableState(scanned.Pfn) as TableHint;
            if (!OnlyNoneOrZeroPage(mm.Phys.Table(scanned)))
            {
                outcome = Outcome.Raced;
            }
            else if (hint is not null && !OldEnough(pass, hint.ModifiedPass, delay))
            {
                outcome = Outcome.Delayed;
            }
        }

        if (outcome == Outcome.Freed)
        {
            ClearZeroPageEntries(mm, cpu, scanned);
            mm.PmdClear(pmdTable, pmdIndex);
        }

        mm.PtlUnlock(cpu, scanned.Pfn);
        mm.PmdUnlock(cpu, pmdTable);
        if (outcome == Outcome.Freed)
        {
            mm.PteFreeTlb(tlb, scanned.Pfn, mm.PmdBase(pmdTable, pmdIndex));
        }

        return outcome;
    }

    // Modified during pass m, freed at pass p only when p - m > delay: never during the pass that modified it.
    private static bool OldEnough(long pass, long modifiedPass, int delay) => pass - modifiedPass > delay;

    private void Modified(MmStruct mm, Cpu cpu, TableRef pteTable, bool candidate)
    {
        mm.AssertPtlHeld(cpu, pteTable.Pfn);
        if (mm.Phys.TableState(pteTable.Pfn) is not TableHint h)
        {
            return;
        }

        Volatile.Write(ref h.Modifications, h.Modifications + 1); // under the PTE lock: one writer
        Volatile.Write(ref h.ModifiedPass, Volatile.Read(ref _pass));
        if (candidate)
        {
            MarkCandidate(h);
        }
    }

    private void MarkCandidate(TableHint h)
    {
        if (Volatile.Read(ref h.Candidate) == 0 && Interlocked.Exchange(ref h.Candidate, 1) == 0)
        {
            Interlocked.Increment(ref _candidates);
        }
    }

    private static bool IsZeroPage(ulong e) => Entry.IsPresent(e) && Entry.IsSpecial(e);

    private static bool OnlyNoneOrZeroPage(TableEntries entries)
    {
        for (int i = entries.NextStored(0); i < entries.Length; i = entries.NextStored(i + 1))
        {
            ulong e = Volatile.Read(ref entries[i]);
            if (e != 0 && !IsZeroPage(e))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Clears a table's zero-page entries before it is unhooked, PTE lock held; they hold no page and no RSS.</summary>
    private static void ClearZeroPageEntries(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        var entries = mm.Phys.Table(pteTable);
        for (int i = entries.NextStored(0); i < entries.Length; i = entries.NextStored(i + 1))
        {
            if (Volatile.Read(ref entries[i]) != 0)
            {
                mm.PtepGetAndClear(cpu, pteTable, i);
            }
        }
    }

    private enum Outcome
    {
        Freed,
        Raced,
        Delayed,
    }

    /// <summary>The per-table hint, kept in the table's descriptor as the prototype keeps its bit in the table's struct page.</summary>
    private sealed class TableHint
    {
        // Bumped by every set and clear, under the PTE lock.
        public long Modifications;

        // Modifications when a scan last found nothing to free: the hint is set while the two are equal.
        public long ScannedAt = -1;

        // The address space's scan pass current at the last modification.
        public long ModifiedPass;

        // 1 while the table counts among the address space's candidates.
        public int Candidate;

        public override string ToString() => $"modifications {Modifications}, scanned at {ScannedAt}, modified in pass {ModifiedPass}, candidate {Candidate}";
    }
}

/// <summary>
/// The scanner's kernel thread (like khugepaged): one pass visits every address space of a machine
/// that runs the <c>scanner</c> design, the one with the most candidate tables first (Qi Zheng's
/// ranking), taking each one's <c>mmap_lock</c> for read with a trylock (a busy address space is
/// left for the next pass, as khugepaged does) and skipping one that is exiting.
/// </summary>
public static class Kscand
{
    /// <summary>Runs one pass on <paramref name="cpu"/>, which must hold no lock; returns what it did.</summary>
    public static ScanStats Pass(Machine machine, Cpu cpu)
    {
        ArgumentNullException.ThrowIfNull(machine);
        ArgumentNullException.ThrowIfNull(cpu);
        var stats = default(ScanStats);
        foreach (var mm in Ranked(machine))
        {
            var scanner = (ScannerReclaim)mm.Design;
            if (!mm.MmapLock.TryDownRead(cpu.Id))
            {
                stats += new ScanStats(0, 0, 0, 0, 0, 1);
                continue;
            }

            try
            {
                stats += mm.IsDead ? new ScanStats(0, 0, 0, 0, 0, 1) : scanner.ScanLocked(mm, cpu);
            }
            finally
            {
                mm.MmapLock.UpRead(cpu.Id);
            }
        }

        machine.Rcu.Poll(); // let the deferred frees run, as the RCU softirq would soon after
        return stats;
    }

    /// <summary>The address spaces a pass visits, in its order: most candidate tables first.</summary>
    public static IReadOnlyList<MmStruct> Ranked(Machine machine)
    {
        ArgumentNullException.ThrowIfNull(machine);
        return [.. machine.AddressSpaces.Where(mm => mm.Design is ScannerReclaim).OrderByDescending(mm => ((ScannerReclaim)mm.Design).Candidates)];
    }
}
