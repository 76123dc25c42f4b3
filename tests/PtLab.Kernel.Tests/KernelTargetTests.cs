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
        // The mapping's own smaps figure: the process-wide RssAnon moves with whatever the
        // runtime and the tests running beside this one allocate and give back meanwhile.
        Assert.Equal(0, target.AnonKbIn(map.Address, map.Address + (8 * TwoMiB)));
        Assert.True(target.TouchPages(map.Address, 8 * TwoMiB, write: true).Ok);
        Assert.Equal(16 * 1024, target.AnonKbIn(map.Address, map.Address + (8 * TwoMiB)));
        Assert.Equal(Errno.None, target.Munmap(map.Address, 8 * TwoMiB));
        Assert.Empty(target.Mappings);
    }

    [LinuxFact]
    public void ScopedRssCountsTheScopesPagesByKindAndNotTheRuntimesHeap()
    {
        ulong slot = KernelTarget.FindFreeRegion(Differential.PgdSlot, Differential.PgdSlot);
        Assert.True(slot != 0, "no empty 512 GiB slot");
        using var target = new KernelTarget { RssScope = (slot, slot + Differential.PgdSlot) };
        Assert.Equal((0L, 0L, 0L, 0L), Rss(target.Status()));
        var anon = target.Mmap(slot, TwoMiB, Rw, Anon | MapFlags.FixedNoReplace);
        var shared = target.Mmap(slot + (4 * TwoMiB), TwoMiB, Rw, MapFlags.Shared | MapFlags.Anonymous | MapFlags.FixedNoReplace);
        int f = target.CreateFile(TwoMiB);
        var file = target.MmapFile(slot + (8 * TwoMiB), TwoMiB, Prot.Read, MapFlags.Shared | MapFlags.FixedNoReplace, f, 0);
        Assert.True(anon.Ok && shared.Ok && file.Ok);
        Assert.True(target.TouchPages(anon.Address, 256 * 1024, write: true).Ok);
        Assert.True(target.TouchPages(shared.Address, 128 * 1024, write: true).Ok);
        Assert.True(target.TouchPages(file.Address, 4096, write: false).Ok);

        // Fault-around maps the read page's 16-page block where the file is cached (it was just written).
        var expected = (256L, 64L, 128L, 256L + 64 + 128);
        Assert.Equal(expected, Rss(target.Status()));

        // The runtime's own allocations move the process's counters, not the scope's.
        var garbage = new List<byte[]>();
        for (int i = 0; i < 64; i++)
        {
            garbage.Add(GC.AllocateArray<byte>(1 << 20, pinned: false));
            garbage[^1].AsSpan().Fill(1);
        }

        Assert.Equal(expected, Rss(target.Status()));
        GC.KeepAlive(garbage);
    }

    private static (long Anon, long File, long Shmem, long Rss) Rss(MmStatus s) => (s.RssAnonKb, s.RssFileKb, s.RssShmemKb, s.VmRssKb);

    [Fact]
    public void ScopedRssSumsOnlyTheVmasThatMeetTheRange()
    {
        const string smaps = """
            7f0000000000-7f0000200000 rw-p 00000000 00:00 0
            Rss:                 512 kB
            Anonymous:           512 kB
            8000000000-8000200000 rw-p 00000000 08:01 1234                       /var/tmp/data (deleted)
            Size:               2048 kB
            Rss:                  64 kB
            Anonymous:            12 kB
            8000400000-8000600000 rw-s 00000000 00:01 5953                       /dev/zero (deleted)
            Rss:                 128 kB
            Anonymous:             0 kB
            8000800000-8000a00000 rw-s 00000000 00:01 77                         /memfd:pool (deleted)
            Rss:                   8 kB
            Anonymous:             0 kB
            VmFlags: rd wr sh mr mw me ms sd
            """;
        var text = System.Text.Encoding.ASCII.GetBytes(smaps.ReplaceLineEndings("\n"));
        Assert.Equal((12L, 52L, 136L), SmapsRss.Sum(text, 0x8000000000, 0x10000000000));
        Assert.Equal((12L, 52L, 0L), SmapsRss.Sum(text, 0x8000000000, 0x8000200000));
        Assert.Equal((0L, 0L, 0L), SmapsRss.Sum(text, 0x9000000000, 0xa000000000));
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
