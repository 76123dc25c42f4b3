using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

public sealed partial class MmStruct
{
    /// <summary>
    /// <c>unmap_page_range</c>: clears every entry in [start, end) of <paramref name="vma"/> and
    /// gathers the pages. Tables stay; the design may free emptied PTE tables afterwards.
    /// </summary>
    internal void UnmapPageRange(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, ZapReason reason)
    {
        MmapLock.AssertHeld(cpu.Id);
        ulong addr = start;
        while (addr < end)
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            long pmdTable = PmdTableOf(addr);
            if (pmdTable >= 0)
            {
                long freedBefore = Volatile.Read(ref _tablesFreed[1]);
                ZapPmdRange(cpu, tlb, vma, pmdTable, addr, next, reason);
                if (reason == ZapReason.DontNeed && Volatile.Read(ref _tablesFreed[1]) != freedBefore)
                {
                    NoteIfPmdTableEmptied(cpu, pmdTable, addr); // a PTE table went: the GiB may be empty now
                }
            }

            addr = next;
        }
    }

    /// <summary><c>zap_pmd_range</c>.</summary>
    private void ZapPmdRange(Cpu cpu, MmuGather tlb, Vma vma, long pmdTable, ulong addr, ulong end, ZapReason reason)
    {
        var pmds = Phys.Table(pmdTable);
        while (addr < end)
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            int pmdIndex = Geometry.Index(addr, 2);
            if (Entry.IsHuge(Volatile.Read(ref pmds[pmdIndex])))
            {
                // A leaf the zap covers whole goes at once (zap_huge_pmd); part of one is split first.
                if (next - addr == Geometry.PmdSize && ZapHugePmd(cpu, tlb, pmdTable, pmdIndex, addr, (vma.Flags & VmFlags.Locked) != 0))
                {
                    addr = next;
                    continue;
                }

                SplitHugePmd(cpu, vma, pmdTable, pmdIndex, addr & Geometry.PmdMask);
            }

            if (!Entry.IsNone(Volatile.Read(ref pmds[pmdIndex])))
            {
                ZapPteRange(cpu, tlb, new ZapInfo(pmdTable, pmdIndex, addr, next, reason), (vma.Flags & VmFlags.Locked) != 0);
                if (tlb.ShouldFlush)
                {
                    tlb.Flush();
                }
            }

            addr = next;
        }
    }

    /// <summary>
    /// <c>zap_pte_range</c>: clears the entries of one PTE table in [zap.Start, zap.End), gathers
    /// the pages, and lets the design free the table: under the PTE lock (the pt-reclaim fast
    /// path) and after it (everything else). A page unmapped from a <c>VM_LOCKED</c> VMA
    /// (<paramref name="vmaLocked"/>) is munlocked (<c>folio_remove_rmap_ptes</c> ->
    /// <c>munlock_vma_folio</c>).
    /// </summary>
    private void ZapPteRange(Cpu cpu, MmuGather tlb, ZapInfo zap, bool vmaLocked)
    {
        var pteTable = PteOffsetMapLock(cpu, zap.PmdTable, zap.PmdIndex);
        if (pteTable.IsNone)
        {
            return;
        }

        var entries = Phys.Table(pteTable);
        long anon = 0, file = 0, shmem = 0, swap = 0;
        bool skipped = false;
        // unmap_mapping_range's zap (even_cows false) leaves private copies alone; such a zap is
        // never one after which a design frees the table (see ZapInfo).
        bool keepCows = zap.Reason == ZapReason.Truncate;
        for (ulong addr = zap.Start; addr < zap.End; addr += Geometry.PageSize)
        {
            int i = Geometry.PteIndex(addr);
            int stored = entries.NextStored(i);
            if (stored != i)
            {
                // A group of entries the table does not store: all none, as a read of each would
                // find; the loop's step lands on the next group.
                addr += (ulong)(stored - i - 1) * Geometry.PageSize;
                continue;
            }

            // Under the PTE lock: through the CPU's table cache (see PtepGetAndClearLocked).
            ulong e = Volatile.Read(ref Phys.CachedEntry(cpu.TableCache, 1, pteTable, i));
            if (Entry.IsNone(e))
            {
                continue;
            }

            if (Entry.IsPresent(e))
            {
                if (keepCows && !Entry.IsSpecial(e) && IsAnonPage(Entry.Pfn(e)))
                {
                    skipped = true;
                    continue;
                }

                e = PtepGetAndClearLocked(cpu, pteTable, i);
                tlb.RemoveTlbEntry(addr);
                if (Entry.IsSpecial(e))
                {
                    continue; // the zero page: no rmap, no RSS
                }

                long pfn = Entry.Pfn(e);
                ref var d = ref Phys.Desc(pfn);
                var counter = (d.Flags & (int)PageFlags.Tail) != 0 ? CounterOf(pfn) : CounterOf(ref d); // the folio's type, from its head

                // zap_present_folio_ptes: only a file folio takes the entry's dirty bit (it must be
                // written back); an anonymous one is dropped or stays mapped elsewhere, where its
                // own entries keep their dirty bits.
                if (counter != MmCounter.Anon && Entry.IsDirty(e))
                {
                    d.SetFlagsAtomic(PageFlags.Dirty);
                }

                if (d.AddMap(-1) < 0)
                {
                    throw new BadPageException($"mapcount underflow on frame {pfn:x} at 0x{addr:x}");
                }

                if (vmaLocked)
                {
                    MunlockVmaFolio(pfn);
                }

                switch (counter)
                {
                    case MmCounter.Anon: anon++; break;
                    case MmCounter.File: file++; break;
                    default: shmem++; break;
                }

                tlb.RemovePage(pfn);
                continue;
            }

            if (Entry.IsGuardMarker(e))
            {
                // zap_nonpresent_ptes: only an unmap (ZAP_FLAG_DROP_MARKER) clears a guard marker;
                // any other zap leaves it, and a table with an entry left is not reclaimed.
                if (zap.Reason == ZapReason.Unmap)
                {
                    PteClear(cpu, pteTable, i);
                }
                else
                {
                    skipped = true;
                }

                continue;
            }

            if (keepCows)
            {
                skipped = true;
                continue; // a swapped-out private copy
            }

            // Swap entries: drop the slot and the counter.
            PteClear(cpu, pteTable, i);
            swap++;
            FreeSwapEntry(e);
        }

        zap = zap with { AnySkipped = skipped };
        bool unhooked = Design.ZapPteTableLocked(this, cpu, zap, pteTable);
        PteUnmapUnlock(cpu, pteTable);
        AddRssAnon(cpu, -anon);
        AddRss(cpu, MmCounter.File, -file);
        AddRss(cpu, MmCounter.Shmem, -shmem);
        AddSwapEnts(cpu, -swap);
        Design.AfterZapPteTable(this, cpu, zap, pteTable, unhooked, tlb);
    }

    /// <summary><c>free_swap_and_cache</c>: the entry's slot is no longer needed.</summary>
    private void FreeSwapEntry(ulong entry) =>
        (Phys.Swap ?? throw new BadSwapEntryException($"swap entry {entry:x} found, but no swap device is configured"))
            .Free(Entry.SwapOffset(entry));

    /// <summary>
    /// <c>free_pgtables</c>: frees the tables of the detached VMAs, grouping VMAs less than a PMD
    /// apart into one <c>free_pgd_range</c> call, as the kernel does.
    /// </summary>
    private void FreePgtables(MmuGather tlb, List<Vma> vmas, ulong floor, ulong ceiling)
    {
        // Nobody may fault a table in or walk one through the rmap while they go.
        if (tlb.Cpu is { } cpu)
        {
            MmapLock.AssertWriteHeld(cpu.Id);
            RmapLock.AssertWriteHeld(cpu.Id);
        }

        int i = 0;
        while (i < vmas.Count)
        {
            ulong addr = vmas[i].Start;
            int j = i;
            while (j + 1 < vmas.Count && vmas[j + 1].Start <= vmas[j].End + Geometry.PmdSize)
            {
                j++;
            }

            ulong groupCeiling = j + 1 < vmas.Count ? vmas[j + 1].Start : ceiling;
            FreePgdRange(tlb, addr, vmas[j].End, floor, groupCeiling);
            i = j + 1;
        }
    }

    /// <summary>
    /// <c>free_pgd_range</c>: frees the tables that map only [addr, end), keeping any table that
    /// also maps below <paramref name="floor"/> or at/above <paramref name="ceiling"/> (0 = no
    /// ceiling). All arithmetic is unsigned, as in the kernel.
    /// </summary>
    internal void FreePgdRange(MmuGather tlb, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        addr &= Geometry.PmdMask;
        if (addr < floor)
        {
            addr += Geometry.PmdSize;
            if (addr == 0)
            {
                return;
            }
        }

        if (ceiling != 0)
        {
            ceiling &= Geometry.PmdMask;
            if (ceiling == 0)
            {
                return;
            }
        }

        if (end - 1 > ceiling - 1)
        {
            end -= Geometry.PmdSize;
        }

        if (addr > end - 1)
        {
            return;
        }

        var pgd = Phys.Table(PgdPfn);
        do
        {
            ulong next = Geometry.PgdAddrEnd(addr, end);
            int i = Geometry.Index(addr, 4);
            if (!Entry.IsNone(Volatile.Read(ref pgd[i])))
            {
                FreePudRange(tlb, PgdPfn, i, addr, next, floor, ceiling);
            }

            addr = next;
        }
        while (addr != end);
    }

    /// <summary><c>free_p4d_range</c>/<c>free_pud_range</c> (P4D is folded on 4-level x86).</summary>
    private void FreePudRange(MmuGather tlb, long pgdTable, int pgdIndex, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        ulong start = addr;
        long pudTable = Entry.Pfn(Volatile.Read(ref Phys.Table(pgdTable)[pgdIndex]));
        var puds = Phys.Table(pudTable);
        do
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            int i = Geometry.Index(addr, 3);
            if (!Entry.IsNone(Volatile.Read(ref puds[i])))
            {
                FreePmdRange(tlb, pudTable, i, addr, next, floor, ceiling);
            }

            addr = next;
        }
        while (addr != end);

        if (!UpperTableFreeable(start, end, floor, ceiling, Geometry.PgdirMask))
        {
            return;
        }

        P4dClear(pgdTable, pgdIndex);
        DecTables(3);
        TableFreeTlbRange(tlb, start & Geometry.PgdirMask);
        tlb.RemoveTable(pudTable);
    }

    /// <summary><c>free_pmd_range</c>: frees each PTE table below, then the PMD table if wholly inside.</summary>
    private void FreePmdRange(MmuGather tlb, long pudTable, int pudIndex, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        ulong start = addr;
        long pmdTable = Entry.Pfn(Volatile.Read(ref Phys.Table(pudTable)[pudIndex]));
        var pmds = Phys.Table(pmdTable);
        do
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            int i = Geometry.Index(addr, 2);
            ulong pmd = Volatile.Read(ref pmds[i]);
            if (Entry.IsHuge(pmd))
            {
                throw new InvalidOperationException($"free_pgtables found a huge pmd {pmd:x} at 0x{addr:x}: the zap before it left a leaf");
            }

            if (!Entry.IsNone(pmd))
            {
                // free_pte_range: pmd_clear, then pte_free_tlb.
                FreePteTable(tlb, pmdTable, i, addr);
            }

            addr = next;
        }
        while (addr != end);

        if (!UpperTableFreeable(start, end, floor, ceiling, Geometry.PudMask))
        {
            return;
        }

        if (HasDeposits(pmdTable))
        {
            throw new InvalidOperationException($"freeing PMD table {pmdTable:x}, which still holds a deposited PTE table");
        }

        PudClear(pudTable, pudIndex);
        DecTables(2);
        TableFreeTlbRange(tlb, start & Geometry.PudMask);
        tlb.RemoveTable(pmdTable);
    }

    /// <summary>
    /// <c>free_pte_range</c>: unhooks one PTE table from its pmd entry and hands it to the gather,
    /// under <c>free_pgtables</c>' locks.
    /// </summary>
    private void FreePteTable(MmuGather tlb, long pmdTable, int pmdIndex, ulong addr)
    {
        long pteTable = Entry.Pfn(Volatile.Read(ref Phys.Table(pmdTable)[pmdIndex]));
        PmdClear(pmdTable, pmdIndex);
        PteFreeTlb(tlb, pteTable, addr);
    }

    /// <summary>
    /// <c>pte_free_tlb</c> + <c>mm_dec_nr_ptes</c> for a PTE table already unhooked from its pmd:
    /// account it, widen the gather's flush to its 2 MiB, and let the gather free it after the
    /// flush and a grace period.
    /// </summary>
    internal void PteFreeTlb(MmuGather tlb, long pteTable, ulong addr)
    {
        DecTables(1);
        if (!SkipTableFlushForTesting)
        {
            tlb.AddRange(addr & Geometry.PmdMask, (addr & Geometry.PmdMask) + Geometry.PmdSize);
        }

        Design.PteTableDtor(this, pteTable);
        tlb.RemoveTable(pteTable);
    }

    /// <summary>
    /// <c>pmd_free_tlb</c>/<c>pud_free_tlb</c>'s <c>tlb_flush_pud_range</c>/<c>tlb_flush_p4d_range</c>:
    /// one page of the freed table's span joins the flush, so the paging-structure cache entries
    /// that point at the table go with it.
    /// </summary>
    private void TableFreeTlbRange(MmuGather tlb, ulong addr)
    {
        if (!SkipTableFlushForTesting)
        {
            tlb.AddRange(addr, addr + Geometry.PageSize);
        }
    }

    /// <summary>Mutation: <c>tlb_flush_mmu</c> frees the gathered pages without flushing the TLBs first.</summary>
    public bool SkipGatherFlushForTesting { get; set; }

    /// <summary>
    /// Mutation: a table is freed without the flush that drops the paging-structure caches: the
    /// gather's flush stays last-level (no <c>freed_tables</c>, no range for the table), and a
    /// design's own free (<c>free_user_pte</c>) skips its <c>flush_tlb_range</c>.
    /// </summary>
    public bool SkipTableFlushForTesting { get; set; }

    /// <summary>The first address mapped by entry <paramref name="pmdIndex"/> of a PMD table.</summary>
    internal ulong PmdBase(long pmdTable, int pmdIndex) =>
        Phys.Desc(pmdTable).RmapAddress + ((ulong)pmdIndex << Geometry.PmdShift);

    /// <summary>The floor/ceiling test at the end of <c>free_pmd_range</c> and <c>free_pud_range</c>.</summary>
    private static bool UpperTableFreeable(ulong start, ulong end, ulong floor, ulong ceiling, ulong mask)
    {
        start &= mask;
        if (start < floor)
        {
            return false;
        }

        if (ceiling != 0)
        {
            ceiling &= mask;
            if (ceiling == 0)
            {
                return false;
            }
        }

        return end - 1 <= ceiling - 1;
    }
}
