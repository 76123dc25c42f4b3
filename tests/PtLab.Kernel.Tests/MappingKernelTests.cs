using PtLab.Mm;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.MappingDifferential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// mremap, the mlock family, MAP_POPULATE/MAP_LOCKED, MADV_POPULATE_*, the VMA-flag advices and
/// transparent huge pages, each run on the model and on the host kernel in an empty 512 GiB slot
/// and compared call by call and checkpoint by checkpoint (see <see cref="MappingDifferential"/>).
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class MappingKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096, M1 = 1UL << 20, M2 = 2UL << 20, G1 = 1UL << 30;
    private const Prot Rw = Prot.Read | Prot.Write;
    private const MremapFlags MoveFixed = MremapFlags.MayMove | MremapFlags.Fixed;

    [LinuxFact]
    public void MremapResizesAndMovesTablesAsTheKernelDoes()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 8 * M2, Rw);
            r.Touch(G1, 8 * M2, write: true);
            r.Check("mapped");
            r.Note("move aligned", t.Mremap(r.At(G1), 8 * M2, 8 * M2, MoveFixed, r.At(2 * G1)));
            r.Check("moved whole tables");
            r.Note("move misaligned", t.Mremap(r.At(2 * G1), 8 * M2, 8 * M2, MoveFixed, r.At((3 * G1) + K4)));
            r.Check("moved entries");
            r.Note("move back realigned", t.Mremap(r.At((3 * G1) + K4), (8 * M2) - K4, (8 * M2) - K4, MoveFixed, r.At(G1 + K4)));
            r.Check("realigned");
            r.Note("shrink", t.Mremap(r.At(G1 + K4), (8 * M2) - K4, 3 * M1, MremapFlags.None, 0));
            r.Note("grow in place", t.Mremap(r.At(G1 + K4), 3 * M1, 5 * M1, MremapFlags.None, 0));
            r.Check("resized");
            r.Note("part move", t.Mremap(r.At(G1 + K4 + M1), M1, M1, MoveFixed, r.At(4 * G1)));
            r.Check("part moved");
            r.Note("dontunmap", t.Mremap(r.At(4 * G1), M1, M1, MoveFixed | MremapFlags.DontUnmap, r.At(5 * G1)));
            r.Touch(4 * G1, K4, write: false);
            r.Check("dontunmap");
        }, output);
    }

    [LinuxFact]
    public void MremapRefusesWhatTheKernelRefusesWithTheSameErrno()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, M1, Rw);
            r.Mmap(G1 + M1 + K4, M1, Prot.Read);
            ulong a = r.At(G1);
            r.Note("unaligned", t.Mremap(a + 1, K4, K4, MremapFlags.None, 0));
            r.Note("zero length", t.Mremap(a, K4, 0, MremapFlags.None, 0));
            r.Note("bad flag", t.Mremap(a, K4, K4, (MremapFlags)8, 0));
            r.Note("fixed alone", t.Mremap(a, K4, K4, MremapFlags.Fixed, r.At(2 * G1)));
            r.Note("dontunmap resize", t.Mremap(a, K4, 2 * K4, MremapFlags.MayMove | MremapFlags.DontUnmap, r.At(2 * G1)));
            r.Note("overlap", t.Mremap(a, M1, M1, MoveFixed, a + (M1 / 2)));
            r.Note("across VMAs", t.Mremap(a, M1 + K4, 4 * M1, MremapFlags.MayMove, 0));
            r.Note("no room", t.Mremap(a, M1, 2 * M1, MremapFlags.None, 0));
            r.Note("hole", t.Mremap(r.At(G1 + M1), K4, 2 * K4, MremapFlags.MayMove, 0));
            r.Note("duplicate private", t.Mremap(a, 0, K4, MremapFlags.MayMove, 0));
            r.Note("multi-VMA fixed", t.Mremap(a, (2 * M1) + K4, (2 * M1) + K4, MoveFixed, r.At(2 * G1)));
            r.Check("after");
        }, output);
    }

    [LinuxFact]
    public void MlockMunlockAndMapLockedLockPopulateAndCountAsTheKernelDoes()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 4 * M1, Rw);
            r.Note("mlock part", t.Mlock(r.At(G1) + 100, M1));
            r.Check("mlock");
            r.Note("mlock hole", t.Mlock(r.At(G1), 8 * M1));
            r.Note("munlock", t.Munlock(r.At(G1), 2 * M1));
            r.Check("munlock");
            r.Mmap(G1 + (4 * M2), 2 * M1, Rw);
            r.Note("mlock2 onfault", t.Mlock2(r.At(G1 + (4 * M2)), 2 * M1, MlockFlags.OnFault));
            r.Touch(G1 + (4 * M2), 16 * K4, write: true);
            r.Note("mlock2 bad", t.Mlock2(r.At(G1), K4, (MlockFlags)2));
            r.Check("onfault");
            r.Mmap(G1 + (8 * M2), M1, Prot.None);
            r.Note("mlock prot_none", t.Mlock(r.At(G1 + (8 * M2)), M1));
            r.Mmap(G1 + (10 * M2), 2 * M1, Rw, MapFlags.Locked);
            r.Mmap(G1 + (12 * M2), 2 * M1, Rw, MapFlags.Populate);
            r.Mmap(G1 + (14 * M2), 2 * M1, Prot.Read, MapFlags.Populate);
            r.Check("map locked and populate");
        }, output);
    }

    [LinuxFact]
    public void MadvPopulateFaultsInAndFailsAsTheKernelDoes()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 4 * M1, Rw);
            r.Note("populate read", t.Madvise(r.At(G1), 2 * M1, Advice.PopulateRead));
            r.Note("populate write", t.Madvise(r.At(G1) + M1, 2 * M1, Advice.PopulateWrite));
            r.Check("populated");
            r.Note("over a hole", t.Madvise(r.At(G1), 8 * M1, Advice.PopulateWrite));
            r.Mmap(G1 + (4 * M2), M1, Prot.Write);
            r.Mmap(G1 + (6 * M2), M1, Prot.None);
            r.Note("read of write-only", t.Madvise(r.At(G1 + (4 * M2)), M1, Advice.PopulateRead));
            r.Note("write of write-only", t.Madvise(r.At(G1 + (4 * M2)), M1, Advice.PopulateWrite));
            r.Note("prot_none", t.Madvise(r.At(G1 + (6 * M2)), M1, Advice.PopulateRead));
            r.Note("starts in a hole", t.Madvise(r.At(G1 + (5 * M2)), M1, Advice.PopulateRead));
            r.Check("errors");
        }, output);
    }

    [LinuxFact]
    public void FlagAdvicesSplitAndMergeVmasAsTheKernelDoes()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 4 * M1, Rw);
            r.Note("hugepage", t.Madvise(r.At(G1) + M1, M1, Advice.HugePage));
            r.Note("random", t.Madvise(r.At(G1), 2 * M1, Advice.Random));
            r.Note("sequential", t.Madvise(r.At(G1) + (3 * M1), M1, Advice.Sequential));
            r.Note("dontdump", t.Madvise(r.At(G1), M1, Advice.DontDump));
            r.Check("split");
            r.Note("nohugepage", t.Madvise(r.At(G1), 4 * M1, Advice.NoHugePage));
            r.Note("normal", t.Madvise(r.At(G1), 4 * M1, Advice.Normal));
            r.Note("dodump", t.Madvise(r.At(G1), 4 * M1, Advice.DoDump));
            r.Check("merged");
            r.Note("hole", t.Madvise(r.At(G1), 8 * M1, Advice.HugePage));
            r.Check("hole");
        }, output);
    }

    /// <summary>
    /// The advices of fork and KSM as VMA flags (smaps' dc, wf, mg): DONTFORK/DOFORK and
    /// WIPEONFORK/KEEPONFORK split and merge as the kernel does, WIPEONFORK of shared memory is
    /// EINVAL, and MERGEABLE leaves a shared mapping as it is. MERGEABLE is left out where ksmd runs
    /// (it could merge the slot's pages) or the kernel has no KSM.
    /// </summary>
    [LinuxFact]
    public void ForkAndKsmAdvicesSetTheFlagsTheKernelSets()
    {
        bool ksm = File.Exists("/sys/kernel/mm/ksm/run") && File.ReadAllText("/sys/kernel/mm/ksm/run").Trim() == "0";
        output.WriteLine(ksm ? "KSM present and idle: MERGEABLE compared too" : "KSM absent or running: MERGEABLE not compared");
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 4 * M1, Rw);
            r.Note("mmap shared", t.Mmap(r.At(G1 + (8 * M1)), 2 * M1, Rw, MapFlags.Shared | MapFlags.Anonymous | MapFlags.FixedNoReplace));
            r.Touch(G1, 4 * M1, write: true);
            r.Note("dontfork", t.Madvise(r.At(G1), 3 * M1, Advice.DontFork));
            r.Note("dofork", t.Madvise(r.At(G1) + M1, M1, Advice.DoFork));
            r.Note("wipeonfork", t.Madvise(r.At(G1) + (2 * M1), 2 * M1, Advice.WipeOnFork));
            r.Note("wipeonfork shared", t.Madvise(r.At(G1 + (8 * M1)), M1, Advice.WipeOnFork));
            r.Note("dontfork shared", t.Madvise(r.At(G1 + (8 * M1)), M1, Advice.DontFork));
            if (ksm)
            {
                r.Note("mergeable", t.Madvise(r.At(G1), 2 * M1, Advice.Mergeable));
                r.Note("mergeable shared", t.Madvise(r.At(G1 + (8 * M1)), 2 * M1, Advice.Mergeable));
            }

            r.Check("split");
            r.Note("keeponfork", t.Madvise(r.At(G1), 4 * M1, Advice.KeepOnFork));
            r.Note("dofork all", t.Madvise(r.At(G1), 4 * M1, Advice.DoFork));
            if (ksm)
            {
                r.Note("unmergeable", t.Madvise(r.At(G1), 4 * M1, Advice.Unmergeable));
            }

            r.Check("merged");
            r.Note("hole", t.Madvise(r.At(G1), 8 * M1, Advice.WipeOnFork));
            r.Check("hole");
        }, output);
    }

    [LinuxFact]
    public void TransparentHugePagesFaultSplitAndFreeAsTheKernelDoes()
    {
        AssertSame(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 8 * M2, Rw);
            r.Note("hugepage", t.Madvise(r.At(G1), 8 * M2, Advice.HugePage));
            r.Touch(G1, K4, write: true);                 // a huge page and its deposit
            r.Touch(G1 + M2, K4, write: false);           // the huge zero page and its deposit
            r.Check("faulted");
            r.Touch(G1 + M2 + K4, K4, write: true);       // the zero page replaced, the deposit kept
            r.Touch(G1 + (2 * M2), 2 * M2, write: true);
            r.Check("written");
            r.Note("munmap one page", t.Munmap(r.At(G1) + (5 * K4), K4));
            r.Note("mprotect part", t.Mprotect(r.At(G1 + M2), K4, Prot.Read));
            r.Note("dontneed part", t.Madvise(r.At(G1 + (2 * M2)) + K4, K4, Advice.DontNeed));
            r.Check("split");
            r.Note("dontneed whole", t.Madvise(r.At(G1 + (3 * M2)), M2, Advice.DontNeed));
            r.Note("mprotect whole", t.Mprotect(r.At(G1 + (4 * M2)), 2 * M2, Prot.Read));
            r.Touch(G1 + (4 * M2), 2 * M2, write: false);
            r.Check("whole");
            r.Note("free whole", t.Madvise(r.At(G1 + (6 * M2)), M2, Advice.Free));
            r.Note("populate write", t.Madvise(r.At(G1 + (6 * M2)), 2 * M2, Advice.PopulateWrite));
            r.Note("move huge", t.Mremap(r.At(G1 + (6 * M2)), 2 * M2, 2 * M2, MoveFixed, r.At(2 * G1)));
            r.Note("move misaligned", t.Mremap(r.At(2 * G1), 2 * M2, 2 * M2, MoveFixed, r.At((3 * G1) + K4)));
            r.Check("moved");
            r.Note("munmap", t.Munmap(r.At(G1), 8 * M2));
            r.Check("unmapped");
        }, output);
    }
}
