using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// mm/huge_memory.c: copy_huge_pmd, fork's copy of an anonymous PMD leaf.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>copy_huge_pmd</c>: the child maps the parent's huge page (or the huge zero page) by a PMD
    /// leaf of its own, with a freshly allocated table deposited beside it (VmPTE +4 kB in the child,
    /// as the PTE table a split copy would have), 512 pages of RssAnon, and the folio one more
    /// entire mapping and reference (<c>folio_try_dup_anon_rmap_pmd</c>); the parent's leaf is
    /// write-protected and the child's is a write-protected, old copy, so the first write in either
    /// splits its own PMD and copies one 4 KiB page (<c>do_huge_pmd_wp_page</c>). The folio stays
    /// whole and is shared: the madvise walks leave it alone (<c>folio_maybe_mapped_shared</c>), and a
    /// partial munmap or mprotect splits only the PMD of the address space doing it.
    /// A huge page held by a reference beyond its mappings (a GUP reference: the model does not tell
    /// pins from other references) is not shared: null is returned after the parent's PMD was
    /// split (<c>__split_huge_pmd</c>, -EAGAIN), and the caller copies its PTEs. False when no table
    /// could be allocated for the deposit. Caller holds both <c>mmap_lock</c>s for write.
    /// </summary>
    private bool? CopyHugePmd(Cpu cpu, MmStruct child, Vma src, long pmdTable, int pmdIndex, long childPmd, ulong haddr)
    {
        long pgtable = child.AllocDepositTable(cpu);
        if (pgtable < 0)
        {
            return false;
        }

        child.PmdLock(cpu, childPmd);
        PmdLockNested(cpu, pmdTable);
        ref ulong slot = ref Phys.Table(pmdTable)[pmdIndex];
        ulong pmd = Volatile.Read(ref slot);
        bool shareable = Entry.IsHuge(pmd);
        if (shareable && Entry.Pfn(pmd) != Phys.HugeZeroPfn)
        {
            long head = Entry.Pfn(pmd);
            long mapped = Volatile.Read(ref Phys.EntireMapCount(head));
            for (int i = 0; i < PhysMemory.HugeFrames; i++)
            {
                mapped += Phys.Desc(head + i).MapCount;
            }

            shareable = Phys.Desc(head).RefCount == mapped && !Phys.Desc(head).Has(PageFlags.Mlocked);
            if (shareable)
            {
                Phys.GetPage(head);
                Interlocked.Increment(ref Phys.EntireMapCount(head));
                child.AddRssAnon(cpu, PhysMemory.HugeFrames);
            }
        }

        if (shareable)
        {
            child.Deposit(childPmd, pgtable);
            child.IncTables(1);
            ulong wp;
            while (Interlocked.CompareExchange(ref slot, wp = Entry.WrProtect(pmd), pmd) != pmd)
            {
                pmd = Volatile.Read(ref slot); // pmdp_set_wrprotect: hardware may set A/D meanwhile
            }

            child.SetPmdAt(childPmd, pmdIndex, Entry.MkOld(wp));
        }

        PmdUnlock(cpu, pmdTable);
        child.PmdUnlock(cpu, childPmd);
        if (shareable)
        {
            return true;
        }

        child.FreeUnreachableTable(pgtable);
        SplitHugePmd(cpu, src, pmdTable, pmdIndex, haddr);
        return null;
    }
}
