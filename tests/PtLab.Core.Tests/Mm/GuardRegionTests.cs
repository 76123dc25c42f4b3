using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Tests.Mm;

/// <summary>
/// MADV_GUARD_INSTALL and MADV_GUARD_REMOVE (mm/madvise.c, Linux 6.13+): guard markers in the PTEs,
/// what keeps them and what clears them. The figures match the Linux 6.18 host (see
/// GuardRegionKernelTests in PtLab.Kernel.Tests).
/// </summary>
public class GuardRegionTests
{
    /// <summary>What /proc/PID/pagemap shows for a guard marker on the host: swapped (62), guard (58), type 31, offset 4.</summary>
    private const ulong GuardPagemap = 0x4400_0000_0000_009FUL;

    private static Sim NewSim(string design = "none", long swapBytes = 0, ThpSettings? thp = null) =>
        new(design: Designs.Factory(design), swapBytes: swapBytes, thp: thp);

    /// <summary>A 4 MiB private anonymous mapping, 2 MiB aligned, with its first 16 pages written.</summary>
    private static ulong MapTouched(Sim s)
    {
        ulong a = s.Map(4 * Sim.M1, addr: 0x4000_0000);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 4 * Sim.M1, Advice.NoHugePage));
        s.TouchAll(a, 16 * Sim.K4);
        return a;
    }

    /// <summary><see cref="MapTouched"/>, then a guard marker in its first <paramref name="pages"/> pages.</summary>
    private static (Sim S, ulong At) Guarded(int pages, string design = "none", long swapBytes = 0)
    {
        var s = NewSim(design, swapBytes);
        ulong a = MapTouched(s);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, (ulong)pages * Sim.K4, Advice.GuardInstall));
        return (s, a);
    }

    /// <summary>A 4 MiB MADV_HUGEPAGE mapping, 2 MiB aligned, whose first 2 MiB a write made a huge page.</summary>
    private static (Sim S, ulong At) HugePageWritten()
    {
        var s = NewSim(thp: new ThpSettings(ThpEnabled.Madvise, ThpDefrag.Madvise, true));
        ulong a = s.Map(4 * Sim.M1, addr: 0x4000_0000);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 4 * Sim.M1, Advice.HugePage));
        Assert.True(s.Cpu.Touch(a).Ok);
        Assert.Equal(1, s.Mm.DepositedTables);
        return (s, a);
    }

    private static void AssertGuarded(Sim s, ulong start, int pages)
    {
        for (int i = 0; i < pages; i++)
        {
            ulong va = start + ((ulong)i * Sim.K4);
            Assert.True(Entry.IsGuardMarker(s.Mm.PeekPte(va)), $"no guard marker at 0x{va:x}: {s.Mm.PeekPte(va):x}");
        }
    }

    [Fact]
    public void TheMarkerEncodesAsTheHostsPagemapShowsIt()
    {
        Assert.Equal(Entry.SwpPteMarker, Entry.SwapType(Entry.GuardMarker));
        Assert.Equal(Entry.PteMarkerGuard, Entry.SwapOffset(Entry.GuardMarker));
        Assert.True(Entry.IsSwap(Entry.GuardMarker));
        Assert.False(Entry.IsSwapSlot(Entry.GuardMarker));
        Assert.True(Entry.IsSwapSlot(Entry.MakeSwap(0, 4)));
        Assert.False(Entry.IsGuardMarker(Entry.MakeSwap(0, Entry.PteMarkerGuard)));
    }

    /// <summary>
    /// Install zaps the pages in its range and stores a marker in each PTE; a touch is SIGSEGV
    /// (SEGV_MAPERR), the page after it still faults in; pagemap shows the host's value; markers
    /// are neither RSS nor swap; each design counts them as the table's entries.
    /// </summary>
    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void InstallZapsThePagesAndATouchIsSegv(string design)
    {
        using var s = NewSim(design);
        ulong a = MapTouched(s);
        var before = s.Mm.Status();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 8 * Sim.K4, Advice.GuardInstall));
        var after = s.Mm.Status();
        Assert.Equal(before.RssAnonKb - 32, after.RssAnonKb);
        Assert.Equal(before.VmPteKb, after.VmPteKb);
        Assert.Equal(0, after.VmSwapKb);
        AssertGuarded(s, a, 8);
        var map = s.Mm.Pagemap(s.Cpu, a, a + (9 * Sim.K4));
        Assert.All(map[..8], v => Assert.Equal(GuardPagemap, v));
        Assert.Equal(1UL << 63, map[8] & (1UL << 63));
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(a + (3 * Sim.K4)).Outcome);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.ReadByte(a, out _).Outcome);
        Assert.True(s.Cpu.Touch(a + (8 * Sim.K4)).Ok);
        Assert.Equal(0, s.Mm.Smaps(s.Cpu).Single(v => v.Start == a).SwapKb);
        s.AssertAccountingConsistent();
        s.AssertRefcountsMatchEntries();
    }

    /// <summary>
    /// Install over nothing allocates the tables it needs: a PMD and a PTE table in a fresh GiB
    /// (the host shows VmPTE +8 kB); a second install is a no-op.
    /// </summary>
    [Fact]
    public void InstallAllocatesTheTablesItNeeds()
    {
        using var s = NewSim();
        ulong first = s.Map(Sim.M2, addr: 0x4000_0000);
        s.TouchAll(first, Sim.K4);
        ulong a = s.Map(Sim.M2, addr: 0x8000_0000);
        var before = s.Mm.Status();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.GuardInstall));
        Assert.Equal(before.Tables with { Pte = before.Tables.Pte + 1, Pmd = before.Tables.Pmd + 1 }, s.Mm.Status().Tables);
        Assert.Equal(before.VmPteKb + 8, s.Mm.Status().VmPteKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.GuardInstall));
        AssertGuarded(s, a, 1);
        Assert.Equal(0UL, s.Mm.PeekPte(a + Sim.K4));
        Assert.NotNull(s.Mm.FindVma(a)!.AnonVma); // anon_vma_prepare: fork copies the tables
        s.AssertAccountingConsistent();
    }

    /// <summary>MADV_DONTNEED, MADV_FREE, MADV_COLD, MADV_PAGEOUT and mprotect leave the markers; munmap clears them and frees the tables.</summary>
    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void OnlyAnUnmapClearsTheMarkers(string design)
    {
        var (s, a) = Guarded(4, design, swapBytes: 64L << 20);
        using var owned = s;
        foreach (var advice in new[] { Advice.DontNeed, Advice.Free, Advice.Cold, Advice.PageOut })
        {
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 2 * Sim.M1, advice));
            AssertGuarded(s, a, 4);
        }

        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, 2 * Sim.M1, Prot.Read));
        AssertGuarded(s, a, 4);
        Assert.Equal(0, s.Mm.Status().VmSwapKb);
        s.AssertRefcountsMatchEntries();
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, a, 4 * Sim.M1));
        Assert.Equal(0UL, s.Mm.PeekPte(a));
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// MADV_REMOVE punches the hole in shared memory and zaps the pages mapping it, but its zap
    /// (<c>unmap_mapping_range</c>, no ZAP_FLAG_DROP_MARKER) leaves the markers, as on the host.
    /// </summary>
    [Fact]
    public void AHolePunchKeepsTheMarkers()
    {
        using var s = NewSim();
        ulong a = s.Map(Sim.M2, flags: MapFlags.Shared | MapFlags.Anonymous, addr: 0x4000_0000);
        s.TouchAll(a, 8 * Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.GuardInstall));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 8 * Sim.K4, Advice.Remove));
        AssertGuarded(s, a, 1);
        Assert.Equal(0UL, s.Mm.PeekPte(a + Sim.K4));
        Assert.Equal(0, s.Mm.Status().RssShmemKb);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// pt-reclaim: a DONTNEED over a whole table that holds a marker skips it (<c>any_skipped</c>)
    /// and keeps the table; once the marker is removed, the same DONTNEED frees it. The host
    /// shows both.
    /// </summary>
    [Fact]
    public void PtReclaimKeepsATableThatHoldsAMarker()
    {
        using var s = NewSim("pt-reclaim");
        ulong a = s.Map(4 * Sim.M1, addr: 0x4000_0000);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 4 * Sim.M1, Advice.NoHugePage));
        s.TouchAll(a, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (5 * Sim.K4), Sim.K4, Advice.GuardInstall));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
        AssertGuarded(s, a + (5 * Sim.K4), 1);
        Assert.Equal(0, s.Mm.Status().RssAnonKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.GuardRemove));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// A table whose only entry is a marker stays under every design after a whole-table DONTNEED,
    /// and the marker with it, as the scan's free-now rules (<see cref="FreeNowRules"/>) say of a
    /// marker-only table.
    /// </summary>
    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void AMarkerOnlyTableStaysUnderEveryDesign(string design)
    {
        var markerOnly = new ScannedTable(Present: 0, ZeroPage: 0, Swapped: 1, Guard: 1, IsThpDeposit: false);
        Assert.Equal(ScannedTableState.MarkerOnly, markerOnly.State);
        Assert.False(FreeNowRules.All.Single(r => r.Design == design).FreesNow(markerOnly));
        using var s = NewSim(design);
        ulong a = s.Map(Sim.M2, addr: 0x4000_0000);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M1, Sim.K4, Advice.GuardInstall));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(1, s.Mm.Status().Tables.Pte);
        AssertGuarded(s, a + Sim.M1, 1);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(a + Sim.M1).Outcome);
        s.AssertRefcountsMatchEntries();
        s.AssertAccountingConsistent();
    }

    /// <summary>Remove clears the markers and nothing else: the pages mapped beside them stay, a touch then faults a page in.</summary>
    [Fact]
    public void RemoveClearsOnlyTheMarkers()
    {
        var (s, a) = Guarded(4);
        using var owned = s;
        long rss = s.Mm.Status().RssAnonKb;
        long pte = s.Mm.Status().VmPteKb;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 16 * Sim.K4, Advice.GuardRemove));
        Assert.Equal(rss, s.Mm.Status().RssAnonKb);
        Assert.Equal(pte, s.Mm.Status().VmPteKb);
        Assert.Equal(0UL, s.Mm.PeekPte(a));
        Assert.True(Entry.IsPresent(s.Mm.PeekPte(a + (4 * Sim.K4))));
        Assert.True(s.Cpu.Touch(a).Ok);
        Assert.Equal(rss + 4, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// The VMA checks: install refuses a VM_LOCKED VMA (it would zap locked pages), remove accepts
    /// one; mlock over markers locks the VMA but its populate fails (ENOMEM); MADV_POPULATE and GUP
    /// over a marker fail with EFAULT; mincore sees a hole. All as the host answers.
    /// </summary>
    [Fact]
    public void LockedVmasPopulateGupAndMincore()
    {
        var (s, a) = Guarded(8);
        using var owned = s;
        Assert.Equal(Errno.EFAULT, s.Mm.Madvise(s.Cpu, a, 16 * Sim.K4, Advice.PopulateRead));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (8 * Sim.K4), 8 * Sim.K4, Advice.PopulateWrite));
        Span<long> pages = stackalloc long[1];
        Assert.Equal(-(long)Errno.EFAULT, s.Mm.GetUserPages(s.Cpu, a, 1, write: true, pages));
        Span<byte> vec = stackalloc byte[16];
        Assert.Equal(Errno.None, s.Mm.Mincore(s.Cpu, a, 16 * Sim.K4, vec));
        Assert.Equal(0, vec[0]);
        Assert.Equal(1, vec[8]);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mlock(s.Cpu, a, 16 * Sim.K4));
        Assert.Equal(VmFlags.Locked, s.Mm.FindVma(a)!.Flags & VmFlags.Locked);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.GuardInstall));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.GuardRemove));
        Assert.Equal(0UL, s.Mm.PeekPte(a));
        AssertGuarded(s, a + Sim.K4, 7);
        s.AssertAccountingConsistent();
    }

    /// <summary>mremap moves the markers with the pages.</summary>
    [Fact]
    public void MremapMovesTheMarkers()
    {
        var (s, a) = Guarded(2);
        using var owned = s;
        ulong to = 0x8000_0000;
        var r = s.Mm.Mremap(s.Cpu, a, 16 * Sim.K4, 16 * Sim.K4, MremapFlags.MayMove | MremapFlags.Fixed, to);
        Assert.True(r.Ok, r.ToString());
        AssertGuarded(s, to, 2);
        Assert.True(Entry.IsPresent(s.Mm.PeekPte(to + (2 * Sim.K4))));
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(to).Outcome);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// Fork copies the markers (install set VM_MAYBE_GUARD, so the VMA's tables are copied), in
    /// private and shared anonymous memory and in a private file mapping, which has no anon_vma;
    /// a MADV_WIPEONFORK range reaches the child empty, markers included.
    /// </summary>
    [Fact]
    public void ForkCopiesTheMarkersExceptWhereWipedOnFork()
    {
        var m = new Machine(new MachineOptions { Cpus = 1, RamBytes = 256L << 20, LockDep = true, Scheduler = new PanicOnFailure(), Design = Designs.Factory("none")! });
        var t = m.CreateProcess().MainThread;
        var cpu = t.Activate();
        var file = m.Files.GetOrCreate(new FileId(1, 1), Sim.M2);
        ulong priv = t.Mm.Mmap(cpu, 0x4000_0000, Sim.M2, Sim.Rw, Sim.Anon | MapFlags.Fixed).Address;
        ulong shared = t.Mm.Mmap(cpu, 0x8000_0000, Sim.M2, Sim.Rw, MapFlags.Shared | MapFlags.Anonymous | MapFlags.Fixed).Address;
        ulong wiped = t.Mm.Mmap(cpu, 0xC000_0000, Sim.M2, Sim.Rw, Sim.Anon | MapFlags.Fixed).Address;
        ulong filePriv = t.Mm.Mmap(cpu, 0x1_0000_0000, Sim.M2, Sim.Rw, MapFlags.Private | MapFlags.Fixed, file, 0).Address;
        Assert.True(cpu.Touch(shared).Ok);
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, wiped, Sim.M2, Advice.WipeOnFork));
        foreach (ulong at in new[] { priv, shared, wiped, filePriv })
        {
            Assert.Equal(Errno.None, t.Mm.Madvise(cpu, at, Sim.K4, Advice.GuardInstall));
        }

        Assert.Null(t.Mm.FindVma(filePriv)!.AnonVma);
        var child = m.Fork(t)!;
        Assert.True(Entry.IsGuardMarker(child.Mm.PeekPte(priv)));
        Assert.True(Entry.IsGuardMarker(child.Mm.PeekPte(shared)));
        Assert.True(Entry.IsGuardMarker(child.Mm.PeekPte(filePriv)));
        Assert.Equal(0UL, child.Mm.PeekPte(wiped));
        Assert.Equal(FaultOutcome.SegvMapErr, child.MainThread.Activate().Touch(priv).Outcome);
        Assert.True(Entry.IsGuardMarker(t.Mm.PeekPte(priv)));
    }

    /// <summary>
    /// VM_MAYBE_GUARD: install sets it on the whole VMA without a split and gives only an
    /// anonymous VMA an anon_vma; it never keeps VMAs apart and a merge keeps it. Two file-backed
    /// VMAs that took markers merge again once their other flags match; two anonymous ones, each
    /// with its own anon_vma, do not (the host does the same: the fuzz case
    /// guard-anon-vma-only-for-anonymous-vmas).
    /// </summary>
    [Fact]
    public void InstallSetsMaybeGuardAndGivesOnlyAnonymousVmasAnAnonVma()
    {
        using var s = NewSim();
        var file = s.Machine.Files.GetOrCreate(new FileId(1, 1), 3 * Sim.K4);
        ulong f = s.Mm.Mmap(s.Cpu, 0x4000_0000, 3 * Sim.K4, Sim.Rw, MapFlags.Private | MapFlags.Fixed, file, 0).Address;
        ulong a = s.Map(3 * Sim.K4, addr: 0x8000_0000);
        foreach (ulong at in new[] { f, a })
        {
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, at + (2 * Sim.K4), Sim.K4, Advice.NoHugePage));
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, at, Sim.K4, Advice.GuardInstall));
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, at + (2 * Sim.K4), Sim.K4, Advice.GuardInstall));
            Assert.Equal(VmFlags.MaybeGuard, s.Mm.FindVma(at)!.Flags & VmFlags.MaybeGuard);
            Assert.Equal(at + (2 * Sim.K4), s.Mm.FindVma(at)!.End); // flagged whole, not split
            Assert.Equal(at == a, s.Mm.FindVma(at)!.AnonVma is not null);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, at + Sim.K4, Sim.K4, Advice.NoHugePage));
        }

        var merged = s.Mm.FindVma(f + Sim.K4)!;
        Assert.Equal((f + Sim.K4, f + (3 * Sim.K4)), (merged.Start, merged.End));
        Assert.NotEqual(0, (int)(merged.Flags & VmFlags.MaybeGuard));
        Assert.Equal(a + (2 * Sim.K4), s.Mm.FindVma(a + Sim.K4)!.End);
    }

    /// <summary>Install over part of a huge page splits its pmd (the deposited table takes over) and zaps only the guarded page.</summary>
    [Fact]
    public void InstallOverPartOfAHugePageSplitsIt()
    {
        var (s, a) = HugePageWritten();
        using var owned = s;
        var before = s.Mm.Status();
        Assert.Equal(2048, before.RssAnonKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.K4, Sim.K4, Advice.GuardInstall));
        var after = s.Mm.Status();
        Assert.Equal(2044, after.RssAnonKb);
        Assert.Equal(before.VmPteKb, after.VmPteKb);
        AssertGuarded(s, a + Sim.K4, 1);
        Assert.True(Entry.IsPresent(s.Mm.PeekPte(a + (2 * Sim.K4))));
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// Install over a whole huge page zaps its pmd whole (the page and its deposited table go) and
    /// then allocates a PTE table for the markers: RssAnon drops by 2 MiB, VmPTE stays (as on the host).
    /// </summary>
    [Fact]
    public void InstallOverAWholeHugePageZapsItAndTakesAFreshTable()
    {
        var (s, a) = HugePageWritten();
        using var owned = s;
        var before = s.Mm.Status();
        Assert.Equal(1, s.Mm.DepositedTables);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.GuardInstall));
        var after = s.Mm.Status();
        Assert.Equal(before.RssAnonKb - 2048, after.RssAnonKb);
        Assert.Equal(before.VmPteKb, after.VmPteKb);
        Assert.Equal(0, s.Mm.DepositedTables);
        AssertGuarded(s, a, 512);
        Assert.Equal(FaultOutcome.SegvMapErr, s.Cpu.Touch(a + Sim.M1).Outcome);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// MADV_COLLAPSE over a table that holds a marker fails with EINVAL (the swap-in of the
    /// marker is SIGSEGV, a failed scan) and leaves it; without the marker the collapse succeeds.
    /// The host answers the same.
    /// </summary>
    [Fact]
    public void CollapseFailsOverAMarker()
    {
        using var s = NewSim(thp: new ThpSettings(ThpEnabled.Madvise, ThpDefrag.Madvise, true));
        ulong a = s.Map(4 * Sim.M1, addr: 0x4000_0000);
        s.TouchAll(a, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (7 * Sim.K4), Sim.K4, Advice.GuardInstall));
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        AssertGuarded(s, a + (7 * Sim.K4), 1);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (7 * Sim.K4), Sim.K4, Advice.GuardRemove));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        Assert.Equal(1, s.Mm.DepositedTables); // the collapse deposited the PTE table under its huge pmd
        s.AssertAccountingConsistent();
    }

    /// <summary>Install over a swapped-out page drops the swap entry (the zap frees its slot) before marking it.</summary>
    [Fact]
    public void InstallOverASwapEntryFreesIt()
    {
        using var s = NewSim(swapBytes: 64L << 20);
        ulong a = MapTouched(s);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 16 * Sim.K4, Advice.PageOut));
        Assert.Equal(64, s.Mm.Status().VmSwapKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 4 * Sim.K4, Advice.GuardInstall));
        Assert.Equal(48, s.Mm.Status().VmSwapKb);
        Assert.Equal(48, s.Mm.Smaps(s.Cpu).Single(v => v.Start == a).SwapKb);
        AssertGuarded(s, a, 4);
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// The advice is refused on a VM_SPECIAL mapping, as the kernel's is_valid_guard_vma refuses
    /// it: the vvar pages are VM_PFNMAP, and every special mapping (the vDSO too) is VM_DONTEXPAND.
    /// </summary>
    [Fact]
    public void NoMarkersInASpecialMapping()
    {
        using var s = NewSim();
        const ulong vvar = 0x7f00_0000_0000;
        Assert.Equal(Errno.None, s.Mm.InstallSpecialMapping(s.Cpu, vvar, 4 * Sim.K4, SpecialMapping.Vvar));
        Assert.Equal(Errno.None, s.Mm.InstallSpecialMapping(s.Cpu, vvar + (4 * Sim.K4), 2 * Sim.K4, SpecialMapping.Vdso));
        Assert.True(s.Cpu.ReadByte(vvar, out _).Ok);
        foreach (var advice in new[] { Advice.GuardInstall, Advice.GuardRemove })
        {
            Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, vvar, Sim.K4, advice));
            Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, vvar + (4 * Sim.K4), Sim.K4, advice));
        }

        Assert.True(Entry.IsPresent(s.Mm.PeekPte(vvar)));
        Assert.True(s.Cpu.ReadByte(vvar + (4 * Sim.K4), out _).Ok);
    }
}
