using System.Runtime.InteropServices;
using PtLab.Mm;

namespace PtLab.Kernel.Tests;

public sealed class KernelTargetTests
{
    private const ulong TwoMiB = 2UL << 20;
    private const MapFlags Anon = MapFlags.Private | MapFlags.Anonymous;
    private const Prot Rw = Prot.Read | Prot.Write;

    [Fact]
    public void CreatingTheTargetOffLinuxFailsWithATypedError()
    {
        if (KernelTarget.IsSupported)
        {
            using var target = new KernelTarget();
            Assert.Equal("kernel", target.Name);
        }
        else
        {
            var ex = Assert.Throws<KernelUnavailableException>(() => new KernelTarget());
            Assert.Contains("Linux on x86-64", ex.Message);
        }
    }

    [LinuxFact]
    public void WrittenPagesCountInRssAndUnmappingReturnsThem()
    {
        using var target = new KernelTarget();
        var map = target.Mmap(0, 8 * TwoMiB, Rw, Anon);
        Assert.True(map.Ok, map.ToString());
        long before = target.Status().RssAnonKb;
        Assert.True(target.TouchPages(map.Address, 8 * TwoMiB, write: true).Ok);
        Assert.True(target.Status().RssAnonKb - before >= 16 * 1024 * 9 / 10, "16 MiB of writes should show in RssAnon");
        Assert.Equal(Errno.None, target.Munmap(map.Address, 8 * TwoMiB));
        Assert.Empty(target.Mappings);
    }

    [LinuxFact]
    public void LinuxErrnoValuesComeBackAsResults()
    {
        using var target = new KernelTarget();
        var map = target.Mmap(0, TwoMiB, Rw, Anon);
        Assert.Equal(Errno.EINVAL, target.Munmap(map.Address + 1, 4096));
        Assert.Equal(Errno.EINVAL, target.Madvise(map.Address, 4096, (Advice)12345));
        Assert.Equal(Errno.EINVAL, target.Mmap(0, 0, Rw, Anon).Error);
        Assert.Equal(Errno.EEXIST, target.Mmap(map.Address, 4096, Rw, Anon | MapFlags.FixedNoReplace).Error);
        Assert.Equal(Errno.EBADF, target.Mmap(0, 4096, Rw, MapFlags.Private).Error);
        Assert.Equal(new KernelError(9, "EBADF", target.LastError!.Value.Message), target.LastError);
    }

    [Fact]
    public void AnErrnoThePtLabEnumLacksIsNamedRatherThanLost()
    {
        var e = LinuxErrno.Describe(5);
        Assert.False(e.IsKnown);
        Assert.Equal("EIO", e.Name);
        Assert.Equal(5, (int)LinuxErrno.ToErrno(5));
        Assert.StartsWith("EIO (5): ", e.ToString());
        Assert.Equal("E?4095", LinuxErrno.Describe(4095).Name);
    }

    [LinuxFact]
    public void TouchingAProtNonePageIsAnAccessErrorNotACrash()
    {
        using var target = new KernelTarget();
        var map = target.Mmap(0, TwoMiB, Rw, Anon);
        Assert.Equal(Errno.None, target.Mprotect(map.Address + 4096, 4096, Prot.None));
        Assert.Equal(new AccessResult(FaultOutcome.SegvAccErr, map.Address + 4096), target.TouchPages(map.Address, TwoMiB, write: false));
        Assert.Equal(Errno.None, target.Mprotect(map.Address, 4096, Prot.Read));
        Assert.Equal(new AccessResult(FaultOutcome.SegvAccErr, map.Address), target.TouchPages(map.Address, 4096, write: true));
        Assert.True(target.TouchPages(map.Address, 4096, write: false).Ok);
    }

    [LinuxFact]
    public void TouchingFreeAddressSpaceIsAMappingError()
    {
        using var target = new KernelTarget();
        ulong free = KernelTarget.FindFreeRegion(1UL << 30, 1UL << 30);
        Assert.Equal(new AccessResult(FaultOutcome.SegvMapErr, free), target.TouchPages(free, 4096, write: true));
    }

    [LinuxFact]
    public void TheTargetRefusesToUnmapMemoryTheRuntimeMapped()
    {
        using var target = new KernelTarget();
        // A pinned array lives in the GC heap: memory the runtime mapped and is using right now.
        byte[] pinned = GC.AllocateArray<byte>(8192, pinned: true);
        ulong page = (ulong)Marshal.UnsafeAddrOfPinnedArrayElement(pinned, 0) & ~4095UL;
        var ex = Assert.Throws<ArgumentException>(() => target.Munmap(page, 4096));
        Assert.Equal("addr", ex.ParamName);
        Assert.Throws<ArgumentException>(() => target.Madvise(page, 4096, Advice.DontNeed));
        Assert.Throws<ArgumentException>(() => target.Mmap(page, 4096, Rw, Anon | MapFlags.Fixed));
        Assert.Throws<ArgumentException>(() => target.TouchPages(page, 1, write: true));
        GC.KeepAlive(pinned);
    }

    [LinuxFact]
    public void MunmapOfFreeAddressSpaceSucceedsAsOnLinux()
    {
        using var target = new KernelTarget();
        ulong free = KernelTarget.FindFreeRegion(1UL << 30, 1UL << 30);
        Assert.Equal(Errno.None, target.Munmap(free, TwoMiB));
        Assert.Equal(Errno.ENOMEM, target.Madvise(free, TwoMiB, Advice.DontNeed));
    }

    [LinuxFact]
    public void MapFixedOverFreeSpaceLandsExactlyThere()
    {
        using var target = new KernelTarget();
        ulong free = KernelTarget.FindFreeRegion(1UL << 30, 1UL << 30);
        var map = target.Mmap(free, TwoMiB, Rw, Anon | MapFlags.Fixed);
        Assert.Equal(new MmapResult(free, Errno.None), map);
        Assert.True(target.TouchPages(free, TwoMiB, write: true).Ok);
    }

    [LinuxFact]
    public void DisposingUnmapsEverythingTheTargetMapped()
    {
        ulong a;
        using (var target = new KernelTarget())
        {
            a = target.Mmap(0, 4 * TwoMiB, Rw, Anon).Address;
            Assert.Equal(Errno.None, target.Munmap(a + TwoMiB, TwoMiB));
            Assert.Equal(2, target.Mappings.Count);
        }

        Assert.False(ProcMaps.AnyIn(ProcMaps.ReadSelf(), a, a + (4 * TwoMiB)));
    }

    [LinuxFact]
    public void ADisposedTargetRefusesFurtherCalls()
    {
        var target = new KernelTarget();
        target.Dispose();
        target.Dispose();
        Assert.Throws<ObjectDisposedException>(() => target.Mmap(0, 4096, Rw, Anon));
    }
}
