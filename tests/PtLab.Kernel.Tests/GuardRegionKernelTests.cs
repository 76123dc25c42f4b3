using PtLab.Kernel;
using PtLab.Mm;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.MappingDifferential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// A fact that needs guard regions on the host as the model has them (<see cref="KernelInfo.HasGuardRegions"/>)
/// and, as for <see cref="NativeFactAttribute"/>, a C compiler.
/// </summary>
public sealed class GuardRegionFactAttribute : FactAttribute
{
    public GuardRegionFactAttribute()
    {
        Skip = new NativeFactAttribute().Skip;
        if (Skip is null && KernelInfo.Probe() is { HasGuardRegions: false } info)
        {
            Skip = $"needs Linux {KernelInfo.GuardRegionsSince}+ (guard regions as the model has them); the host is {info}";
        }
    }
}

/// <summary>
/// MADV_GUARD_INSTALL and MADV_GUARD_REMOVE on the model and on the host kernel, in a child process
/// (<see cref="ProbeTarget"/>: a touch of a guard page is a real SIGSEGV there), compared call by
/// call and checkpoint by checkpoint: results, VMAs, VmPTE and anonymous memory changes, and the
/// pagemap entries (frame numbers left out).
/// </summary>
public sealed class GuardRegionKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096, M1 = 1UL << 20, M2 = 2UL << 20, G1 = 1UL << 30;
    private const Prot Rw = Prot.Read | Prot.Write;

    /// <summary>Maps 4 MiB at 1 GiB into the slot, with no huge pages, and writes its first 16 pages.</summary>
    private static void WriteSixteenPages(Run r)
    {
        r.Mmap(G1, 4 * M1, Rw);
        r.Note("nohugepage", r.Target.Madvise(r.At(G1), 4 * M1, Advice.NoHugePage));
        r.Touch(G1, 16 * K4, write: true);
    }

    /// <summary>
    /// Install over written pages zaps them (anon -32 kB, VmPTE unchanged) and marks each page;
    /// a touch there is SEGV_MAPERR, the page after still faults in; DONTNEED, FREE, COLD and
    /// mprotect leave the markers; remove clears them and nothing else; munmap drops them with the tables.
    /// Install over nothing allocates the tables it needs (here PUD, PMD and PTE: +12 kB); a table whose
    /// only entry left is a marker survives a whole-table DONTNEED (pt-reclaim skips it), and goes
    /// once the marker is removed.
    /// </summary>
    [GuardRegionFact]
    public void GuardMarkersBehaveAsOnTheKernel()
    {
        AssertSameInChild(r =>
        {
            var t = r.Target;
            WriteSixteenPages(r);
            r.Check("written");
            r.Note("install", t.Madvise(r.At(G1), 8 * K4, Advice.GuardInstall));
            r.Pagemap(G1, 10);
            r.Check("installed");
            r.Touch(G1 + (3 * K4), K4, write: true);
            r.Touch(G1, K4, write: false);
            r.Touch(G1 + (8 * K4), K4, write: true);
            r.Check("touched");
            r.Note("dontneed", t.Madvise(r.At(G1), 4 * M1, Advice.DontNeed));
            r.Note("free", t.Madvise(r.At(G1), 16 * K4, Advice.Free));
            r.Note("cold", t.Madvise(r.At(G1), 16 * K4, Advice.Cold));
            r.Note("mprotect", t.Mprotect(r.At(G1), 16 * K4, Prot.Read));
            r.Note("mprotect back", t.Mprotect(r.At(G1), 16 * K4, Rw));
            r.Pagemap(G1, 10);
            r.Touch(G1 + (7 * K4), K4, write: true);
            r.Check("kept");
            r.Touch(G1 + (8 * K4), 8 * K4, write: true);
            r.Note("remove", t.Madvise(r.At(G1), 16 * K4, Advice.GuardRemove));
            r.Pagemap(G1, 10);
            r.Check("removed");
            r.Touch(G1, 8 * K4, write: true);
            r.Check("refaulted");
            r.Note("install again", t.Madvise(r.At(G1), 2 * K4, Advice.GuardInstall));
            r.Note("munmap", t.Munmap(r.At(G1), 4 * M1));
            r.Check("unmapped");

            r.Mmap(4 * G1, 4 * M1, Rw);
            r.Note("install over nothing", t.Madvise(r.At(4 * G1), K4, Advice.GuardInstall));
            r.Pagemap(4 * G1, 2);
            r.Check("tables allocated");
            r.Note("nohugepage", t.Madvise(r.At(4 * G1), 4 * M1, Advice.NoHugePage));
            r.Touch((4 * G1) + K4, M2 - K4, write: true);
            r.Check("table written");
            r.Note("dontneed the table", t.Madvise(r.At(4 * G1), M2, Advice.DontNeed));
            r.Pagemap(4 * G1, 2);
            r.Check("marker keeps its table");
            r.Note("remove", t.Madvise(r.At(4 * G1), M2, Advice.GuardRemove));
            r.Note("dontneed again", t.Madvise(r.At(4 * G1), M2, Advice.DontNeed));
            r.Check("table reclaimable");
        }, output);
    }

    /// <summary>
    /// The VMA rules: install on a locked VMA is EINVAL, remove there is fine; mlock over markers
    /// locks the VMA but its populate fails (ENOMEM); MADV_POPULATE_READ over a marker is EFAULT;
    /// mremap carries the markers to the new place.
    /// </summary>
    [GuardRegionFact]
    public void LockingPopulatingAndMovingGuardMarkersAsOnTheKernel()
    {
        AssertSameInChild(r =>
        {
            var t = r.Target;
            WriteSixteenPages(r);
            r.Note("install", t.Madvise(r.At(G1), 4 * K4, Advice.GuardInstall));
            r.Note("populate read", t.Madvise(r.At(G1), 16 * K4, Advice.PopulateRead));
            r.Note("populate write past", t.Madvise(r.At(G1 + (4 * K4)), 16 * K4, Advice.PopulateWrite));
            r.Check("populated");
            r.Note("mlock", t.Mlock(r.At(G1), 16 * K4));
            r.Note("install locked", t.Madvise(r.At(G1 + (8 * K4)), K4, Advice.GuardInstall));
            r.Note("remove locked", t.Madvise(r.At(G1), K4, Advice.GuardRemove));
            r.Pagemap(G1, 6);
            r.Check("locked");
            r.Note("munlock", t.Munlock(r.At(G1), 16 * K4));
            r.Note("mremap", t.Mremap(r.At(G1), 16 * K4, 16 * K4, MremapFlags.MayMove | MremapFlags.Fixed, r.At(8 * G1)));
            r.Pagemap(8 * G1, 6);
            r.Touch((8 * G1) + K4, K4, write: true);
            r.Check("moved");
        }, output);
    }
}
