using System.Diagnostics;
using PtLab.Mm;
using PtLab.Phys;
using PtLab.Workloads;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>A test that reads frame numbers from /proc/self/pagemap: Linux x86-64, a C compiler and root.</summary>
public sealed class RootNativeFactAttribute : FactAttribute
{
    public RootNativeFactAttribute() => Skip = SkipReason();

    /// <summary>Why a test that runs a C program as root cannot run here, or null when it can.</summary>
    internal static string? SkipReason() =>
        !KernelTarget.IsSupported ? "needs Linux on x86-64: this test builds and runs a C program on the host"
        : !NativeBuild.IsAvailable(out string reason) ? reason
        : LibC.Geteuid() != 0 ? "needs root: it reads frame numbers from /proc/self/pagemap or drops a capability, which only root may"
        : null;
}

/// <summary>
/// <c>folio->mlock_count</c> on the host and in the model: Programs/mlock-count.c maps one
/// page-cache page through two VMAs, locks and unlocks it through each, and reads the page's
/// PG_mlocked and unevictable bits from /proc/kpageflags after every step; the model runs the same
/// steps. The kernel counts the locked mappings, so the page stays mlocked (and unevictable: reclaim,
/// MADV_PAGEOUT and MADV_FREE pass it by) until the last one lets go, by munlock or munmap.
/// </summary>
// Serialized with the other host tests: one of them switches a swap area on for the whole
// machine for a few seconds, which would change what MADV_PAGEOUT does here.
[Collection(HostKernelCollection.Name)]
public sealed class MlockCountKernelTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    [RootNativeFact]
    public void APageLockedThroughTwoVmasStaysMlockedUntilBothLetGo()
    {
        var kernel = RunProbe();
        var model = RunModel();
        foreach (var (step, k) in kernel)
        {
            output.WriteLine($"{step,-15} kernel {k}   model {model[step]}");
        }

        Assert.Equal(kernel, model);
        Assert.Equal((true, true), kernel["unlock-a"]); // B still holds it
        Assert.Equal((false, false), kernel["unlock-b"]);
        Assert.Equal((true, true), kernel["unmap-b"]); // unmapping B's locked mapping counts one down
    }

    private static Dictionary<string, (bool Mlocked, bool Unevictable)> RunProbe()
    {
        string exe = NativeBuild.BuildEmbedded(typeof(MlockCountKernelTests).Assembly, "mlock-count.c", "mlock-count");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(KernelTarget.DiskBackedTempDirectory());
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "mlock-count did not finish within a minute");
        Assert.True(p.ExitCode == 0, $"mlock-count exited with {p.ExitCode}: {stderr}");
        return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' '))
            .ToDictionary(w => w[0], w => (w[1] == "1", w[2] == "1"));
    }

    private static Dictionary<string, (bool Mlocked, bool Unevictable)> RunModel()
    {
        using var t = new ModelTarget(new MachineOptions { RamBytes = 1L << 30, PageData = false, ZeroPage = MappingDifferential.HostZeroPage, Cpus = 1, Design = PtLab.Reclaim.Designs.Factory("none")! });
        var steps = new Dictionary<string, (bool, bool)>();
        int file = t.CreateFile(Page);
        ulong a = Map(t, file), b = Map(t, file);
        void Step(string name, ulong at)
        {
            ulong e = t.Mm.Pagemap(t.Cpu, at, at + Page)[0];
            Assert.True(e >> 63 != 0, $"{name}: the page is not mapped in the model");
            long pfn = (long)(e & ((1UL << 55) - 1));
            ref var d = ref t.Machine.Phys.Desc(pfn);
            steps[name] = (d.Has(PageFlags.Mlocked), t.Machine.Phys.LruOf(pfn) == LruList.Unevictable);
        }

        Assert.True(t.TouchPages(a, Page, write: false).Ok);
        Step("mapped", a);
        Assert.True(t.TouchPages(b, Page, write: false).Ok);
        Assert.Equal(Errno.None, t.Mlock(a, Page));
        Step("lock-a", a);
        Assert.Equal(Errno.None, t.Mlock(b, Page));
        Step("lock-b", a);
        Assert.Equal(Errno.None, t.Munlock(a, Page));
        Step("unlock-a", b);
        Assert.Equal(Errno.None, t.Munlock(b, Page));
        Step("unlock-b", b);
        Assert.Equal(Errno.None, t.Mlock(a, Page));
        Assert.Equal(Errno.None, t.Mlock(b, Page));
        Step("lock-both", a);
        Assert.Equal(Errno.None, t.Munmap(b, Page));
        Step("unmap-b", a);
        Assert.Equal(Errno.None, t.Munlock(a, Page));
        Step("unlock-a-again", a);
        return steps;
    }

    private static ulong Map(ModelTarget t, int file)
    {
        var r = t.MmapFile(0, Page, Prot.Read, MapFlags.Shared, file, 0);
        Assert.True(r.Ok, $"the model refused the file mapping: {r.Error}");
        return r.Address;
    }
}
