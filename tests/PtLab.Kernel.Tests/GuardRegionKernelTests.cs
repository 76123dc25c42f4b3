using System.Diagnostics;
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

    /// <summary>
    /// Fork copies the markers (install set VM_MAYBE_GUARD on each VMA, so <c>vma_needs_copy</c>
    /// copies its tables), in private and shared anonymous memory and in a private file mapping
    /// that has no anon_vma alike, and the child's write there is SEGV_MAPERR; a MADV_WIPEONFORK
    /// region reaches the child without them. The host side
    /// is Programs/guard-fork.c; the model runs the same steps.
    /// </summary>
    [GuardRegionFact]
    public void ForkCopiesTheMarkersAsOnTheKernel()
    {
        string exe = NativeBuild.BuildEmbedded(typeof(GuardRegionKernelTests).Assembly, "guard-fork.c", "guard-fork");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(KernelTarget.DiskBackedTempDirectory());
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "guard-fork did not finish within a minute");
        Assert.True(p.ExitCode == 0, $"guard-fork exited with {p.ExitCode}: {stderr}");
        output.WriteLine($"kernel:\n{stdout}");

        var m = new Machine(new MachineOptions { PageData = false, LockDep = true, Design = PtLab.Reclaim.Designs.Factory(KernelInfo.Probe().MatchingDesign)! });
        var t = m.CreateProcess().MainThread;
        var cpu = t.Activate();
        const ulong slot = 0x7e00_0000_0000;
        ulong Map(ulong offset, MapFlags type) =>
            t.Mm.Mmap(cpu, slot + offset, M2, Rw, type | MapFlags.Anonymous | MapFlags.FixedNoReplace).Address;
        ulong priv = Map(0, MapFlags.Private), shared = Map(M2, MapFlags.Shared), wiped = Map(2 * M2, MapFlags.Private);
        var testFile = m.Files.GetOrCreate(new FileId(1, 1), M2);
        ulong file = t.Mm.Mmap(cpu, slot + (3 * M2), M2, Rw, MapFlags.Private | MapFlags.FixedNoReplace, testFile, 0).Address;
        for (ulong o = 0; o < 16 * K4; o += K4)
        {
            Assert.True(cpu.Touch(priv + o).Ok);
        }

        Assert.True(cpu.Touch(shared + K4).Ok);
        Assert.Equal(Errno.None, t.Mm.Madvise(cpu, wiped, M2, Advice.WipeOnFork));
        foreach (ulong at in new[] { priv, shared, wiped, file })
        {
            Assert.Equal(Errno.None, t.Mm.Madvise(cpu, at, K4, Advice.GuardInstall));
        }

        var child = m.Fork(t)!;
        var ccpu = child.MainThread.Activate();
        string Report(string name, ulong at)
        {
            ulong e = child.Mm.Pagemap(ccpu, at, at + K4)[0];
            var r = ccpu.Touch(at);
            var (signo, code) = r.Outcome switch
            {
                FaultOutcome.Ok => (0, 0),
                FaultOutcome.SegvMapErr => (11, 1),
                FaultOutcome.SegvAccErr => (11, 2),
                _ => (7, 0),
            };
            return $"{name} {e:x} {signo} {code}\n";
        }

        string model = Report("private", priv) + Report("shared", shared) + Report("wiped", wiped) + Report("file", file);
        output.WriteLine($"model:\n{model}");
        Assert.Equal(stdout, model);
    }
}
