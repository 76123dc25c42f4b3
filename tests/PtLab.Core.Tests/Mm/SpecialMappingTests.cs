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

    /// <summary>A process with exec's special mappings, the vDSO and its vvar page both read.</summary>
    private static SimThread WithVdso(Machine m)
    {
        var t = m.CreateProcess().MainThread;
        var cpu = t.Activate();
        Assert.Equal(Errno.None, t.Mm.InstallSpecialMapping(cpu, Vvar, VvarLength, SpecialMapping.Vvar));
        Assert.Equal(Errno.None, t.Mm.InstallSpecialMapping(cpu, Vdso, VdsoLength, SpecialMapping.Vdso));
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
}
