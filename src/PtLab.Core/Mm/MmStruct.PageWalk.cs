using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

/// <summary>What the generic page walker reports for one page.</summary>
/// <param name="Address">The page's address.</param>
/// <param name="Entry">The PTE (0 when none or no table); under a huge pmd, the 4 KiB entry it stands for.</param>
/// <param name="MappedByPmd">Whether a huge pmd maps the page.</param>
public readonly record struct WalkedPage(ulong Address, ulong Entry, bool MappedByPmd = false);

/// <summary>The <c>/proc/PID/smaps</c> figures of one VMA, in kB.</summary>
/// <param name="Start">VMA start.</param>
/// <param name="End">VMA end.</param>
/// <param name="Flags">The rwxp column.</param>
/// <param name="SizeKb">Size.</param>
/// <param name="RssKb">Resident pages (present, not the zero page).</param>
/// <param name="AnonymousKb">Anonymous resident pages.</param>
/// <param name="LazyFreeKb">Pages marked by MADV_FREE and still clean.</param>
/// <param name="SwapKb">Swap entries.</param>
public readonly record struct SmapsEntry(ulong Start, ulong End, string Flags, long SizeKb, long RssKb, long AnonymousKb, long LazyFreeKb, long SwapKb)
{
    /// <summary>AnonHugePages: anonymous memory mapped by huge pmds, in kB.</summary>
    public long AnonHugePagesKb { get; init; }

    /// <summary>ShmemPmdMapped: shmem mapped by huge pmds, in kB.</summary>
    public long ShmemPmdMappedKb { get; init; }
}

public sealed partial class MmStruct
{
    /// <summary>
    /// <c>walk_page_range</c>: visits every PTE table covering [start, end) under <c>mmap_lock</c>
    /// for read, mapping each through the design's <c>pte_offset_map_lock</c> (a failed map is
    /// treated like <c>pmd_none</c>: the range is a hole), and calls <paramref name="visit"/> for each
    /// page with its entry, under the PTE lock.
    /// </summary>
    public void WalkPageRange(Cpu cpu, ulong start, ulong end, Action<WalkedPage> visit)
    {
        MmapLock.DownRead(cpu.Id);
        try
        {
            WalkPageRangeLocked(cpu, start, end, visit);
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }
    }

    /// <summary>
    /// <see cref="WalkPageRange"/> for a caller that holds <c>mmap_lock</c> (for read or write).
    /// With <paramref name="skipHoles"/> (a walk with no <c>pte_hole</c> callback), pages no table
    /// covers are not visited and a missing PMD table is stepped over whole, so a walk over a large
    /// empty range costs one step per gigabyte.
    /// </summary>
    internal void WalkPageRangeLocked(Cpu cpu, ulong start, ulong end, Action<WalkedPage> visit, bool skipHoles = false)
    {
        for (ulong addr = start; addr < end;)
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            long pmdTable = PmdTableOf(addr);
            if (pmdTable < 0 && skipHoles)
            {
                addr = Geometry.PudAddrEnd(addr, end);
                continue;
            }

            if (pmdTable >= 0 && PmdTransHugeLock(cpu, pmdTable, Geometry.Index(addr, 2), out ulong pmd))
            {
                // A huge leaf: each 4 KiB it maps, seen as the entry that would map it (the
                // huge zero page's as special, like the small zero page's).
                ulong special = Entry.Pfn(pmd) == Phys.HugeZeroPfn ? Entry.Special : 0;
                try
                {
                    for (ulong va = addr; va < next; va += Geometry.PageSize)
                    {
                        visit(new WalkedPage(va, Entry.HugeSubPte(pmd, va) | special, MappedByPmd: true));
                    }
                }
                finally
                {
                    PmdUnlock(cpu, pmdTable);
                }

                addr = next;
                continue;
            }

            var pteTable = pmdTable < 0 ? TableRef.None : PteOffsetMapLock(cpu, pmdTable, Geometry.Index(addr, 2));
            if (pteTable.IsNone)
            {
                for (ulong va = addr; va < next && !skipHoles; va += Geometry.PageSize)
                {
                    visit(new WalkedPage(va, 0)); // pte_hole
                }
            }
            else
            {
                try
                {
                    var entries = Phys.Table(pteTable);
                    for (ulong va = addr; va < next; va += Geometry.PageSize)
                    {
                        visit(new WalkedPage(va, Volatile.Read(ref entries[Geometry.PteIndex(va)])));
                    }
                }
                finally
                {
                    PteUnmapUnlock(cpu, pteTable);
                }
            }

            addr = next;
        }
    }

    /// <summary>
    /// <c>mincore(addr, length, vec)</c>: one byte per page, 1 when a present entry maps it (the zero
    /// page included). EINVAL for an unaligned start, ENOMEM when part of the range is unmapped.
    /// </summary>
    public Errno Mincore(Cpu cpu, ulong addr, ulong length, Span<byte> vec)
    {
        if ((addr & ~Geometry.PageMask) != 0)
        {
            return Errno.EINVAL;
        }

        ulong pages = (length + Geometry.PageSize - 1) >> 12;
        if (length != 0 && pages == 0)
        {
            return Errno.ENOMEM;
        }

        if ((ulong)vec.Length < pages)
        {
            return Errno.EFAULT;
        }

        ulong end = addr + (pages << 12);
        MmapLock.DownRead(cpu.Id);
        try
        {
            // mincore refuses any hole in the range.
            for (ulong a = addr; a < end;)
            {
                var vma = FindVma(a);
                if (vma is null || vma.Start > a)
                {
                    return Errno.ENOMEM;
                }

                a = vma.End;
            }
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }

        var result = new byte[pages];
        var none = new bool[pages];
        WalkPageRange(cpu, addr, end, p =>
        {
            result[(p.Address - addr) >> 12] = Entry.IsPresent(p.Entry) ? (byte)1 : (byte)0;
            // pte_none_mostly: a guard marker reads as a hole, for which the page cache answers.
            none[(p.Address - addr) >> 12] = Entry.IsNone(p.Entry) || Entry.IsGuardMarker(p.Entry);
        });

        // mincore_page: where a file mapping maps nothing, the page cache says whether it is resident.
        foreach (var vma in Vmas)
        {
            if (vma.File is not { } file || vma.End <= addr || vma.Start >= end)
            {
                continue;
            }

            for (ulong a = Math.Max(vma.Start, addr); a < Math.Min(vma.End, end); a += Geometry.PageSize)
            {
                if (none[(a - addr) >> 12] && file.IsCached(vma.LinearPageIndex(a)))
                {
                    result[(a - addr) >> 12] = 1;
                }
            }
        }

        result.CopyTo(vec);
        return Errno.None;
    }

    /// <summary>
    /// <c>/proc/PID/pagemap</c> entries for [start, end): bit 63 present, bit 62 swapped, bit 61
    /// file/shared (a page-cache page), bit 58 guard region, bit 56 exclusively mapped, bits 0-54
    /// the frame number (or swap type and offset; a guard marker reads as swapped, type
    /// <c>SWP_PTE_MARKER</c>, offset <c>PTE_MARKER_GUARD</c>).
    /// </summary>
    public ulong[] Pagemap(Cpu cpu, ulong start, ulong end)
    {
        var result = new ulong[(end - start) >> 12];
        WalkPageRange(cpu, start, end, p =>
        {
            ulong e = p.Entry, v = 0;
            if (Entry.IsPresent(e))
            {
                v = PagemapBits.Present | ((ulong)Entry.Pfn(e) & PagemapBits.PfnMask);
                // Exclusively mapped: once by a PTE, or a huge page mapped once by a pmd.
                if (!Entry.IsSpecial(e) && (p.MappedByPmd ? Volatile.Read(ref Phys.EntireMapCount(Phys.CompoundHead(Entry.Pfn(e)))) : Phys.Desc(Entry.Pfn(e)).MapCount) == 1)
                {
                    v |= PagemapBits.Exclusive;
                }

                if (!Entry.IsSpecial(e) && !IsAnonPage(Entry.Pfn(e)))
                {
                    v |= PagemapBits.File;
                }
            }
            else if (Entry.IsSwap(e))
            {
                v = PagemapBits.Swapped | (uint)Entry.SwapType(e) | ((ulong)Entry.SwapOffset(e) << 5);
                if (Entry.IsGuardMarker(e))
                {
                    v |= PagemapBits.GuardRegion;
                }
            }

            result[(p.Address - start) >> 12] = v;
        });
        return result;
    }

    /// <summary>
    /// The smaps <c>Referenced</c> figure summed over the private anonymous VMAs that lie wholly in
    /// [start, end), in kB, counting the pages mapped by a young entry (<c>smaps_pte_entry</c> and
    /// <c>smaps_pmd_entry</c>; the zero page is not counted). The kernel's figure also counts
    /// folios with <c>PG_referenced</c>, which the model does not keep: the two agree where that
    /// flag was just cleared, as after MADV_COLD or MADV_PAGEOUT of the range. Walks only the
    /// tables that exist.
    /// </summary>
    public long AnonReferencedKb(Cpu cpu, ulong start, ulong end)
    {
        long young = 0;
        MmapLock.DownRead(cpu.Id);
        try
        {
            for (var vma = FindVma(start); vma is not null && vma.End <= end; vma = vma.NextVma)
            {
                if (vma.Start < start || !vma.IsAnonymous || (vma.Flags & VmFlags.Shared) != 0)
                {
                    continue;
                }

                WalkPageRangeLocked(cpu, vma.Start, vma.End, p =>
                {
                    if (Entry.IsPresent(p.Entry) && !Entry.IsSpecial(p.Entry) && Entry.IsYoung(p.Entry))
                    {
                        young++;
                    }
                }, skipHoles: true);
            }
        }
        finally
        {
            MmapLock.UpRead(cpu.Id);
        }

        return young * 4;
    }

    /// <summary><c>/proc/PID/smaps</c>: per-VMA resident, anonymous, lazy-free and swap figures.</summary>
    public IReadOnlyList<SmapsEntry> Smaps(Cpu cpu)
    {
        var list = new List<SmapsEntry>();
        foreach (var vma in Vmas)
        {
            long rss = 0, anon = 0, lazy = 0, swap = 0, huge = 0, shmemHuge = 0;
            WalkPageRange(cpu, vma.Start, vma.End, p =>
            {
                ulong e = p.Entry;
                if (Entry.IsPresent(e) && !Entry.IsSpecial(e))
                {
                    rss++;
                    if (p.MappedByPmd)
                    {
                        huge++;
                    }

                    var flags = (PageFlags)Phys.Desc(Phys.CompoundHead(Entry.Pfn(e))).Flags;
                    if ((flags & PageFlags.Anon) == 0)
                    {
                        if (p.MappedByPmd && (flags & PageFlags.SwapBacked) != 0)
                        {
                            shmemHuge++;
                        }

                        return; // a page-cache page
                    }

                    anon++;
                    if ((flags & (PageFlags.SwapBacked | PageFlags.Dirty)) == 0 && !Entry.IsDirty(e))
                    {
                        lazy++;
                    }
                }
                else if (Entry.IsSwapSlot(e))
                {
                    swap++; // smaps_pte_entry: markers are non-swap entries, not counted
                }
            });
            list.Add(new SmapsEntry(vma.Start, vma.End, vma.FlagString(), (long)(vma.Length >> 10), rss * 4, anon * 4, lazy * 4, swap * 4)
            {
                AnonHugePagesKb = (huge - shmemHuge) * 4,
                ShmemPmdMappedKb = shmemHuge * 4,
            });
        }

        return list;
    }
}
