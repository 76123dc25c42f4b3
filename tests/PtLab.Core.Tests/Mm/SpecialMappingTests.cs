using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Tests.Mm;

/// <summary>
/// Special mappings (mm/vma.c _install_special_mapping, special_mapping_fault; x86's map_vdso):
/// the vDSO's text is the kernel's pages, mapped by a fault and counted in RssFile; the vvar data
/// pages are raw frame numbers, counted nowhere; fork copies the vvar entries and not the vDSO's.
/// </summary>
public class SpecialMappingTests
{
    private const ulong Vvar = 0x7f00_0000_0000;
    private const ulong VvarLength = 4 * Sim.K4;
    private const ulong Vdso = Vvar + VvarLength;
    private const ulong VdsoLength = 2 * Sim.K4;
    private const ulong Far = 0x1_0000_0000;

    private static Machine NewMachine() =>
        new(new MachineOptions
        {
            Cpus = 1,
            RamBytes = 64L << 20,
            PageData = false,
            LockDep = true,
            Scheduler = new PanicOnFailure(),
            Design = Designs.Factory("pt-reclaim")!,
        });

    /// <summary>A process with exec's special mappings, nothing of them mapped yet.</summary>
    private static SimThread Installed(Machine m)
    {
        var t = m.CreateProcess().MainThread;
        var cpu = t.Activate();
        Assert.Equal(Errno.None, t.Mm.InstallSpecialMapping(cpu, Vvar, VvarLength, SpecialMapping.Vvar));
        Assert.Equal(Errno.None, t.Mm.InstallSpecialMapping(cpu, Vdso, VdsoLength, SpecialMapping.Vdso));
        return t;
    }

    /// <summary>A process with exec's special mappings, the vDSO and its vvar page both read.</summary>
    private static SimThread WithVdso(Machine m)
    {
        var t = Installed(m);
        var cpu = t.Activate();
        Assert.True(cpu.ReadByte(Vdso + 0x20, out _).Ok);
        Assert.True(cpu.ReadByte(Vvar + 0x80, out _).Ok);
        return t;
    }

    [Fact]
    public void TheVdsoCountsInRssFileAndTheVvarNowhere()
    {
        var m = NewMachine();
        var t = WithVdso(m);
        var s = t.Mm.Status();
        Assert.Equal(4, s.RssFileKb);
        Assert.Equal(0, s.RssAnonKb);
        Assert.Equal(0, s.RssShmemKb);
        var vdso = t.Mm.FindVma(Vdso)!;
        Assert.False(vdso.IsAnonymous);
        Assert.Null(vdso.AnonVma);
        Assert.Equal(VmFlags.DontExpand, vdso.Flags & VmFlags.DontExpand);
        Assert.True(Entry.IsSpecial(t.Mm.PeekPte(Vvar)), "a vvar entry is a raw frame number (pte_special)");
        Assert.False(Entry.IsSpecial(t.Mm.PeekPte(Vdso)));

        // No fault-around: the vDSO's second page stays unmapped until read, and then counts too.
        Assert.True(Entry.IsNone(t.Mm.PeekPte(Vdso + Sim.K4)));
        Assert.True(t.Activate().ReadByte(Vdso + Sim.K4, out _).Ok);
        Assert.Equal(8, t.Mm.Status().RssFileKb);

        // A write is refused (no VM_WRITE), as the kernel's access_error refuses it.
        Assert.False(t.Activate().Touch(Vdso).Ok);
    }

    [Fact]
    public void EveryProcessMapsTheSameKernelPages()
    {
        var m = NewMachine();
        var a = WithVdso(m);
        var b = WithVdso(m);
        Assert.Equal(Entry.Pfn(a.Mm.PeekPte(Vdso)), Entry.Pfn(b.Mm.PeekPte(Vdso)));
        Assert.Equal(Entry.Pfn(a.Mm.PeekPte(Vvar)), Entry.Pfn(b.Mm.PeekPte(Vvar)));
        Assert.NotEqual(Entry.Pfn(a.Mm.PeekPte(Vdso)), Entry.Pfn(a.Mm.PeekPte(Vvar)));
    }

    /// <summary>
    /// vma_needs_copy: the vDSO VMA has no anon_vma, so the child gets no entries and refaults
    /// the page (RssFile 0 until it does); the vvar VMA is VM_PFNMAP, so its entries are copied.
    /// </summary>
    [Fact]
    public void ForkCopiesTheVvarEntriesAndTheChildRefaultsTheVdso()
    {
        var m = NewMachine();
        var parent = WithVdso(m);
        var child = m.Fork(parent)!.MainThread;
        Assert.Equal(0, child.Mm.Status().RssFileKb);
        Assert.True(Entry.IsNone(child.Mm.PeekPte(Vdso)));
        Assert.True(Entry.IsSpecial(child.Mm.PeekPte(Vvar)));
        Assert.True(child.Activate().ReadByte(Vdso + 0x20, out _).Ok);
        Assert.Equal(4, child.Mm.Status().RssFileKb);
        Assert.Equal(4, parent.Mm.Status().RssFileKb);
    }

    /// <summary>
    /// munmap of the vDSO uncounts its page and frees nothing (the page is the kernel's); mremap
    /// moves it, still special, its page still counted, but may not grow it (VM_DONTEXPAND:
    /// EFAULT); exits leave only the reserved frames.
    /// </summary>
    [Fact]
    public void UnmapAndMremapKeepTheKernelPages()
    {
        var m = NewMachine();
        var a = WithVdso(m);
        var b = WithVdso(m);
        long used = m.Phys.UsedFrames;
        var cpu = a.Activate();
        Assert.Equal(Errno.EFAULT, a.Mm.Mremap(cpu, Vdso, VdsoLength, 2 * VdsoLength, MremapFlags.MayMove).Error);
        var moved = a.Mm.Mremap(cpu, Vdso, VdsoLength, VdsoLength, MremapFlags.MayMove | MremapFlags.Fixed, Vdso + Sim.M2);
        Assert.True(moved.Ok, moved.ToString());
        Assert.Same(SpecialMapping.Vdso, a.Mm.FindVma(Vdso + Sim.M2)!.Special);
        Assert.Equal(4, a.Mm.Status().RssFileKb);
        Assert.Equal(Errno.None, a.Mm.Munmap(cpu, Vdso + Sim.M2, VdsoLength));
        Assert.Equal(0, a.Mm.Status().RssFileKb);
        Assert.True(m.Phys.UsedFrames <= used, "unmapping the vDSO freed or took no page of its own");
        Assert.True(b.Activate().ReadByte(Vdso + 0x20, out _).Ok);
        Assert.Equal(4, b.Mm.Status().RssFileKb);
        m.ExitProcess(a.Process);
        m.ExitProcess(b.Process);
        m.Rcu.Barrier();
        Assert.Equal(2, m.Phys.SpecialFrameCount); // one set for the machine: the vvar and vDSO pages read
        Assert.Equal(m.Phys.ReservedFrames, m.Phys.UsedFrames);
    }

    // A special mapping is never split (special_mapping_split, the may_split of every special
    // mapping, refuses with EINVAL); mlock passes over VM_SPECIAL VMAs without locking them; the
    // kernel test SpecialMappingKernelTests checks the same table on the host.

    /// <summary>The VMA at <paramref name="addr"/> still spans [start, start + length) with flags <paramref name="flags"/> (the VM_* bits compared).</summary>
    private static void Unchanged(SimThread t, ulong start, ulong length, VmFlags flags)
    {
        var v = t.Mm.FindVma(start)!;
        Assert.Equal((start, start + length), (v.Start, v.End));
        Assert.Equal(flags, v.Flags);
    }

    public static TheoryData<string> Cases() => ["vdso", "vvar"];

    [Theory]
    [MemberData(nameof(Cases))]
    public void CallsThatWouldSplitASpecialVmaFailWithEinval(string which)
    {
        var t = Installed(NewMachine());
        var cpu = t.Activate();
        ulong s = which == "vdso" ? Vdso : Vvar;
        ulong len = which == "vdso" ? VdsoLength : VvarLength;
        var flags = t.Mm.FindVma(s)!.Flags;
        Assert.Equal(Errno.EINVAL, t.Mm.Munmap(cpu, s, Sim.K4));
        Unchanged(t, s, len, flags);
        Assert.Equal(Errno.EINVAL, t.Mm.Mprotect(cpu, s, Sim.K4, Prot.None));
        Unchanged(t, s, len, flags);
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, s, Sim.K4, Advice.NoHugePage));
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, s, Sim.K4, Advice.Random));
        Unchanged(t, s, len, flags);
        Assert.Equal(Errno.EINVAL, t.Mm.Mremap(cpu, s, Sim.K4, Sim.K4, MremapFlags.MayMove | MremapFlags.Fixed, Far).Error);
        Unchanged(t, s, len, flags);
        Assert.Null(t.Mm.VmaLookup(Far));
        Assert.Equal(Errno.EINVAL, t.Mm.Mremap(cpu, s, len, Sim.K4, MremapFlags.None).Error);
        Unchanged(t, s, len, flags);
        Assert.Equal(Errno.EINVAL, t.Mm.Mmap(cpu, s, Sim.K4, Prot.Read, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed).Error);
        Unchanged(t, s, len, flags);

        // A call that changes nothing needs no split and succeeds.
        Assert.Equal(Errno.None, t.Mm.Mprotect(cpu, s, Sim.K4, which == "vdso" ? Prot.Read | Prot.Exec : Prot.Read));
        Unchanged(t, s, len, flags);

        // The whole VMA may be changed or unmapped.
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, s, len, Advice.NoHugePage));
        Unchanged(t, s, len, flags | VmFlags.NoHugePage);
        Assert.Equal(Errno.None, t.Mm.Munmap(cpu, s, len));
        Assert.Null(t.Mm.VmaLookup(s));
    }

    [Fact]
    public void MlockPassesOverSpecialVmasWithoutLockingThem()
    {
        var t = Installed(NewMachine());
        var cpu = t.Activate();
        var vdso = t.Mm.FindVma(Vdso)!.Flags;
        var vvar = t.Mm.FindVma(Vvar)!.Flags;
        Assert.Equal(Errno.None, t.Mm.Mlock(cpu, Vdso, Sim.K4));
        Assert.Equal(Errno.None, t.Mm.Mlock(cpu, Vvar, Sim.K4));
        Unchanged(t, Vdso, VdsoLength, vdso);
        Unchanged(t, Vvar, VvarLength, vvar);
        Assert.Equal(0, t.Mm.Status().VmLckKb);

        // mlock still populates the vDSO's page (its pages are ordinary and counted in RssFile).
        Assert.Equal(4, t.Mm.Status().RssFileKb);

        // MLOCK_ONFAULT too: the vDSO never becomes VM_LOCKONFAULT, so the populate faults it in.
        Assert.Equal(Errno.None, t.Mm.Mlock2(cpu, Vvar, VvarLength + VdsoLength, MlockFlags.OnFault));
        Assert.Equal(8, t.Mm.Status().RssFileKb);
        Assert.Equal(Errno.None, t.Mm.Mlockall(cpu, MlockallFlags.Current));
        Unchanged(t, Vdso, VdsoLength, vdso);
        Unchanged(t, Vvar, VvarLength, vvar);
        Assert.Equal(0, t.Mm.Status().VmLckKb);
    }

    [Fact]
    public void PopulateAndDontunmapRefuseThePfnMapAndTheDontexpandVmas()
    {
        var t = Installed(NewMachine());
        var cpu = t.Activate();
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, Vvar, VvarLength, Advice.PopulateRead));
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, Vvar, VvarLength, Advice.PopulateWrite));
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, Vdso, VdsoLength, Advice.PopulateWrite));
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, Vdso, VdsoLength, Advice.PopulateRead));
        Assert.Equal(8, t.Mm.Status().RssFileKb);
        Assert.Equal(Errno.EINVAL, t.Mm.Mremap(cpu, Vdso, VdsoLength, VdsoLength, MremapFlags.MayMove | MremapFlags.DontUnmap).Error);
        Assert.Equal(Errno.EINVAL, t.Mm.Mremap(cpu, Vvar, VvarLength, VvarLength, MremapFlags.MayMove | MremapFlags.DontUnmap).Error);
        Assert.Equal(Errno.EFAULT, t.Mm.Mremap(cpu, Vvar, VvarLength, VvarLength + Sim.K4, MremapFlags.MayMove).Error);

        // mprotect beyond VM_MAY*: EACCES on the vvar (no VM_MAYWRITE); the vDSO may become
        // writable, as a whole, and is then charged (VM_ACCOUNT).
        Assert.Equal(Errno.EACCES, t.Mm.Mprotect(cpu, Vvar, Sim.K4, Prot.Read | Prot.Write));
        Assert.Equal(Errno.EACCES, t.Mm.Mprotect(cpu, Vvar, VvarLength, Prot.Read | Prot.Write));
        Assert.Equal(Errno.EINVAL, t.Mm.Mprotect(cpu, Vdso, Sim.K4, Prot.Read | Prot.Write));
        Assert.Equal(Errno.None, t.Mm.Mprotect(cpu, Vdso, VdsoLength, Prot.Read | Prot.Write));
        Assert.Equal(VmFlags.Write | VmFlags.Account, t.Mm.FindVma(Vdso)!.Flags & (VmFlags.Write | VmFlags.Exec | VmFlags.Account));
    }

    [Fact]
    public void MadviseFlagChecksOnTheVvar()
    {
        var t = Installed(NewMachine());
        var cpu = t.Activate();
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, Vvar, Sim.K4, Advice.DontDump)); // already VM_DONTDUMP: no split
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, Vvar, Sim.K4, Advice.DoDump));
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, Vdso, Sim.K4, Advice.DoDump));
        Assert.Equal(Errno.EINVAL, t.Mm.Madvise(cpu, Vvar, Sim.K4, Advice.DontNeed));
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, Vdso, Sim.K4, Advice.DontNeed));
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, Vvar, VvarLength, Advice.DontFork));
        Assert.Equal(VmFlags.DontCopy, t.Mm.FindVma(Vvar)!.Flags & VmFlags.DontCopy);
    }
}
