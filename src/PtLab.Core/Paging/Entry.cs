using System.Runtime.CompilerServices;

namespace PtLab.Paging;

/// <summary>
/// x86-64 page-table entry encoding, shared by all four levels. Bits: 0 present, 1 writable,
/// 2 user, 5 accessed, 6 dirty, 7 huge (PSE, PMD/PUD only), 9 special (software bit, the zero
/// page), 63 no-execute; frame number in bits 12-51 (12 + 40 = 52 bits of physical address).
/// </summary>
public static class Entry
{
    /// <summary><c>_PAGE_PRESENT</c>.</summary>
    public const ulong Present = 1UL << 0;

    /// <summary><c>_PAGE_RW</c>.</summary>
    public const ulong Writable = 1UL << 1;

    /// <summary><c>_PAGE_USER</c>.</summary>
    public const ulong User = 1UL << 2;

    /// <summary><c>_PAGE_ACCESSED</c>.</summary>
    public const ulong Accessed = 1UL << 5;

    /// <summary><c>_PAGE_DIRTY</c>.</summary>
    public const ulong Dirty = 1UL << 6;

    /// <summary><c>_PAGE_PSE</c>: a huge leaf in a PMD or PUD entry.</summary>
    public const ulong Huge = 1UL << 7;

    /// <summary><c>_PAGE_SPECIAL</c> (software bit 9): a mapping with no struct page refcount, i.e. the zero page.</summary>
    public const ulong Special = 1UL << 9;

    /// <summary><c>_PAGE_NX</c>.</summary>
    public const ulong NoExecute = 1UL << 63;

    /// <summary>Frame number field: bits 12-51.</summary>
    public const ulong PfnMask = ((1UL << 52) - 1) & ~((1UL << 12) - 1);

    /// <summary>Flags a kernel table entry (PGD/PUD/PMD pointing to a lower table) carries: <c>_PAGE_TABLE</c>.</summary>
    public const ulong TableFlags = Present | Writable | User | Accessed | Dirty;

    /// <summary><c>_PAGE_PROTNONE</c> (bit 8, the global bit reused): a PROT_NONE mapping, present to the kernel but not to hardware.</summary>
    public const ulong ProtNone = 1UL << 8;

    // Swap entries as x86-64 encodes them: bits 0 and 8 clear, the type in the top 5 bits and the
    // offset inverted in bits 9-58 (inversion keeps L1TF-safe high bits set and never yields 0).
    private const int SwapTypeBits = 5;
    private const int SwapOffsetShift = 9 + SwapTypeBits;

    /// <summary><c>pte_none</c>: the whole entry is zero.</summary>
    public static bool IsNone(ulong e) => e == 0;

    /// <summary><c>pte_present</c>: present to the kernel, which includes PROT_NONE entries.</summary>
    public static bool IsPresent(ulong e) => (e & (Present | ProtNone)) != 0;

    /// <summary>Present to the hardware walker (bit 0 alone).</summary>
    public static bool IsHwPresent(ulong e) => (e & Present) != 0;

    /// <summary><c>pte_protnone</c>.</summary>
    public static bool IsProtNone(ulong e) => (e & (Present | ProtNone)) == ProtNone;

    /// <summary><c>pte_write</c>.</summary>
    public static bool IsWritable(ulong e) => (e & Writable) != 0;

    /// <summary><c>pte_dirty</c>.</summary>
    public static bool IsDirty(ulong e) => (e & Dirty) != 0;

    /// <summary><c>pte_young</c>.</summary>
    public static bool IsYoung(ulong e) => (e & Accessed) != 0;

    /// <summary><c>pte_special</c>.</summary>
    public static bool IsSpecial(ulong e) => (e & Special) != 0;

    /// <summary>
    /// <c>pmd_leaf</c>/<c>pud_leaf</c>: a huge mapping, present to the kernel (a PROT_NONE huge
    /// pmd keeps PSE and trades the present bit for PROTNONE, and is still a leaf, not a table).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsHuge(ulong e) => (e & Huge) != 0 && (e & (Present | ProtNone)) != 0;

    /// <summary><c>pte_pfn</c>.</summary>
    public static long Pfn(ulong e) => (long)((e & PfnMask) >> 12);

    /// <summary><c>pfn_pte</c>: a present leaf entry.</summary>
    public static ulong MakePte(long pfn, bool writable, bool dirty, bool noExecute = true)
    {
        ulong e = ((ulong)pfn << 12) & PfnMask;
        e |= Present | User | Accessed;
        if (writable)
        {
            e |= Writable;
        }

        if (dirty)
        {
            e |= Dirty;
        }

        if (noExecute)
        {
            e |= NoExecute;
        }

        return e;
    }

    /// <summary>A PMD leaf mapping the 2 MiB huge page at <paramref name="headPfn"/> (<c>folio_mk_pmd</c>).</summary>
    public static ulong MakeHugePmd(long headPfn, bool writable, bool dirty, bool noExecute = true) =>
        MakePte(headPfn, writable, dirty, noExecute) | Huge;

    /// <summary>The 4 KiB translation a PMD leaf gives for <paramref name="va"/>: its flags, the sub-frame's number.</summary>
    public static ulong HugeSubPte(ulong pmd, ulong va) =>
        (pmd & ~(PfnMask | Huge)) | ((ulong)(Pfn(pmd) + Geometry.PteIndex(va)) << 12);

    /// <summary>The zero-page entry: present, read-only, special (<c>pte_mkspecial(pfn_pte(my_zero_pfn))</c>).</summary>
    public static ulong MakeZeroPagePte(long zeroPfn) => MakePte(zeroPfn, writable: false, dirty: false) | Special;

    /// <summary>An entry pointing to a lower-level table (<c>pmd_populate</c> and friends).</summary>
    public static ulong MakeTable(long pfn) => (((ulong)pfn << 12) & PfnMask) | TableFlags;

    /// <summary><c>pte_mkclean</c>.</summary>
    public static ulong MkClean(ulong e) => e & ~Dirty;

    /// <summary><c>pte_mkold</c>.</summary>
    public static ulong MkOld(ulong e) => e & ~Accessed;

    /// <summary><c>pte_wrprotect</c>.</summary>
    public static ulong WrProtect(ulong e) => e & ~Writable;

    /// <summary><c>pte_mkwrite</c>.</summary>
    public static ulong MkWrite(ulong e) => e | Writable;

    /// <summary><c>pte_mkdirty</c>.</summary>
    public static ulong MkDirty(ulong e) => e | Dirty;

    /// <summary><c>is_swap_pte</c>: neither none nor present.</summary>
    public static bool IsSwap(ulong e) => e != 0 && !IsPresent(e);

    /// <summary><c>swp_entry_to_pte(swp_entry(type, offset))</c>.</summary>
    public static ulong MakeSwap(int type, long offset)
    {
        if ((uint)type >= 1u << SwapTypeBits || offset < 0 || offset >= 1L << 50)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"swap entry {type}:{offset} does not fit");
        }

        return ((~(ulong)offset << SwapOffsetShift) >> SwapTypeBits) | ((ulong)type << (64 - SwapTypeBits));
    }

    /// <summary>
    /// <c>SWP_PTE_MARKER</c>: the swap type of PTE markers, the highest of the 32 types on x86-64
    /// (below it sit device, migration and hwpoison entries, below those the swap files).
    /// </summary>
    public const int SwpPteMarker = (1 << SwapTypeBits) - 1;

    /// <summary><c>PTE_MARKER_GUARD</c>: the marker bit of a guard region, in the swap offset.</summary>
    public const long PteMarkerGuard = 1L << 2;

    /// <summary>
    /// <c>make_pte_marker(PTE_MARKER_GUARD)</c>: the entry <c>MADV_GUARD_INSTALL</c> stores. Not
    /// present and not none; a fault on it is SIGSEGV, and only an unmap or <c>MADV_GUARD_REMOVE</c>
    /// clears it.
    /// </summary>
    public static readonly ulong GuardMarker = MakeSwap(SwpPteMarker, PteMarkerGuard);

    /// <summary><c>is_guard_pte_marker</c>.</summary>
    public static bool IsGuardMarker(ulong e) => e == GuardMarker;

    /// <summary>
    /// A genuine swap entry (<c>is_swap_pte</c> and <c>!non_swap_entry</c>): a slot on the swap
    /// device, as opposed to a marker.
    /// </summary>
    public static bool IsSwapSlot(ulong e) => IsSwap(e) && SwapType(e) != SwpPteMarker;

    /// <summary><c>swp_type</c>.</summary>
    public static int SwapType(ulong e) => (int)(e >> (64 - SwapTypeBits));

    /// <summary><c>swp_offset</c>.</summary>
    public static long SwapOffset(ulong e) => (long)((~e << SwapTypeBits) >> SwapOffsetShift);
}

/// <summary>Geometry of 4-level paging: 9 bits per level, 9 * 4 + 12 = 48-bit virtual addresses.</summary>
public static class Geometry
{
    /// <summary><c>PMD_SHIFT</c>: a PTE table maps 2 MiB.</summary>
    public const int PmdShift = 21;

    /// <summary><c>PUD_SHIFT</c>: a PMD table maps 1 GiB.</summary>
    public const int PudShift = 30;

    /// <summary><c>PGDIR_SHIFT</c>: a PUD table maps 512 GiB.</summary>
    public const int PgdirShift = 39;

    /// <summary><c>PMD_SIZE</c>.</summary>
    public const ulong PmdSize = 1UL << PmdShift;

    /// <summary><c>PUD_SIZE</c>.</summary>
    public const ulong PudSize = 1UL << PudShift;

    /// <summary><c>PGDIR_SIZE</c>.</summary>
    public const ulong PgdirSize = 1UL << PgdirShift;

    /// <summary><c>PMD_MASK</c>.</summary>
    public const ulong PmdMask = ~(PmdSize - 1);

    /// <summary><c>PUD_MASK</c>.</summary>
    public const ulong PudMask = ~(PudSize - 1);

    /// <summary><c>PGDIR_MASK</c>.</summary>
    public const ulong PgdirMask = ~(PgdirSize - 1);

    /// <summary><c>TASK_SIZE_MAX</c> for 4-level paging: the first address above user space.</summary>
    public const ulong TaskSize = 0x7FFF_FFFF_F000UL;

    /// <summary><c>PAGE_SIZE</c>.</summary>
    public const ulong PageSize = 4096;

    /// <summary><c>PAGE_MASK</c>.</summary>
    public const ulong PageMask = ~(PageSize - 1);

    /// <summary><c>PAGE_ALIGN</c>: <paramref name="len"/> rounded up to a whole page (wraps past 2^64 as the kernel's does).</summary>
    public static ulong PageAlign(ulong len) => (len + PageSize - 1) & PageMask;

    /// <summary>Index of <paramref name="va"/> in the table of <paramref name="level"/> (1 PTE .. 4 PGD).</summary>
    public static int Index(ulong va, int level) => (int)((va >> (12 + (9 * (level - 1)))) & 511);

    /// <summary><c>pte_index</c>.</summary>
    public static int PteIndex(ulong va) => (int)((va >> 12) & 511);

    /// <summary><c>pmd_addr_end</c>: the end of the PMD range holding <paramref name="addr"/>, capped at <paramref name="end"/>.</summary>
    public static ulong PmdAddrEnd(ulong addr, ulong end) => AddrEnd(addr, end, PmdSize);

    /// <summary><c>pud_addr_end</c>.</summary>
    public static ulong PudAddrEnd(ulong addr, ulong end) => AddrEnd(addr, end, PudSize);

    /// <summary><c>pgd_addr_end</c>.</summary>
    public static ulong PgdAddrEnd(ulong addr, ulong end) => AddrEnd(addr, end, PgdirSize);

    private static ulong AddrEnd(ulong addr, ulong end, ulong size)
    {
        ulong boundary = (addr + size) & ~(size - 1);
        // The "- 1" keeps a boundary that wraps to 0 at the top of the address space correct.
        return boundary - 1 < end - 1 ? boundary : end;
    }
}
