namespace PtLab.Kernel.Fuzz;

/// <summary>
/// Draws random operations inside the slot, biased toward the places where page-table and VMA
/// code has edges: VMA boundaries, 2 MiB (PTE table) and 1 GiB (PMD table) boundaries, ranges that
/// straddle VMAs and holes, sub-page, zero and wrapping lengths. It reads the current layout (the
/// model's, which equals the kernel's until a difference stops the sequence) before each draw.
/// </summary>
/// <remarks>
/// Fixed placements stay in the lowest 4 GiB of the slot and kernel-placed ones land at its top, so
/// mappings meet each other often. Anonymous memory is kept under <see cref="AnonBudgetKb"/> and
/// mapped space under <see cref="MappedBudget"/> by unmapping a whole VMA when either is exceeded,
/// which also keeps every placement inside the slot.
/// </remarks>
public sealed class OpGenerator
{
    private const ulong Page = 4096;
    private const ulong TwoMiB = 2UL << 20;
    private const ulong OneGiB = 1UL << 30;
    private const ulong LowZone = 4 * OneGiB;

    private readonly Random _rng;
    private readonly int _totalWeight;

    /// <summary>Whether this sequence may have locked a VMA (mlock, mlock2, mlockall, MAP_LOCKED).</summary>
    private bool _locking;

    /// <summary>Creates a generator for the slot at <paramref name="slot"/>.</summary>
    public OpGenerator(Random rng, ulong slot)
    {
        _rng = rng ?? throw new ArgumentNullException(nameof(rng));
        S = slot;
        E = slot + FuzzText.SlotSize;
        _totalWeight = FuzzOps.All.Sum(k => k.Weight);
    }

    /// <summary>The slot's first address.</summary>
    public ulong S { get; }

    /// <summary>The first address past the slot.</summary>
    public ulong E { get; }

    /// <summary>The VMAs in the slot now; set before each <see cref="Next"/>.</summary>
    public IReadOnlyList<VmaLine> Layout { get; set; } = [];

    /// <summary>RssAnon now, in kB; set before each <see cref="Next"/>.</summary>
    public long AnonKb { get; set; }

    /// <summary>Whether MAP_LOCKED may be drawn (the executor can lock memory without limit: root).</summary>
    public bool AllowLocked { get; init; }

    /// <summary>
    /// Whether <c>mseal</c> may be drawn: the host has it as the model has it, and this is one of
    /// the sequences that seal (a sealed VMA outlives the executor's reset, so each such sequence
    /// costs a new executor).
    /// </summary>
    public bool AllowMseal { get; init; }

    /// <summary>
    /// Whether MADV_MERGEABLE and MADV_UNMERGEABLE may be drawn: the host has KSM (without it
    /// both are EINVAL) and ksmd is stopped (<c>/sys/kernel/mm/ksm/run</c> 0), so that, as in the
    /// model, the advice only sets and clears <c>VM_MERGEABLE</c> and no page is merged.
    /// </summary>
    public bool AllowKsm { get; init; }

    /// <summary>Whether MAP_DROPPABLE may be drawn (the host has it: Linux 6.11+).</summary>
    public bool AllowDroppable { get; init; }

    /// <summary>
    /// Whether MAP_HUGETLB may be drawn: the host's hugetlb pools are the model's default, every
    /// one empty (<see cref="KernelInfo.HugetlbPoolsEmpty"/>), so that every call that reserves
    /// huge pages is refused on both sides; MAP_NORESERVE, which would map hugetlb memory the model
    /// does not have, is never drawn with it.
    /// </summary>
    public bool AllowHugetlb { get; init; }

    /// <summary>Whether <c>brk</c> may be drawn (the executor's heap is in the slot).</summary>
    public bool AllowBrk { get; init; }

    /// <summary>
    /// Whether MADV_GUARD_INSTALL and MADV_GUARD_REMOVE may be drawn: the host has guard regions as
    /// the model has them (<see cref="KernelInfo.HasGuardRegions"/>).
    /// </summary>
    public bool AllowGuard { get; init; }

    /// <summary>
    /// The collapse mode: MADV_COLLAPSE is drawn often, over ranges inside one private VMA (the model
    /// collapses shmem only where one VMA maps it, and the fuzzer's mprotects, munmaps and mremaps
    /// often split a shared mapping into several), and neither MADV_HUGEPAGE nor the advice that splits huge folios (see
    /// <see cref="NotInCollapseMode"/>).
    /// </summary>
    public bool Collapse { get; init; }

    /// <summary>The current break (<c>mm-&gt;brk</c>); set before each <see cref="Next"/>.</summary>
    public ulong Brk { get; set; }

    /// <summary>Above this much anonymous memory, the next operation unmaps a VMA.</summary>
    public long AnonBudgetKb { get; init; } = 256 * 1024;

    /// <summary>Above this much mapped space in the slot, the next operation unmaps the largest VMA.</summary>
    public ulong MappedBudget { get; init; } = 96 * OneGiB;

    /// <summary>Draws the next operation.</summary>
    public FuzzOp Next()
    {
        if (Layout.Count > 0)
        {
            ulong mapped = 0;
            foreach (var v in Layout)
            {
                mapped += v.End - v.Start;
            }

            if (AnonKb > AnonBudgetKb || mapped > MappedBudget)
            {
                var victim = mapped > MappedBudget ? Layout.MaxBy(v => v.End - v.Start) : Layout[_rng.Next(Layout.Count)];
                return new FuzzOp(FuzzOps.Find("munmap")!, [victim.Start, victim.End - victim.Start]);
            }
        }

        if (_pendingCollapse is { } pending)
        {
            _pendingCollapse = null;
            return pending;
        }

        if (Collapse && _rng.Next(25) == 0 && WriteThenCollapse() is { } write)
        {
            return write;
        }

        while (true)
        {
            var kind = PickKind();
            if ((kind.Name != "brk" || AllowBrk) && (kind.Name != "mseal" || AllowMseal))
            {
                var args = kind.Generate(this);
                if (kind.Name == "write")
                {
                    _lastWrite = args[0];
                }

                return new FuzzOp(kind, args);
            }
        }
    }

    private FuzzOpKind PickKind()
    {
        int pick = _rng.Next(_totalWeight);
        foreach (var kind in FuzzOps.All)
        {
            pick -= kind.Weight;
            if (pick < 0)
            {
                return kind;
            }
        }

        throw new InvalidOperationException("the weights do not add up");
    }

    /// <summary>mmap: address, length, prot, flags.</summary>
    public ulong[] Mmap()
    {
        int mode = _rng.Next(100);
        ulong flags = 0x2 | 0x20; // MAP_PRIVATE | MAP_ANONYMOUS
        ulong addr;
        if (mode < 40)
        {
            flags |= 0x10; // MAP_FIXED
            addr = Address();
        }
        else if (mode < 60)
        {
            flags |= 0x100000; // MAP_FIXED_NOREPLACE
            addr = Address();
        }
        else if (mode < 80)
        {
            addr = _rng.Next(10) == 0 ? S + ((ulong)_rng.NextInt64(1, (long)(LowZone / Page)) * Page) + (ulong)_rng.Next(1, 4096) : Address();
        }
        else
        {
            addr = 0;
        }

        ulong len = Length(addr == 0 ? S : addr);
        if (mode >= 60 && len > 8 * OneGiB && _rng.Next(4) != 0)
        {
            len = (ulong)_rng.NextInt64(1, 4096) * Page;
        }

        if (mode < 60)
        {
            len = Clamp(addr, len);
        }

        ulong aligned = (len + Page - 1) & ~(Page - 1);
        bool small = len != 0 && aligned != 0 && aligned <= 1UL << 20; // populating faults every page in
        if (_rng.Next(100) < 15)
        {
            flags |= 0x4000; // MAP_NORESERVE
        }

        if (small && _rng.Next(100) < 5)
        {
            flags |= 0x8000; // MAP_POPULATE
            if (_rng.Next(4) == 0)
            {
                flags |= 0x10000; // MAP_NONBLOCK
            }
        }

        if (_rng.Next(100) < 3)
        {
            flags |= 0x20000; // MAP_STACK
        }

        if (_rng.Next(100) < 3)
        {
            flags |= 0x100; // MAP_GROWSDOWN: a stack that grows on faults below it
        }

        if (AllowLocked && small && _rng.Next(100) < 2)
        {
            _locking = true;
            flags |= 0x2000; // MAP_LOCKED
        }

        if (_rng.Next(100) < 1)
        {
            flags |= _rng.Next(2) == 0 ? 0x800UL : 0x1000UL; // MAP_DENYWRITE, MAP_EXECUTABLE: ignored
        }

        int type = _rng.Next(100);
        if (type < 12)
        {
            flags = (flags & ~0xfUL) | 0x1; // MAP_SHARED: shmem behind it
        }
        else if (AllowDroppable && small && type < 20)
        {
            // MAP_DROPPABLE: pages reclaim may drop, written or not. Small only: mlockall
            // (MCL_FUTURE or MCL_CURRENT, with MCL_ONFAULT too) faults a droppable VMA in whole,
            // and a large one would put the host under the memory pressure that drops its pages.
            flags = (flags & ~0xfUL) | 0x8;
        }

        int odd = _rng.Next(100);
        if (odd == 0)
        {
            flags &= ~0x20UL; // no MAP_ANONYMOUS with fd -1
        }
        else if (odd == 1)
        {
            flags &= ~0xfUL; // no type
        }
        else if (odd == 2)
        {
            // MAP_SHARED_VALIDATE, maybe with a bit it refuses (0x400, bit 31) or one of the size
            // bits it accepts (MAP_UNINITIALIZED, bit 26; bit 27).
            flags = (flags & ~0xfUL) | 0x3 | (_rng.Next(5) switch { 0 => 0x400UL, 1 => 0x80000000UL, 2 => 0x4000000UL, 3 => 0x8000000UL, _ => 0 });
        }

        if (AllowHugetlb && _rng.Next(100) < 4)
        {
            // MAP_HUGETLB with the default size, 2 MiB or 1 GiB named, or a size the host has not
            // (EINVAL); reserved, so refused (ENOMEM) once every other check has passed, a MAP_FIXED
            // one after it has unmapped its range.
            flags = (flags & ~0x4000UL) | 0x40000 | (_rng.Next(5) switch { 0 => 21UL << 26, 1 => 30UL << 26, 2 => (ulong)_rng.Next(1, 64) << 26, _ => 0 });
        }

        return [addr, len, Prot(), flags];
    }

    /// <summary>
    /// mmap of the test file: address, length, prot and flags drawn as for anonymous memory (without
    /// MAP_ANONYMOUS), private or shared (now and then MAP_SHARED_VALIDATE, with an unknown bit at
    /// times), and an offset: mostly a page of the file, sometimes 0, past its end, or unaligned.
    /// </summary>
    public ulong[] MmapFile()
    {
        var a = Mmap();
        ulong flags = a[3] & ~0x20UL;
        int type = _rng.Next(100);
        flags = (flags & ~0xfUL) | (type < 50 ? 0x2UL : type < 92 ? 0x1UL : 0x3UL | (_rng.Next(3) == 0 ? 0x80000UL : 0)); // MAP_SYNC is unknown without DAX
        ulong filePages = (FuzzText.FileSize + Page - 1) / Page;
        int o = _rng.Next(100);
        ulong offset = o < 70 ? (ulong)_rng.NextInt64(0, (long)filePages) * Page
            : o < 85 ? 0
            : o < 97 ? (filePages + (ulong)_rng.Next(0, 64)) * Page
            : ((ulong)_rng.NextInt64(0, (long)filePages) * Page) + (ulong)_rng.Next(1, 4096);
        ulong len = a[1];
        if (len > 64 * TwoMiB && _rng.Next(4) != 0)
        {
            len = (ulong)_rng.NextInt64(1, 4096) * Page; // mostly a size near the file's
        }

        if ((a[3] & 0x100010UL) != 0) // MAP_FIXED, MAP_FIXED_NOREPLACE: the range must stay in the slot
        {
            len = Clamp(a[0], len);
        }

        return [a[0], len, a[2], flags, offset];
    }

    /// <summary>An address and a length for munmap, mprotect and madvise: in the slot or wrapping.</summary>
    public ulong[] Range()
    {
        ulong addr = Address();
        return [addr, Clamp(addr, Length(addr))];
    }

    /// <summary>
    /// mremap: a source range (often a whole VMA, or its end, where growth in place happens; an
    /// old length of 0 in a shared VMA, which duplicates it), a new length (the same, smaller,
    /// larger, or zero), flags (none, MAYMOVE, FIXED, DONTUNMAP, mixes
    /// Linux refuses, rarely an unknown bit) and a destination in the slot's low zone.
    /// </summary>
    public ulong[] Mremap()
    {
        ulong addr, len;
        if (Layout.Count > 0 && _rng.Next(3) != 0)
        {
            var v = Layout[_rng.Next(Layout.Count)];
            ulong pages = (v.End - v.Start) / Page;
            ulong skip = _rng.Next(3) == 0 ? (ulong)_rng.NextInt64(0, (long)pages) * Page : 0;
            (addr, len) = (v.Start + skip, v.End - v.Start - skip);
            if (v.Perms.Length > 3 && v.Perms[3] == 's' && _rng.Next(8) == 0)
            {
                len = 0; // an old length of 0 duplicates a shared mapping
            }
        }
        else
        {
            var r = Range();
            (addr, len) = (r[0], r[1]);
        }

        ulong newLen = _rng.Next(100) switch
        {
            < 40 => len,
            < 60 => len / 2,
            < 90 => len + ((ulong)_rng.Next(1, 1024) * Page),
            < 97 => len * 2,
            _ => 0,
        };
        if (len == 0 && newLen == 0 && _rng.Next(4) != 0)
        {
            newLen = (ulong)_rng.Next(1, 257) * Page;
        }

        ulong flags = _rng.Next(100) switch
        {
            < 20 => 0,
            < 45 => 1,          // MREMAP_MAYMOVE
            < 80 => 1 | 2,      // MAYMOVE | FIXED
            < 90 => 1 | 2 | 4,  // MAYMOVE | FIXED | DONTUNMAP
            < 95 => 1 | 4,      // MAYMOVE | DONTUNMAP
            < 98 => 2,          // FIXED alone: EINVAL
            _ => 8,             // not a flag
        };
        if ((flags & 4) != 0 && _rng.Next(4) != 0)
        {
            newLen = len;
        }

        if (_locking && newLen > len && newLen > 64UL << 20)
        {
            newLen = len; // growing a locked VMA faults the new part in: keep what a lock can reach small
        }

        // The executor refuses a destination (FIXED, DONTUNMAP) that leaves the slot without wrapping.
        ulong dest = Address();
        if (!InSlotOrWraps(dest, newLen))
        {
            dest = S;
            if (!InSlotOrWraps(dest, newLen))
            {
                newLen = (ulong)_rng.Next(1, 257) * Page;
            }
        }

        return [addr, len, newLen, flags, dest];
    }

    /// <summary>
    /// brk's address: a growth (by bytes, pages, a table's worth or more; little while locking
    /// may populate it), a shrink, the heap's start, below it (refused), 0 (a query), or another
    /// VMA's edge, where the growth meets a mapping. Never past the slot.
    /// </summary>
    public ulong BrkAddress()
    {
        ulong start = S + FuzzText.BrkOffset;
        ulong cur = Math.Max(Brk, start);
        ulong grow = _rng.Next(100) switch
        {
            < 30 => (ulong)_rng.Next(1, 8192),
            < 65 => (ulong)_rng.Next(1, 17) * Page,
            < 85 => JitterLength((ulong)_rng.Next(1, 5) * TwoMiB),
            _ => (ulong)_rng.NextInt64(1, 16385) * Page,
        };
        if (_locking && grow > 1UL << 20)
        {
            grow = (ulong)_rng.Next(1, 257) * Page; // MCL_FUTURE populates the heap's growth
        }

        ulong a = _rng.Next(100) switch
        {
            < 45 => cur + grow,
            < 70 => cur - Math.Min(cur - start, grow),
            < 77 => start,
            < 82 => start - ((ulong)_rng.Next(1, 17) * Page) - (ulong)_rng.Next(0, 2),
            < 87 => 0,
            _ => Jitter(Edge()) + (ulong)(_rng.Next(4) == 0 ? _rng.Next(1, 4096) : 0),
        };
        return a != 0 && (a < S || a > E) ? cur : a;
    }

    /// <summary>
    /// mlock and mlock2: a range of at most 1 MiB (locking faults every page in), or one that wraps;
    /// drawn only when the executor may lock without limit (root), else an empty range.
    /// </summary>
    public ulong[] Lock()
    {
        _locking |= AllowLocked;
        return AllowLocked ? SmallRange() : [S, 0];
    }

    /// <summary>
    /// mlockall's flags. Plain MCL_FUTURE would fault in every later mapping however large, and plain
    /// MCL_CURRENT every mapping in the slot (and the executor's own, all present already), so
    /// MCL_CURRENT alone is drawn only while the slot's mappings are small; otherwise
    /// with MCL_ONFAULT. Also the invalid forms: none, MCL_ONFAULT alone, an unknown bit. Without
    /// root, only invalid forms.
    /// </summary>
    public ulong[] MlockallFlags()
    {
        int r = _rng.Next(100);
        if (!AllowLocked || r < 10)
        {
            return [_rng.Next(3) switch { 0 => 0UL, 1 => 4UL, _ => 8UL | 1 }];
        }

        ulong mapped = 0;
        foreach (var v in Layout)
        {
            mapped += v.End - v.Start; // a locked PROT_NONE VMA is faulted in when made accessible
        }

        _locking = true;
        return r switch
        {
            < 40 when mapped <= 16UL << 20 => [1UL],       // MCL_CURRENT
            < 55 => [1UL | 4],                             // MCL_CURRENT | MCL_ONFAULT
            < 80 => [2UL | 4],                             // MCL_FUTURE | MCL_ONFAULT
            _ => [1UL | 2 | 4],
        };
    }

    /// <summary>
    /// madvise: a range and an advice; MADV_POPULATE_READ/WRITE fault every page in, so their
    /// ranges are at most 1 MiB (or wrap).
    /// </summary>
    public ulong[] Madvise()
    {
        ulong advice = Advice();
        if (advice == CollapseAdvice && Collapse)
        {
            return CollapseRange() is { } c ? [c[0], c[1], advice] : [.. Range(), 4];
        }

        var r = advice is 22 or 23 ? SmallRange() : Range();
        return [r[0], r[1], advice];
    }

    private const ulong CollapseAdvice = 25;

    /// <summary><c>MADV_GUARD_INSTALL</c> and <c>MADV_GUARD_REMOVE</c>, drawn only with <see cref="AllowGuard"/>.</summary>
    private const ulong GuardInstall = 102, GuardRemove = 103;

    /// <summary>
    /// The advice the collapse mode never draws: MADV_HUGEPAGE would let faults map huge pages.
    /// MADV_FREE, MADV_COLD and MADV_PAGEOUT are drawn: over part of a huge page they split the
    /// folio on both sides, wherever the fuzzer's mremaps left its pages (see docs/collapse.md).
    /// </summary>
    private static bool NotInCollapseMode(ulong advice) => advice is 14;

    /// <summary>Whether <see cref="Advice"/> may draw <paramref name="advice"/> in this generator's mode.</summary>
    private bool Drawn(ulong advice) =>
        !(Collapse && NotInCollapseMode(advice)) && (AllowGuard || advice is not (GuardInstall or GuardRemove)) &&
        (AllowKsm || advice is not (Mergeable or Unmergeable));

    private const ulong Mergeable = 12;
    private const ulong Unmergeable = 13;

    private FuzzOp? _pendingCollapse;

    /// <summary>
    /// In the collapse mode, now and then: a write of a few pages in a whole 2 MiB of a private
    /// writable VMA, and next a MADV_COLLAPSE of that 2 MiB (or of 4 MiB from it), so that
    /// collapses that succeed are frequent. Null when no VMA holds such a 2 MiB.
    /// </summary>
    private FuzzOp? WriteThenCollapse()
    {
        var fit = Layout.Where(v => v.Perms.Length > 3 && v.Perms[1] == 'w' && v.Perms[3] == 'p' &&
                                    ((v.Start + TwoMiB - 1) & ~(TwoMiB - 1)) + TwoMiB <= v.End).ToList();
        if (fit.Count == 0)
        {
            return null;
        }

        var v = fit[_rng.Next(fit.Count)];
        ulong first = (v.Start + TwoMiB - 1) & ~(TwoMiB - 1);
        ulong chunks = (v.End - first) / TwoMiB;
        ulong haddr = first + ((ulong)_rng.NextInt64(0, (long)Math.Min(chunks, 64)) * TwoMiB);
        ulong at = haddr + ((ulong)_rng.Next(0, 512) * Page);
        ulong len = Math.Min((ulong)_rng.Next(1, 17) * Page, haddr + TwoMiB - at);
        _lastWrite = at;
        _pendingCollapse = new FuzzOp(FuzzOps.Find("madvise")!, [haddr, Math.Min((ulong)_rng.Next(1, 3) * TwoMiB, v.End - haddr), CollapseAdvice]);
        return new FuzzOp(FuzzOps.Find("write")!, [at, len]);
    }

    private ulong _lastWrite;

    /// <summary>
    /// A MADV_COLLAPSE range inside one private VMA: mostly from a 2 MiB boundary (or the VMA's
    /// start) over one to four 2 MiB, sometimes an unaligned piece; null when no VMA is private.
    /// </summary>
    private ulong[]? CollapseRange()
    {
        var candidates = Layout.Where(v => v.Perms.Length > 3 && v.Perms[3] == 'p').ToList();
        if (candidates.Count == 0)
        {
            return null;
        }

        // Half the time the 2 MiB of the last write, where a PTE table and an anon_vma are likely.
        int w = candidates.FindIndex(c => c.Start <= _lastWrite && _lastWrite < c.End);
        if (w >= 0 && _rng.Next(2) == 0)
        {
            var written = candidates[w];
            ulong from = Math.Max(written.Start, _lastWrite & ~(TwoMiB - 1));
            return [from, Math.Min((ulong)_rng.Next(1, 3) * TwoMiB, written.End - from)];
        }

        var v = candidates[_rng.Next(candidates.Count)];
        ulong start = _rng.Next(4) == 0 ? v.Start : Math.Min((v.Start + TwoMiB - 1) & ~(TwoMiB - 1), v.End - Page);
        if (_rng.Next(6) == 0)
        {
            start += (ulong)_rng.NextInt64(0, (long)((v.End - start) / Page)) * Page;
        }

        ulong len = _rng.Next(6) == 0 ? (ulong)_rng.Next(1, 1024) * Page : (ulong)_rng.Next(1, 5) * TwoMiB;
        return [start, Math.Min(len, v.End - start)];
    }

    /// <summary>A range from <see cref="Range"/> cut to at most 1 MiB unless it wraps past 2^64.</summary>
    public ulong[] SmallRange()
    {
        var r = Range();
        ulong aligned = (r[1] + Page - 1) & ~(Page - 1);
        bool wraps = r[1] != 0 && (aligned == 0 || r[0] + aligned < r[0]);
        if (!wraps && r[1] > 1UL << 20)
        {
            r[1] = _rng.Next(4) == 0 ? (ulong)_rng.Next(1, 1 << 20) : (ulong)_rng.Next(1, 257) * Page;
        }

        return r;
    }

    /// <summary>
    /// mseal: mostly a piece of one VMA (a few pages, sometimes a length that is no whole number
    /// of pages), sometimes one that runs past the VMA's end into its neighbour or a hole, or any
    /// range; one in twenty with a flag, which Linux refuses. A sealed VMA stays for the rest of
    /// the sequence, so the pieces are small and the calls rare.
    /// </summary>
    public ulong[] Mseal()
    {
        ulong flags = _rng.Next(20) == 0 ? 1UL << _rng.Next(3) : 0;
        if (Layout.Count == 0 || _rng.Next(4) == 0)
        {
            return [.. Range(), flags];
        }

        var v = Layout[_rng.Next(Layout.Count)];
        ulong pages = (v.End - v.Start) / Page;
        ulong first = (ulong)_rng.NextInt64(0, (long)pages);
        ulong len = (ulong)_rng.NextInt64(1, (long)Math.Min(pages - first, 64) + 1) * Page;
        if (_rng.Next(4) == 0)
        {
            len -= (ulong)_rng.Next(1, (int)Page); // rounded up to the page again
        }

        ulong addr = v.Start + (first * Page);
        if (_rng.Next(6) == 0)
        {
            len = v.End - addr + ((ulong)_rng.Next(1, 16) * Page);
        }

        return [addr, Clamp(addr, len), flags];
    }

    /// <summary>mlock2's flags: none, MLOCK_ONFAULT, rarely an unknown bit.</summary>
    public ulong LockFlags() => _rng.Next(10) switch
    {
        < 5 => 0,
        < 9 => 1,
        _ => 2,
    };

    /// <summary>
    /// A touch: an address and a length inside the slot. Page faults cost the host kernel most of a
    /// run's time, so touches are short, and placed across 2 MiB boundaries and VMA edges where a
    /// few pages reach a new table or the next VMA; one in thirty covers up to 4 MiB.
    /// </summary>
    public ulong[] Touch()
    {
        ulong addr;
        int r = _rng.Next(100);
        if (r < 45 && Layout.Count > 0)
        {
            var v = Layout[_rng.Next(Layout.Count)];
            ulong pages = Math.Max(1, (v.End - v.Start) / Page);
            addr = v.Start + ((ulong)_rng.NextInt64(0, (long)Math.Min(pages, 4096)) * Page);
        }
        else if (r < 70)
        {
            // just below a 2 MiB boundary near an edge, so the touch reaches the next PTE table
            addr = ((Edge() + TwoMiB) & ~(TwoMiB - 1)) - ((ulong)_rng.Next(1, 9) * Page);
        }
        else
        {
            addr = Address();
        }

        if (_rng.Next(20) == 0)
        {
            addr += (ulong)_rng.Next(1, 4096);
        }

        ulong len = _rng.Next(100) switch
        {
            < 35 => (ulong)_rng.Next(1, 4097),
            < 75 => (ulong)_rng.Next(1, 17) * Page,
            < 97 => (ulong)_rng.Next(17, 129) * Page,
            _ => (ulong)_rng.Next(129, 1025) * Page,
        };
        if (addr < S || addr >= E)
        {
            addr = E - Page;
        }

        return [addr, Math.Min(len, E - addr)];
    }

    /// <summary>A protection: mostly the usual ones, rarely a bit mprotect rejects or treats specially.</summary>
    public ulong Prot() => _rng.Next(100) switch
    {
        < 35 => 0x3,
        < 50 => 0x1,
        < 62 => 0x0,
        < 97 => (ulong)_rng.Next(8),
        _ => _rng.Next(4) switch
        {
            0 => 0x8 | (ulong)_rng.Next(8), // PROT_SEM
            1 => 0x0100_0000 | 0x1,        // PROT_GROWSDOWN
            2 => 0x0200_0000 | 0x3,        // PROT_GROWSUP
            _ => 0x10 | 0x1,               // not a PROT_ bit
        },
    };

    /// <summary>An advice: every one the model accepts, and rarely one it does not.</summary>
    public ulong Advice()
    {
        // MADV_HWPOISON (100) and MADV_SOFT_OFFLINE (101) would poison the host's memory: never drawn.
        ReadOnlySpan<(ulong Advice, int Weight)> table =
        [
            (4, 28), (8, 14), (24, 4), (0, 5), (1, 5), (2, 5), (3, 4), (14, 7), (15, 6), (16, 6), (17, 5),
            (20, 4), (21, 4), (22, 4), (23, 4), (9, 1), (5, 1), (26, 1), (CollapseAdvice, Collapse ? 14 : 2),
            (GuardInstall, 4), (GuardRemove, 2), (10, 3), (11, 2), (18, 3), (19, 2), (Mergeable, 2), (Unmergeable, 2),
        ];
        int total = 0;
        foreach (var (a, w) in table)
        {
            total += Drawn(a) ? w : 0;
        }

        int pick = _rng.Next(total);
        foreach (var (a, w) in table)
        {
            if (!Drawn(a))
            {
                continue;
            }

            pick -= w;
            if (pick < 0)
            {
                return a;
            }
        }

        return 4;
    }

    /// <summary>An address in the slot, near an edge more often than not.</summary>
    public ulong Address()
    {
        int r = _rng.Next(100);
        ulong a;
        if (r < 35)
        {
            a = Jitter(Edge());
        }
        else if (r < 55)
        {
            ulong anchor = _rng.Next(2) == 0 ? Edge() : S + ((ulong)_rng.NextInt64(0, (long)(LowZone / TwoMiB)) * TwoMiB);
            a = (anchor & ~(TwoMiB - 1)) + ((ulong)_rng.Next(0, 3) * TwoMiB);
            a = _rng.Next(10) < 6 ? a : Jitter(a);
        }
        else if (r < 63)
        {
            a = S + ((ulong)_rng.Next(0, 5) * OneGiB);
            a = _rng.Next(10) < 6 ? a : Jitter(a);
        }
        else if (r < 88)
        {
            ulong zone = _rng.Next(2) == 0 ? 64UL << 20 : LowZone;
            a = S + ((ulong)_rng.NextInt64(0, (long)(zone / Page)) * Page);
        }
        else if (r < 95)
        {
            a = _rng.Next(2) == 0 ? E - ((ulong)_rng.Next(1, 1025) * Page) : E - ((ulong)_rng.Next(1, 9) * TwoMiB);
        }
        else
        {
            a = S + ((ulong)_rng.NextInt64(0, (long)((64UL << 20) / Page)) * Page) + (ulong)_rng.Next(1, 4096);
        }

        return a < S ? S : a >= E ? E - Page : a;
    }

    /// <summary>A length from <paramref name="addr"/>: small, table-sized, to an edge, zero, wrapping or huge.</summary>
    public ulong Length(ulong addr)
    {
        int r = _rng.Next(100);
        switch (r)
        {
            case < 22:
                return (ulong)_rng.Next(1, 17) * Page;
            case < 26:
                return (ulong)_rng.Next(1, 8192);
            case < 40:
                return JitterLength((ulong)_rng.Next(1, 5) * TwoMiB);
            case < 58:
                {
                    ulong edge = EdgeAbove(addr);
                    return edge > addr ? (_rng.Next(2) == 0 ? edge - addr : JitterLength(edge - addr)) : (ulong)_rng.Next(1, 17) * Page;
                }

            case < 70:
                return (ulong)_rng.NextInt64(1, 16385) * Page;
            case < 75:
                return JitterLength(OneGiB);
            case < 78:
                return 0;
            case < 81:
                // addr + length wraps past 2^64: every call rejects it before acting
                return _rng.Next(2) == 0 ? (0UL - addr) + ((ulong)_rng.Next(0, 5) * Page) : ulong.MaxValue - (ulong)_rng.Next(0, 4096);
            case < 83:
                return (ulong)_rng.Next(16, 65) * OneGiB;
            default:
                return (ulong)_rng.Next(1, 2049) * Page;
        }
    }

    /// <summary>The executor's check: [addr, addr + len) lies in the slot, or wraps past 2^64.</summary>
    private bool InSlotOrWraps(ulong addr, ulong len)
    {
        ulong aligned = (len + Page - 1) & ~(Page - 1);
        return (len != 0 && (aligned == 0 || addr + aligned < addr)) || (addr >= S && addr <= E && aligned <= E - addr);
    }

    /// <summary>
    /// <paramref name="len"/> cut so that the range passes <see cref="InSlotOrWraps"/>: the executor
    /// rounds the length up to a page, so from an address that is not page-aligned the cut length is
    /// rounded down to a page (the rest of the slot alone would round up past its end).
    /// </summary>
    private ulong Clamp(ulong addr, ulong len)
    {
        ulong aligned = (len + Page - 1) & ~(Page - 1);
        bool wraps = len != 0 && (aligned == 0 || addr + aligned < addr);
        return wraps || addr + aligned <= E ? len : (E - addr) & ~(Page - 1);
    }

    private ulong Edge()
    {
        if (Layout.Count == 0)
        {
            return S + ((ulong)_rng.NextInt64(0, (long)((64UL << 20) / Page)) * Page);
        }

        var v = Layout[_rng.Next(Layout.Count)];
        return _rng.Next(2) == 0 ? v.Start : v.End;
    }

    private ulong EdgeAbove(ulong addr)
    {
        var candidates = new List<ulong>();
        foreach (var v in Layout)
        {
            if (v.Start > addr)
            {
                candidates.Add(v.Start);
            }

            if (v.End > addr)
            {
                candidates.Add(v.End);
            }
        }

        ulong next2M = (addr + TwoMiB) & ~(TwoMiB - 1);
        candidates.Add(next2M);
        candidates.Add(next2M + TwoMiB);
        candidates.Add((addr + OneGiB) & ~(OneGiB - 1));
        candidates.Sort();
        // Prefer the nearest few, so ranges straddle one or two neighbours rather than the whole slot.
        return candidates[_rng.Next(Math.Min(candidates.Count, 4))];
    }

    private ulong Jitter(ulong a)
    {
        long pages = _rng.Next(100) switch
        {
            < 50 => 0,
            < 75 => _rng.Next(1, 5),
            < 90 => _rng.Next(1, 65),
            _ => _rng.Next(1, 512),
        };
        return _rng.Next(2) == 0 ? a + ((ulong)pages * Page) : a - ((ulong)pages * Page);
    }

    private ulong JitterLength(ulong len)
    {
        ulong j = Jitter(len);
        return j == 0 || j > len + (2 * OneGiB) ? len : j;
    }
}
