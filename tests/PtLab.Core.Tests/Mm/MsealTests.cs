using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Reclaim;
using PtLab.Sync;
using PtLab.Systematic;

namespace PtLab.Tests.Mm;

/// <summary>mseal (mm/mseal.c) and what a sealed VMA refuses: munmap, MAP_FIXED, mremap, mprotect, discarding advice, brk.</summary>
public class MsealTests
{
    private const ulong At = 0x40000000;

    private static ulong MapAt(Sim s, ulong at, ulong len, Prot prot = Sim.Rw) =>
        s.Map(len, prot, Sim.Anon | MapFlags.Fixed, at);

    private static Vma VmaAt(Sim s, ulong addr) => s.Mm.FindVma(addr) is { } v && v.Start <= addr ? v : throw new InvalidOperationException($"no VMA at 0x{addr:x}");

    private static bool Sealed(Sim s, ulong addr) => (VmaAt(s, addr).Flags & VmFlags.Sealed) != 0;

    [Fact]
    public void TheArgumentsAreCheckedBeforeTheRangeAndAnEmptyRangeSucceedsAnywhere()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.EINVAL, s.Mm.Mseal(s.Cpu, At, Sim.K4, 1));
        Assert.Equal(Errno.EINVAL, s.Mm.Mseal(s.Cpu, At + 1, Sim.K4, 0));
        Assert.Equal(Errno.EINVAL, s.Mm.Mseal(s.Cpu, At, ulong.MaxValue, 0)); // the rounding wraps
        Assert.Equal(Errno.EINVAL, s.Mm.Mseal(s.Cpu, At, ulong.MaxValue - At - Sim.K4 + 2, 0)); // the end wraps
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, 0x7000_0000, 0, 0)); // nothing mapped there, nothing to seal
        Assert.False(Sealed(s, At));
    }

    [Fact]
    public void AHoleAnywhereInTheRangeIsEnomemAndNothingIsSealed()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        MapAt(s, At + Sim.M1 + Sim.K4, Sim.M1);
        Assert.Equal(Errno.ENOMEM, s.Mm.Mseal(s.Cpu, At, 2 * Sim.M1, 0));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mseal(s.Cpu, At - Sim.K4, Sim.M1, 0));
        Assert.Equal(Errno.ENOMEM, s.Mm.Mseal(s.Cpu, At + Sim.M1 + Sim.K4, Sim.M1 + Sim.K4, 0));
        Assert.Equal(2, s.Mm.Vmas.Count);
        Assert.DoesNotContain(s.Mm.Vmas, v => (v.Flags & VmFlags.Sealed) != 0);
    }

    [Fact]
    public void SealingSplitsAtTheRangeEndsMergesSealedNeighboursAndSealingAgainDoesNothing()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At + Sim.K4, Sim.K4 + 1, 0)); // rounded up to two pages
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal((At + Sim.K4, At + (3 * Sim.K4)), (VmaAt(s, At + Sim.K4).Start, VmaAt(s, At + Sim.K4).End));
        Assert.True(Sealed(s, At + Sim.K4));
        Assert.False(Sealed(s, At));
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At + Sim.K4, 2 * Sim.K4, 0));
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At + (3 * Sim.K4), Sim.K4, 0)); // the next page joins the sealed VMA
        Assert.Equal(3, s.Mm.Vmas.Count);
        Assert.Equal(At + (4 * Sim.K4), VmaAt(s, At + Sim.K4).End);

        // A sealed VMA keeps its flag through an mlock, which it does not refuse, and stays apart
        // from an unsealed neighbour with the same flags otherwise.
        Assert.Equal(Errno.None, s.Mm.Mlock(s.Cpu, At, Sim.M1));
        Assert.Equal(Errno.None, s.Mm.Munlock(s.Cpu, At, Sim.M1));
        Assert.Equal(3, s.Mm.Vmas.Count);
    }

    /// <summary>
    /// A special mapping refuses to be split (special_mapping_split): sealing part of the vDSO is
    /// EINVAL, as on the host; sealing all of it succeeds, and a special mapping installed over a
    /// sealed VMA is refused without mapping anything.
    /// </summary>
    [Fact]
    public void SealingPartOfTheVdsoIsEinvalAndAllOfItSucceeds()
    {
        using var s = new Sim();
        Assert.Equal(Errno.None, s.Mm.InstallSpecialMapping(s.Cpu, At, 2 * Sim.K4, SpecialMapping.Vdso));
        Assert.Equal(Errno.EINVAL, s.Mm.Mseal(s.Cpu, At, Sim.K4, 0));
        Assert.False(Sealed(s, At));
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At, 2 * Sim.K4, 0));
        Assert.True(Sealed(s, At));
        Assert.Equal(Errno.EPERM, s.Mm.InstallSpecialMapping(s.Cpu, At, Sim.K4, SpecialMapping.Vvar));
        Assert.Single(s.Mm.Vmas);
    }

    [Fact]
    public void MunmapOfASealedVmaIsEpermAndUnmapsNothing()
    {
        using var s = new Sim();
        MapAt(s, At, 4 * Sim.M2);
        s.TouchAll(At, 4 * Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At + (2 * Sim.M2), Sim.M2, 0));
        long rss = s.Mm.Status().RssAnonKb;
        Assert.Equal(3, s.Mm.Vmas.Count);

        Assert.Equal(Errno.EPERM, s.Mm.Munmap(s.Cpu, At + (2 * Sim.M2), Sim.K4));
        Assert.Equal(Errno.EPERM, s.Mm.Munmap(s.Cpu, At, 4 * Sim.M2));
        Assert.Equal(rss, s.Mm.Status().RssAnonKb);
        Assert.Equal(3, s.Mm.Vmas.Count);

        // Starting inside the unsealed VMA before it: that VMA is split at the start first, and
        // the split stays when the sealed VMA refuses (vms_gather_munmap_vmas).
        Assert.Equal(Errno.EPERM, s.Mm.Munmap(s.Cpu, At + Sim.M2, 2 * Sim.M2));
        Assert.Equal(4, s.Mm.Vmas.Count);
        Assert.Equal(rss, s.Mm.Status().RssAnonKb);

        // The unsealed parts still go.
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At, 2 * Sim.M2));
        Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, At + (3 * Sim.M2), Sim.M2));
        Assert.Single(s.Mm.Vmas);
        Assert.True(Sealed(s, At + (2 * Sim.M2)));
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void MapFixedOverASealedVmaIsEpermAndTheOldMappingStays()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M2);
        s.TouchAll(At, Sim.K4);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At, Sim.M2, 0));
        var r = s.Mm.Mmap(s.Cpu, At + Sim.M1, Sim.M2, Sim.Rw, Sim.Anon | MapFlags.Fixed);
        Assert.Equal(Errno.EPERM, r.Error);
        Assert.Single(s.Mm.Vmas);
        Assert.True(s.Cpu.ReadByte(At, out byte b).Ok);
        Assert.Equal(1, b);
    }

    [Fact]
    public void MremapOfASealedVmaIsEpermEvenWithNoChangeAndSoIsAFixedMoveOntoOne()
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M1);
        MapAt(s, At + Sim.M2, Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At, Sim.M1, 0));
        Assert.Equal(Errno.EPERM, s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M1, MremapFlags.None).Error);
        Assert.Equal(Errno.EPERM, s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.K4, MremapFlags.None).Error);
        Assert.Equal(Errno.EPERM, s.Mm.Mremap(s.Cpu, At, Sim.M1, Sim.M2, MremapFlags.MayMove).Error);
        Assert.Equal(Errno.EFAULT, s.Mm.Mremap(s.Cpu, At + Sim.M1, Sim.K4, Sim.K4, MremapFlags.None).Error); // no VMA comes first
        Assert.Equal(
            Errno.EPERM,
            s.Mm.Mremap(s.Cpu, At + Sim.M2, Sim.K4, Sim.K4, MremapFlags.MayMove | MremapFlags.Fixed | MremapFlags.DontUnmap, At + Sim.K4).Error);
        Assert.Equal(Errno.EPERM, s.Mm.Mremap(s.Cpu, At + Sim.M2, Sim.M1, Sim.M1 / 2, MremapFlags.MayMove | MremapFlags.Fixed, At).Error);
        Assert.Equal(2, s.Mm.Vmas.Count);
        Assert.Equal(Sim.M1, VmaAt(s, At + Sim.M2).End - VmaAt(s, At + Sim.M2).Start);
    }

    [Fact]
    public void MprotectOfASealedVmaIsEpermEvenWithoutAChangeAfterTheVmasBeforeItChanged()
    {
        using var s = new Sim();
        MapAt(s, At, 2 * Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At + Sim.M1, Sim.M1, 0));
        Assert.Equal(Errno.EPERM, s.Mm.Mprotect(s.Cpu, At + Sim.M1, Sim.K4, Sim.Rw));
        Assert.Equal(Errno.EPERM, s.Mm.Mprotect(s.Cpu, At, 2 * Sim.M1, Prot.Read));
        Assert.Equal(VmFlags.Read, VmaAt(s, At).Flags & (VmFlags.Read | VmFlags.Write));
        Assert.Equal(VmFlags.Read | VmFlags.Write, VmaAt(s, At + Sim.M1).Flags & (VmFlags.Read | VmFlags.Write));

    }

    [Theory]
    [InlineData(Advice.DontNeed)]
    [InlineData(Advice.Free)]
    [InlineData(Advice.DontNeedLocked)]
    [InlineData(Advice.DontFork)]
    [InlineData(Advice.WipeOnFork)]
    [InlineData(Advice.GuardInstall)]
    [InlineData(Advice.Remove)]
    public void ADiscardingAdviceIsRefusedOnSealedReadOnlyAnonymousMemoryOnly(Advice advice)
    {
        using var s = new Sim();
        MapAt(s, At, Sim.M2);
        s.TouchAll(At, Sim.M2);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, At + Sim.M1, Sim.M1, Prot.Read));
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At, Sim.M2, 0));
        long rss = s.Mm.Status().RssAnonKb;

        // Read-only and sealed: the data could not be rewritten, so it may not be thrown away.
        Assert.Equal(Errno.EPERM, s.Mm.Madvise(s.Cpu, At + Sim.M1, Sim.K4, advice));
        Assert.Equal(rss, s.Mm.Status().RssAnonKb);
        Assert.Equal(VmFlags.None, VmaAt(s, At + Sim.M1).Flags & (VmFlags.DontCopy | VmFlags.WipeOnFork | VmFlags.MaybeGuard));

        // Writable and sealed: allowed (REMOVE still wants a shared file, and says so).
        var writable = s.Mm.Madvise(s.Cpu, At, Sim.K4, advice);
        Assert.Equal(advice == Advice.Remove ? Errno.EINVAL : Errno.None, writable);

        // A non-discarding advice is never refused.
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At + Sim.M1, Sim.K4, Advice.DontDump));
    }

    [Fact]
    public void DiscardingAdviceOnASealedReadOnlyFileMappingIsAllowed()
    {
        using var s = new Sim();
        var f = s.Machine.Files.GetOrCreate(new FileId(1, 7), Sim.M1);
        Assert.True(f.Populate(0, Sim.M1));
        Assert.True(s.Mm.Mmap(s.Cpu, At, Sim.M1, Prot.Read, MapFlags.Private | MapFlags.Fixed, f, 0).Ok);
        s.TouchAll(At, Sim.M1, write: false);
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, At, Sim.M1, 0));
        Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, At, Sim.M1, Advice.DontNeed)); // !vma_is_anonymous
        Assert.Equal(0, s.Mm.Status().RssFileKb);
    }

    [Fact]
    public void ASealedHeapCannotShrinkAndBrkAnswersWithTheOldBreak()
    {
        using var s = new Sim();
        ulong start = s.Mm.StartBrk;
        ulong top = start + (4 * Sim.M1);
        Assert.Equal(top, s.Mm.Brk(s.Cpu, top));
        Assert.Equal(Errno.None, s.Mm.Mseal(s.Cpu, start + Sim.M1, Sim.M1, 0));
        Assert.Equal(top, s.Mm.Brk(s.Cpu, start));
        Assert.Equal(top, s.Mm.Brk(s.Cpu, 0));
        Assert.Equal(start + (2 * Sim.M1), s.Mm.Brk(s.Cpu, start + (2 * Sim.M1))); // above the seal it shrinks
    }

    [Fact]
    public void ForkCopiesTheSeal()
    {
        var m = new Machine(new MachineOptions { Cpus = 2, RamBytes = 64L << 20, LockDep = true, Scheduler = new PanicOnFailure(), Design = () => new NoReclaim() });
        var parent = m.CreateProcess().MainThread;
        var cpu = parent.Activate();
        Assert.True(parent.Mm.Mmap(cpu, At, Sim.M1, Sim.Rw, Sim.Anon | MapFlags.Fixed).Ok);
        Assert.Equal(Errno.None, parent.Mm.Mseal(cpu, At, Sim.M1, 0));
        var child = m.Fork(parent)!;
        var ccpu = child.MainThread.Activate();
        Assert.Equal(Errno.EPERM, child.Mm.Munmap(ccpu, At, Sim.M1));
        Assert.Equal(VmFlags.Sealed, child.Mm.FindVma(At)!.Flags & VmFlags.Sealed);
    }
}
