using PtLab.Mm;
using PtLab.Paging;
using PtLab.Systematic;

namespace PtLab.Tests.Mm;

/// <summary>
/// MADV_COLLAPSE in the model, under every design: the 2 MiB keeps its contents, becomes one PMD
/// leaf with its old PTE table deposited (VmPTE unchanged, RssAnon the whole 2 MiB), and the
/// invariants hold after the collapse, after a split of the new leaf and at exit.
/// </summary>
public class CollapseTests
{
    private const ulong At = 0x4000_0000;

    private static bool IsLeaf(Sim s, ulong va)
    {
        var phys = s.Machine.Phys;
        ulong pgde = phys.Table(s.Mm.PgdPfn)[Geometry.Index(va, 4)];
        ulong pude = phys.Table(Entry.Pfn(pgde))[Geometry.Index(va, 3)];
        return Entry.IsHuge(phys.Table(Entry.Pfn(pude))[Geometry.Index(va, 2)]);
    }

    private static void Write(Sim s, ulong va, byte value) => Assert.True(s.Cpu.Write(va, [value, (byte)(value + 1)]).Ok);

    private static void AssertHolds(Sim s, ulong va, byte value)
    {
        Span<byte> b = stackalloc byte[2];
        Assert.True(s.Cpu.Read(va, b).Ok);
        Assert.Equal(value, b[0]);
        Assert.Equal((byte)(value + 1), b[1]);
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void ACollapseKeepsTheContentsAndDepositsTheTable(string design)
    {
        using var s = new Sim(design: PtLab.Reclaim.Designs.Factory(design));
        ulong a = s.Map(4 * Sim.M2, addr: At);
        for (int i = 0; i < 512; i += 7)
        {
            Write(s, a + ((ulong)i * Sim.K4) + 100, (byte)i);
        }

        Assert.True(s.Cpu.ReadByte(a + (3 * Sim.K4), out _).Ok); // a zero-page entry
        var before = s.Mm.Status();
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        var after = s.Mm.Status();
        Assert.True(IsLeaf(s, a));
        Assert.Equal(before.VmPteKb, after.VmPteKb);
        Assert.Equal(2048, after.RssAnonKb);
        Assert.Equal(1, s.Mm.DepositedTables);
        Assert.Equal(1, s.Mm.ThpCollapseAlloc);
        s.AssertAccountingConsistent();
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + (4 * Sim.M2), exit: false));
        for (int i = 0; i < 512; i += 7)
        {
            AssertHolds(s, a + ((ulong)i * Sim.K4) + 100, (byte)i);
        }

        // A partial zap splits the leaf into the deposited table.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + (7 * Sim.K4), Sim.K4, Advice.DontNeed));
        Assert.False(IsLeaf(s, a));
        AssertHolds(s, a + (14 * Sim.K4) + 100, 14);
        s.AssertAccountingConsistent();
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + (4 * Sim.M2), exit: false));

        // Collapsed again, then unmapped: the deposit goes with the leaf.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        Assert.True(IsLeaf(s, a));
        AssertHolds(s, a + (14 * Sim.K4) + 100, 14);
        s.Mm.Munmap(s.Cpu, a, 4 * Sim.M2);
        Assert.Equal(0, s.Mm.DepositedTables);
        s.AssertAccountingConsistent();
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + (4 * Sim.M2)));
    }

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void APteMappedHugePageAndAMlockedRangeCollapse(string design)
    {
        using var s = new Sim(design: PtLab.Reclaim.Designs.Factory(design));
        ulong a = s.Map(2 * Sim.M2, addr: At);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, 2 * Sim.M2, Advice.HugePage));
        Write(s, a + 100, 9);
        Assert.True(IsLeaf(s, a));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.K4, Sim.K4, Prot.Read)); // split: 512 PTEs of one huge page
        Assert.False(IsLeaf(s, a));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.K4, Sim.K4, Prot.Read | Prot.Write));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        Assert.True(IsLeaf(s, a));
        AssertHolds(s, a + 100, 9);
        s.AssertAccountingConsistent();

        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, a + Sim.M2, Sim.M2));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Collapse));
        Assert.True(IsLeaf(s, a + Sim.M2));
        Assert.Equal(4096, s.Mm.Status().RssAnonKb);
        s.AssertAccountingConsistent();
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + (2 * Sim.M2)));
    }

    [Fact]
    public void SwappedPagesAreReadInAndAPinnedPageRefusesWithEagain()
    {
        using var s = new Sim(swapBytes: 64L << 20);
        ulong a = s.Map(2 * Sim.M2, addr: At);
        Write(s, a + 100, 5);
        Write(s, a + Sim.K4 + 100, 6);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.PageOut));
        Assert.True(Entry.IsSwap(s.Mm.PeekPte(a)));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        Assert.True(IsLeaf(s, a));
        Assert.Equal(0, s.Mm.Status().VmSwapKb);
        AssertHolds(s, a + 100, 5);
        AssertHolds(s, a + Sim.K4 + 100, 6);

        Write(s, a + Sim.M2, 7);
        Span<long> pinned = stackalloc long[1];
        Assert.Equal(1, s.Mm.GetUserPages(s.Cpu, a + Sim.M2, 1, write: true, pinned));
        Assert.Equal(Errno.EAGAIN, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Collapse));
        Assert.False(IsLeaf(s, a + Sim.M2));
        s.Mm.PutUserPages(s.Cpu, pinned);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Collapse));
        Assert.True(IsLeaf(s, a + Sim.M2));
        s.AssertAccountingConsistent();
    }

    /// <summary>
    /// A shared anonymous (shmem) mapping: the collapse replaces the cached pages by one PMD-sized
    /// folio (holes filled: RssShmem the whole 2 MiB), frees the PTE table (VmPTE 4 kB less, nothing
    /// deposited) and maps a PMD leaf; a later DONTNEED of one page zaps the whole leaf (RssShmem 0,
    /// VmPTE stays down), the folio stays cached, and the next fault maps it by a PMD again.
    /// </summary>
    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void AShmemCollapseFillsTheHolesFreesTheTableAndMapsALeaf(string design)
    {
        using var s = new Sim(design: PtLab.Reclaim.Designs.Factory(design));
        ulong a = s.Map(4 * Sim.M2, flags: MapFlags.Shared | MapFlags.Anonymous, addr: At);
        Assert.Equal(At, a);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse)); // nothing cached
        Write(s, a + 100, 5);
        Write(s, a + (9 * Sim.K4) + 100, 9);
        var before = s.Mm.Status();
        Assert.Equal(8, before.RssShmemKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        var after = s.Mm.Status();
        Assert.True(IsLeaf(s, a));
        Assert.Equal(before.VmPteKb - 4, after.VmPteKb);
        Assert.Equal(2048, after.RssShmemKb);
        Assert.Equal(0, after.RssAnonKb);
        Assert.Equal(0, s.Mm.DepositedTables);
        Assert.Equal(2, s.Mm.ThpCollapseAlloc); // the refused first try allocated one too, as collapse_file does before it finds the range empty
        Assert.Equal(2048, s.Mm.Smaps(s.Cpu).Single(v => v.Start == a).ShmemPmdMappedKb);
        s.AssertAccountingConsistent();
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + (4 * Sim.M2), exit: false));
        AssertHolds(s, a + 100, 5);
        AssertHolds(s, a + (9 * Sim.K4) + 100, 9);
        Write(s, a + (3 * Sim.K4) + 100, 3); // a filled hole, written through the leaf
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse)); // already a leaf

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.DontNeed));
        var zapped = s.Mm.Status();
        Assert.False(IsLeaf(s, a));
        Assert.Equal(0, zapped.RssShmemKb);
        Assert.Equal(after.VmPteKb, zapped.VmPteKb);
        s.AssertAccountingConsistent();
        AssertHolds(s, a + (3 * Sim.K4) + 100, 3); // the folio is still cached: a fault maps it whole
        Assert.True(IsLeaf(s, a));
        Assert.Equal(2048, s.Mm.Status().RssShmemKb);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.K4, Advice.DontNeed));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse)); // collapse_pte_mapped_thp maps it again
        Assert.True(IsLeaf(s, a));
        AssertHolds(s, a + (9 * Sim.K4) + 100, 9);

        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.NoHugePage));
        Write(s, a + Sim.M2, 1);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Collapse));
        s.Mm.Munmap(s.Cpu, a, 4 * Sim.M2);
        s.AssertAccountingConsistent();
        Assert.Null(Invariants.CheckAtQuiescence(s.Machine, s.Mm, a, a + (4 * Sim.M2)));
    }

    [Fact]
    public void AShmemPageHeldByGupRefusesWithEagainAndASharedFileIsNotCollapsedTwice()
    {
        using var s = new Sim();
        ulong a = s.Map(2 * Sim.M2, flags: MapFlags.Shared | MapFlags.Anonymous, addr: At);
        Write(s, a + 100, 4);
        var before = s.Mm.Status();
        Span<long> pinned = stackalloc long[1];
        Assert.Equal(1, s.Mm.GetUserPages(s.Cpu, a, 1, write: true, pinned));
        Assert.Equal(Errno.EAGAIN, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        Assert.False(IsLeaf(s, a));
        Assert.Equal(before, s.Mm.Status()); // the table went back as it was
        AssertHolds(s, a + 100, 4);
        s.Mm.PutUserPages(s.Cpu, pinned);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        Assert.True(IsLeaf(s, a));
        AssertHolds(s, a + 100, 4);

        // Split into VMAs of the same file: a 2 MiB that lies in two of them is no candidate
        // (EINVAL, as on the host); one that lies in one VMA is collapsed, the other VMAs mapping
        // other parts of the file.
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.M2, Sim.K4, Prot.Read));
        Write(s, a + Sim.M2 + Sim.K4, 1);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Collapse));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse)); // the cached folio, mapped again
        Assert.True(IsLeaf(s, a));
        AssertHolds(s, a + 100, 4);

        // After a fork the child maps the file too: not modelled, EINVAL.
        var child = s.Mm.Fork(s.Cpu)!;
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.DontNeed));
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
        child.Exit(s.Cpu);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void FilesTheThpSwitchesAndTheNeverModeAnswerAsTheHost()
    {
        using var s = new Sim(thp: ThpSettings.Never);
        ulong a = s.Map(2 * Sim.M2, addr: At);
        Write(s, a, 1);
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse)); // the sysfs mode does not matter
        Assert.True(IsLeaf(s, a));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.NoHugePage));
        Write(s, a + Sim.M2, 1);
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a + Sim.M2, Sim.M2, Advice.Collapse));
        s.Mm.ThpDisabled = true;
        Assert.Equal(Errno.EINVAL, s.Mm.Madvise(s.Cpu, a, Sim.M2, Advice.Collapse));
    }
}
