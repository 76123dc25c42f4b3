using PtLab.Mm;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.MappingDifferential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// MAP_HUGETLB on a host with no huge page reserved, on the model and on the host kernel, call by
/// call: each check refuses with the kernel's errno in the kernel's order, and a MAP_FIXED call
/// refused for want of huge pages leaves a hole where its range was mapped.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class HugetlbKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    private const Prot Rw = Prot.Read | Prot.Write;
    private const MapFlags Huge = MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb;

    [NoHugetlbPoolFact]
    public void HugetlbCallsAreRefusedAsTheKernelRefusesThem()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 4 * M2, Rw);
            r.Touch(G1, 4 * M2, write: true);
            r.Check("mapped");
            r.Note("private", t.Mmap(0, K4, Rw, Huge));
            r.Note("shared", t.Mmap(0, K4, Rw, MapFlags.Shared | MapFlags.Anonymous | MapFlags.HugeTlb));
            r.Note("shared-validate 2 MiB", t.Mmap(0, K4, Prot.None, MapFlags.SharedValidate | MapFlags.Anonymous | MapFlags.HugeTlb | MapFlags.Huge2MB));
            r.Note("shared-validate sync", t.Mmap(0, K4, Rw, MapFlags.SharedValidate | MapFlags.Anonymous | MapFlags.HugeTlb | MapFlags.Sync));
            r.Note("1 GiB", t.Mmap(0, K4, Rw, Huge | MapFlags.Huge1GB));
            r.Note("32 MiB", t.Mmap(0, K4, Rw, Huge | (MapFlags)(25 << 26)));
            r.Note("zero length", t.Mmap(0, 0, Rw, Huge));
            r.Note("rounds to zero", t.Mmap(0, ~0UL - 4095, Rw, Huge));
            r.Note("too long", t.Mmap(0, 1UL << 47, Rw, Huge));
            r.Note("grows down", t.Mmap(0, K4, Rw, Huge | MapFlags.GrowsDown));
            r.Note("droppable", t.Mmap(0, K4, Rw, MapFlags.Droppable | MapFlags.Anonymous | MapFlags.HugeTlb));
            r.Note("no type", t.Mmap(0, K4, Rw, MapFlags.Anonymous | MapFlags.HugeTlb));
            r.Note("locked", t.Mmap(0, K4, Rw, Huge | MapFlags.Locked));
            r.Note("fixed unaligned", t.Mmap(r.At(G1 + K4), K4, Rw, Huge | MapFlags.Fixed));
            r.Note("fixed 1 GiB on 2 MiB", t.Mmap(r.At(G1 + M2), K4, Rw, Huge | MapFlags.Fixed | MapFlags.Huge1GB));
            r.Note("noreplace over a mapping", t.Mmap(r.At(G1), K4, Rw, Huge | MapFlags.FixedNoReplace));
            r.Check("refused");
            r.Note("fixed over a mapping", t.Mmap(r.At(G1 + M2), K4, Rw, Huge | MapFlags.Fixed));
            r.Check("a hole where the range was");
        }, output);
    }
}
