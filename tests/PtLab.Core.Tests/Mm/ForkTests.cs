using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;
using PtLab.Sync;
using PtLab.Systematic;

namespace PtLab.Tests.Mm;

/// <summary>fork (kernel/fork.c dup_mmap, mm/memory.c copy_page_range), exec and exit.</summary>
public class ForkTests
{
    private const ulong Base = 0x40000000;

    private static Machine NewMachine(int cpus = 2, string design = "none", long swapBytes = 0, long ram = 256L << 20, bool pageData = true) =>
        new(new MachineOptions
        {
            Cpus = cpus,
            RamBytes = ram,
            PageData = pageData,
            SwapBytes = swapBytes,
            LockDep = true,
            Scheduler = new PanicOnFailure(),
            Design = Designs.Factory(design)!,
        });

    private static ulong Map(SimThread t, ulong length, MapFlags flags = Sim.Anon, ulong addr = Base, SimFile? file = null)
    {
        var r = t.Mm.Mmap(t.Activate(), addr, length, Sim.Rw, flags | MapFlags.Fixed, file, 0);
        Assert.True(r.Ok, r.ToString());
        return r.Address;
    }

    private static void Touch(SimThread t, ulong start, ulong length, bool write = true)
    {
        var cpu = t.Activate();
        for (ulong va = start; va < start + length; va += Sim.K4)
        {
            var r = write ? cpu.Touch(va, (byte)(va >> 12)) : cpu.ReadByte(va, out _);
            Assert.True(r.Ok, $"touch 0x{va:x}: {r}");
        }
    }

    private static byte ReadByte(SimThread t, ulong va)
    {
        Assert.True(t.Activate().ReadByte(va, out byte b).Ok);
        return b;
    }

    /// <summary>A machine with one process whose <paramref name="length"/> bytes of private anonymous memory at <see cref="Base"/> are written.</summary>
    private static (Machine M, SimThread T, ulong At) Written(ulong length)
    {
        var m = NewMachine();
        var t = m.CreateProcess().MainThread;
        ulong a = Map(t, length);
        Touch(t, a, length);
        return (m, t, a);
    }

    /// <summary>
    /// MADV_DONTFORK marks its range VM_DONTCOPY (splitting the VMA): the child has a hole there,
    /// neither VMA nor tables nor committed memory; MADV_DOFORK takes the mark back off a part.
    /// </summary>
    [Fact]
    public void DontForkLeavesTheRangeOutOfTheChild()
    {
        var (m, pt, a) = Written(8 * Sim.M2);
        var cpu = pt.Activate();
        Assert.Equal(Errno.None, pt.Mm.Madvise(cpu, a, 6 * Sim.M2, Advice.DontFork));
        Assert.Equal(Errno.None, pt.Mm.Madvise(cpu, a + 4 * Sim.M2, 2 * Sim.M2, Advice.DoFork));
        Assert.Equal(2, pt.Mm.Vmas.Count(v => v.Start >= a && v.End <= a + 8 * Sim.M2)); // [a, a+4M) marked, the rest merged back
        Assert.Equal(VmFlags.DontCopy, pt.Mm.FindVma(a)!.Flags & VmFlags.DontCopy);
        var child = m.Fork(pt)!;
        Assert.Null(child.Mm.FindVma(a) is { } v && v.Start <= a ? v : null);
        Assert.Equal(a + 4 * Sim.M2, child.Mm.FindVma(a)!.Start);
        Assert.Equal(new TableCounts(4, 1, 1), child.Mm.Status().Tables);
        Assert.Equal(pt.Mm.Status().VmSizeKb - (4 * (long)Sim.M2 >> 10), child.Mm.Status().VmSizeKb);
        Assert.Equal(pt.Mm.CommittedPages - (long)(4 * Sim.M2 / Sim.K4), child.Mm.CommittedPages);
        Assert.Equal((byte)((a + 4 * Sim.M2) >> 12), ReadByte(child.MainThread, a + 4 * Sim.M2));
    }

    /// <summary>
    /// Memory locks are not inherited: <c>dup_mmap</c> clears VM_LOCKED and VM_LOCKONFAULT on the
    /// child's VMAs, and the child's <c>def_flags</c> keep only what fork passes on, so mlockall's
    /// MCL_FUTURE does not lock the child's new mappings (the host shows VmLck 0 kB in the child and
    /// no "lo" VMA in its smaps).
    /// </summary>
    [Fact]
    public void TheChildInheritsNoMemoryLocks()
    {
        var (m, pt, a) = Written(2 * Sim.M2);
        var cpu = pt.Activate();
        Assert.Equal(Errno.None, pt.Mm.Mlockall(cpu, MlockallFlags.Current | MlockallFlags.Future));
        Assert.Equal(VmFlags.Locked, pt.Mm.FindVma(a)!.Flags & VmFlags.Locked);
        Assert.True(pt.Mm.LockedVmKb >= 4096);
        var child = m.Fork(pt)!;
        Assert.All(child.Mm.Vmas, v => Assert.Equal(VmFlags.None, v.Flags & (VmFlags.Locked | VmFlags.LockOnFault)));
        Assert.Equal(0, child.Mm.LockedVmKb);
        ulong fresh = Map(child.MainThread, Sim.M2, addr: Base + 64 * Sim.M2);
        Assert.Equal(VmFlags.None, child.Mm.FindVma(fresh)!.Flags & VmFlags.Locked);
        Assert.Equal(VmFlags.Locked, pt.Mm.FindVma(a)!.Flags & VmFlags.Locked);
        Assert.Equal((byte)(a >> 12), ReadByte(child.MainThread, a));
    }

    /// <summary>
    /// MADV_WIPEONFORK: the child gets the VMA with no anon_vma and no tables, and faults in zero
    /// pages; the parent keeps its pages. Only private anonymous memory takes it (a shared or file
    /// mapping: EINVAL); MADV_KEEPONFORK takes it back off.
    /// </summary>
    [Fact]
    public void WipeOnForkGivesTheChildTheRangeEmpty()
    {
        var (m, pt, a) = Written(4 * Sim.M2);
        ulong shared = Map(pt, Sim.M2, MapFlags.Shared | MapFlags.Anonymous, Base + 64 * Sim.M2);
        var cpu = pt.Activate();
        Assert.Equal(Errno.None, pt.Mm.Madvise(cpu, a, 4 * Sim.M2, Advice.WipeOnFork));
        Assert.Equal(Errno.None, pt.Mm.Madvise(cpu, a + 3 * Sim.M2, Sim.M2, Advice.KeepOnFork));
        Assert.Equal(Errno.EINVAL, pt.Mm.Madvise(cpu, shared, Sim.M2, Advice.WipeOnFork));
        Assert.Equal(VmFlags.None, pt.Mm.FindVma(shared)!.Flags & VmFlags.WipeOnFork);
        var child = m.Fork(pt)!;
        var wiped = child.Mm.FindVma(a)!;
        Assert.Equal(a, wiped.Start);
        Assert.Equal(a + 3 * Sim.M2, wiped.End);
        Assert.Null(wiped.AnonVma);
        Assert.Equal(new TableCounts(1, 1, 1), child.Mm.Status().Tables); // only the kept 2 MiB has its table copied
        Assert.Equal(0, ReadByte(child.MainThread, a));
        Assert.Equal((byte)((a + 3 * Sim.M2) >> 12), ReadByte(child.MainThread, a + 3 * Sim.M2));
        Assert.Equal((byte)(a >> 12), ReadByte(pt, a));
        Touch(child.MainThread, a, Sim.M2);
        Assert.NotNull(child.Mm.FindVma(a)!.AnonVma);
    }

    [Fact]
    public void ForkCopiesTheTablesOfAnonymousMemoryAndSharesEveryPageCopyOnWrite()
    {
        var m = NewMachine();
        var parent = m.CreateProcess();
        var pt = parent.MainThread;
        ulong a = Map(pt, 4 * Sim.M2);
        Touch(pt, a, 3 * Sim.M2); // three PTE tables with pages, the fourth none
        var child = m.Fork(pt)!;
        var cs = child.Mm.Status();
        var ps = parent.Mm.Status();
        Assert.Equal(ps.Tables, cs.Tables);
        Assert.Equal(new TableCounts(3, 1, 1), cs.Tables);
        Assert.Equal(ps.RssAnonKb, cs.RssAnonKb);
        Assert.Equal(ps.VmSizeKb, cs.VmSizeKb);
        Assert.Equal(parent.Mm.CommittedPages, child.Mm.CommittedPages);

        ulong pp = parent.Mm.PeekPte(a), cp = child.Mm.PeekPte(a);
        Assert.Equal(Entry.Pfn(pp), Entry.Pfn(cp));
        Assert.False(Entry.IsWritable(pp));
        Assert.False(Entry.IsWritable(cp));
        Assert.False(Entry.IsYoung(cp)); // copies are old
        Assert.Equal(2, m.Phys.Desc(Entry.Pfn(pp)).MapCount);
        Assert.Equal(2, m.Phys.Desc(Entry.Pfn(pp)).RefCount);
        Assert.Equal((byte)(a >> 12), ReadByte(child.MainThread, a));

        // The child's anon_vma chain holds the parent's anon_vma (its pages) and one of its own.
        var cvma = child.Mm.FindVma(a)!;
        Assert.NotSame(parent.Mm.FindVma(a)!.AnonVma, cvma.AnonVma);
        Assert.Same(parent.Mm.FindVma(a)!.AnonVma, cvma.AnonVma!.Parent);
        Assert.Equal(2, parent.Mm.FindVma(a)!.AnonVma!.LinkedVmas);
        m.ExitProcess(child);
        m.ExitProcess(parent);
        m.Rcu.Barrier();
        Assert.Equal(1, m.Phys.UsedFrames);
    }

    [Fact]
    public void AWriteAfterForkCopiesTheWritersPageAndTheOtherThenReusesItsOwn()
    {
        var m = NewMachine();
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, Sim.M2);
        Touch(parent.MainThread, a, Sim.K4);
        long shared = Entry.Pfn(parent.Mm.PeekPte(a));
        var child = m.Fork(parent.MainThread)!;
        Assert.True(child.MainThread.Activate().Touch(a, 99).Ok);
        long copy = Entry.Pfn(child.Mm.PeekPte(a));
        Assert.NotEqual(shared, copy);
        Assert.Equal(1, m.Phys.Desc(shared).MapCount);
        Assert.Equal((byte)(a >> 12), ReadByte(parent.MainThread, a));
        Assert.Equal(99, ReadByte(child.MainThread, a));
        // The parent's page is exclusive again: its write reuses it in place.
        Assert.True(parent.MainThread.Activate().Touch(a, 5).Ok);
        Assert.Equal(shared, Entry.Pfn(parent.Mm.PeekPte(a)));
        Assert.Equal(4, parent.Mm.Status().RssAnonKb);
        Assert.Equal(4, child.Mm.Status().RssAnonKb);
        m.ExitProcess(child);
        m.ExitProcess(parent);
    }

    [Fact]
    public void AFileMappingWithoutAnonymousPagesIsNotCopiedAndTheChildRefaults()
    {
        var m = NewMachine();
        var parent = m.CreateProcess();
        var f = m.Files.GetOrCreate(new FileId(1, 2), 64 * Sim.K4);
        Assert.True(f.Populate(0, f.Size));
        ulong a = Map(parent.MainThread, 64 * Sim.K4, MapFlags.Shared, file: f);
        ulong b = Map(parent.MainThread, 64 * Sim.K4, MapFlags.Private, Base + Sim.M2, f);
        Touch(parent.MainThread, a, 64 * Sim.K4, write: false);
        Touch(parent.MainThread, b, 64 * Sim.K4, write: false);
        var child = m.Fork(parent.MainThread)!;
        var cs = child.Mm.Status();
        Assert.Equal(0, cs.RssFileKb);
        Assert.Equal(new TableCounts(0, 0, 0), cs.Tables);
        Assert.Equal(4, f.MappingVmas);

        // A private COW page gives the VMA an anon_vma: then its page-cache mappings are copied too.
        Touch(parent.MainThread, b, Sim.K4);
        var child2 = m.Fork(parent.MainThread)!;
        var c2 = child2.Mm.Status();
        Assert.Equal(4, c2.RssAnonKb);
        Assert.Equal(63 * 4, c2.RssFileKb);
        Assert.Equal(new TableCounts(1, 1, 1), c2.Tables);
        Assert.Equal(ReadByte(parent.MainThread, a + 100), ReadByte(child.MainThread, a + 100));
        Assert.Equal(16 * 4, child.Mm.Status().RssFileKb); // one fault-around window
        m.ExitProcess(child);
        m.ExitProcess(child2);
        m.ExitProcess(parent);
        Assert.Equal(0, f.MappingVmas);
    }

    [Fact]
    public void ForkSharesSharedAnonymousMemoryAndCopiesNoTablesForIt()
    {
        var m = NewMachine();
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, 16 * Sim.K4, MapFlags.Shared | MapFlags.Anonymous);
        Touch(parent.MainThread, a, 16 * Sim.K4);
        var child = m.Fork(parent.MainThread)!;
        Assert.Equal(0, child.Mm.Status().RssShmemKb);
        Assert.True(parent.MainThread.Activate().Touch(a + 8, 123).Ok);
        Assert.True(child.MainThread.Activate().ReadByte(a + 8, out byte v).Ok);
        Assert.Equal(123, v);
        Assert.Equal(16 * 4, child.Mm.Status().RssShmemKb);
        m.ExitProcess(parent);
        Assert.True(child.MainThread.Activate().ReadByte(a + 8, out v).Ok);
        Assert.Equal(123, v);
        m.ExitProcess(child);
        m.Rcu.Barrier();
        Assert.Equal(1, m.Phys.UsedFrames);
    }

    [Fact]
    public void ForkCopiesSwapEntriesAndBothSidesSwapInTheirOwnCopy()
    {
        var m = NewMachine(swapBytes: 16L << 20);
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, 64 * Sim.K4);
        Touch(parent.MainThread, a, 64 * Sim.K4);
        // Two passes: the first ages the young entries, the second swaps out.
        m.Vmscan.Reclaim(0, 64);
        m.Vmscan.Reclaim(0, 64);
        Assert.Equal(64 * 4, parent.Mm.Status().VmSwapKb);
        var child = m.Fork(parent.MainThread)!;
        Assert.Equal(64 * 4, child.Mm.Status().VmSwapKb);
        Assert.Equal(64, m.Phys.Swap!.UsedSlots);
        Assert.Equal((byte)((a + Sim.K4) >> 12), ReadByte(child.MainThread, a + Sim.K4));
        Assert.Equal((byte)((a + Sim.K4) >> 12), ReadByte(parent.MainThread, a + Sim.K4));
        Assert.Equal(63, m.Phys.Swap!.UsedSlots);
        m.ExitProcess(child);
        m.ExitProcess(parent);
        Assert.Equal(0, m.Phys.Swap!.UsedSlots);
    }

    [Fact]
    public void ReclaimReachesEveryMappingOfAPageSharedByFork()
    {
        var m = NewMachine(swapBytes: 16L << 20);
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, 16 * Sim.K4);
        Touch(parent.MainThread, a, 16 * Sim.K4);
        var child = m.Fork(parent.MainThread)!;
        long used = m.Phys.UsedFrames;
        m.Vmscan.Reclaim(0, 64);
        m.Vmscan.Reclaim(0, 64);
        // Each page went to swap once, and both address spaces now hold swap entries for it.
        Assert.Equal(16, m.Phys.Swap!.UsedSlots);
        Assert.Equal(16 * 4, parent.Mm.Status().VmSwapKb);
        Assert.Equal(16 * 4, child.Mm.Status().VmSwapKb);
        Assert.Equal(0, parent.Mm.Status().RssAnonKb);
        Assert.Equal(0, child.Mm.Status().RssAnonKb);
        Assert.Equal(used - 16, m.Phys.UsedFrames);
        Assert.Equal((byte)((a + (3 * Sim.K4)) >> 12), ReadByte(child.MainThread, a + (3 * Sim.K4)));
        m.ExitProcess(child);
        m.ExitProcess(parent);
        Assert.Equal(0, m.Phys.Swap!.UsedSlots);
    }

    [Fact]
    public void ALazyFreePageSharedByForkIsDiscardedFromBothMappings()
    {
        var m = NewMachine();
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, 16 * Sim.K4);
        Touch(parent.MainThread, a, 16 * Sim.K4);
        Assert.Equal(Errno.None, parent.Mm.Madvise(parent.MainThread.Activate(), a, 16 * Sim.K4, Advice.Free));
        var child = m.Fork(parent.MainThread)!;
        m.Vmscan.Reclaim(0, 64);
        m.Vmscan.Reclaim(0, 64);
        Assert.Equal(0, parent.Mm.Status().RssAnonKb);
        Assert.Equal(0, child.Mm.Status().RssAnonKb);
        Assert.Equal(0, ReadByte(child.MainThread, a)); // discarded: reads as zeros
        m.ExitProcess(child);
        m.ExitProcess(parent);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("atomic")]
    [InlineData("pte-ref")]
    [InlineData("pt-reclaim")]
    public void EveryDesignKeepsItsInvariantsAcrossForkDontneedAndExit(string design)
    {
        var m = NewMachine(design: design);
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, 4 * Sim.M2);
        Touch(parent.MainThread, a, 4 * Sim.M2);
        var child = m.Fork(parent.MainThread)!;
        foreach (var mm in new[] { parent.Mm, child.Mm })
        {
            Assert.Null(Invariants.Accounting(mm));
            Assert.Null(Invariants.Refcounts(mm));
            Assert.Null(Invariants.PresentEntriesMapLiveFrames(mm));
        }

        var ccpu = child.MainThread.Activate();
        Assert.Equal(Errno.None, child.Mm.Madvise(ccpu, a, 2 * Sim.M2, Advice.DontNeed));
        Touch(child.MainThread, a + (2 * Sim.M2), Sim.M2);
        Assert.Equal(Errno.None, parent.Mm.Madvise(parent.MainThread.Activate(), a + Sim.M2, Sim.M2, Advice.DontNeed));
        foreach (var mm in new[] { parent.Mm, child.Mm })
        {
            Assert.Null(Invariants.Accounting(mm));
            Assert.Null(Invariants.Refcounts(mm));
            Assert.Null(Invariants.PresentEntriesMapLiveFrames(mm));
        }

        // The DONTNEED calls covered whole tables: every design but none frees them.
        long expected = design == "none" ? 4 : 2;
        Assert.Equal(expected, child.Mm.Status().Tables.Pte);
        Assert.Equal(2 * Sim.M2 / 1024, (ulong)child.Mm.Status().RssAnonKb);
        Assert.Equal((byte)((a + (3 * Sim.M2)) >> 12), ReadByte(child.MainThread, a + (3 * Sim.M2)));
        m.ExitProcess(child);
        m.ExitProcess(parent);
        m.Rcu.Barrier();
        Assert.Equal(1, m.Phys.UsedFrames);
    }

    [Fact]
    public void ExecGivesTheProcessAnEmptyAddressSpaceAndTearsTheOldOneDown()
    {
        var m = NewMachine(cpus: 4);
        var p = m.CreateProcess();
        var t1 = p.MainThread;
        var t2 = m.CreateThread(p);
        Assert.NotEqual(t1.Cpu.Id, t2.Cpu.Id);
        ulong a = Map(t1, Sim.M2);
        Touch(t2, a, Sim.M2);
        var old = p.Mm;
        m.Exec(t2);
        Assert.NotSame(old, p.Mm);
        Assert.Equal(0, p.Mm.Status().VmSizeKb);
        Assert.True(t1.Exited);
        Assert.Single(p.Threads);
        Assert.DoesNotContain(old, m.AddressSpaces);
        Assert.Equal(FaultOutcome.SegvMapErr, t2.Activate().Touch(a).Outcome);
        m.ExitProcess(p);
        Assert.True(p.Exited);
        Assert.Empty(m.AddressSpaces);
    }

    [Fact]
    public void AVforkChildSharesTheAddressSpaceUntilItExecs()
    {
        var m = NewMachine();
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, Sim.M2);
        var child = m.CloneVm(parent.MainThread);
        Assert.Same(parent.Mm, child.Mm);
        Assert.Equal(2, parent.Mm.Users);
        Assert.True(child.MainThread.Activate().Touch(a, 3).Ok);
        Assert.Equal(3, ReadByte(parent.MainThread, a));
        m.Exec(child.MainThread);
        Assert.NotSame(parent.Mm, child.Mm);
        Assert.Equal(1, parent.Mm.Users);
        Assert.Equal(3, ReadByte(parent.MainThread, a));
        m.ExitProcess(child);
        m.ExitProcess(parent);
        Assert.Empty(m.AddressSpaces);
    }

    [Fact]
    public void ThreadsGetTheirOwnCpusWhileThereAreEnoughAndShareThemAfter()
    {
        var m = NewMachine(cpus: 2);
        var p = m.CreateProcess();
        var q = m.CreateProcess();
        Assert.NotEqual(p.MainThread.Cpu.Id, q.MainThread.Cpu.Id);
        var t = m.CreateThread(p);
        ulong a = Map(t, Sim.M2);
        ulong b = Map(q.MainThread, Sim.M2);
        // Two address spaces take turns on a CPU: each access switches it (and flushes its TLB).
        Touch(t, a, Sim.K4);
        Touch(q.MainThread, b, Sim.K4);
        Touch(p.MainThread, a + Sim.K4, Sim.K4);
        Assert.Equal(8, p.Mm.Status().RssAnonKb);
        Assert.Equal(4, q.Mm.Status().RssAnonKb);
        m.ExitThread(t);
        Assert.Single(p.Threads);
        m.ExitProcess(p);
        m.ExitProcess(q);
        Assert.Empty(m.AddressSpaces);
    }

    [Fact]
    public void AForkThatRunsOutOfMemoryLeavesNothingBehind()
    {
        var m = NewMachine(ram: 8L << 20, pageData: false);
        var parent = m.CreateProcess();
        ulong a = Map(parent.MainThread, 64 * Sim.M2, Sim.Anon | MapFlags.NoReserve);
        for (ulong va = a; va < a + (64 * Sim.M2); va += Sim.M2)
        {
            Assert.True(parent.MainThread.Activate().Touch(va).Ok);
        }

        long used = m.Phys.UsedFrames;
        m.Phys.FaultInjection = new FaultInjector(AllocSite.Table, failAt: 10);
        Assert.Null(m.Fork(parent.MainThread));
        m.Phys.FaultInjection = null;
        m.Rcu.Barrier();
        Assert.Equal(used, m.Phys.UsedFrames);
        Assert.Single(m.AddressSpaces);
        Assert.Equal(1, parent.Mm.FindVma(a)!.AnonVma!.LinkedVmas);
        m.ExitProcess(parent);
    }

    [Fact]
    public void ManyAddressSpacesLiveSideBySideAndEachCountsOnlyItsOwn()
    {
        var m = NewMachine(cpus: 4, pageData: false);
        var rng = new Random(5);
        var procs = new List<(SimProcess P, int Pages)>();
        for (int i = 0; i < 64; i++)
        {
            var p = m.CreateProcess();
            int pages = 1 + rng.Next(64);
            ulong a = Map(p.MainThread, Sim.M2, addr: Base + ((ulong)i * Sim.M2));
            Touch(p.MainThread, a, (ulong)pages * Sim.K4);
            procs.Add((p, pages));
        }

        Assert.Equal(64, m.AddressSpaces.Count);
        Assert.Equal(4, m.Processes.Select(p => p.MainThread.Cpu.Id).Distinct().Count());
        foreach (var (p, pages) in procs)
        {
            var st = p.Mm.Status();
            Assert.Equal(pages * 4, st.RssAnonKb);
            Assert.Equal(new TableCounts(1, 1, 1), st.Tables);
        }

        foreach (var (p, _) in procs.OrderBy(_ => rng.Next()))
        {
            m.ExitProcess(p);
        }

        m.Rcu.Barrier();
        Assert.Empty(m.AddressSpaces);
        Assert.Equal(1, m.Phys.UsedFrames);
    }
}
