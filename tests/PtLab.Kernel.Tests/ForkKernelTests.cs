using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// fork on the host against fork on the model: Programs/fork-witness.c builds a fixed set of
/// mappings in an empty 512 GiB slot (anonymous memory written and read, a private file mapping
/// with copied pages, a shared file mapping and shared anonymous memory nobody copies), forks, and
/// reports parent and child figures at each step; the model runs the same steps on its own
/// processes, with the design that matches the host.
/// </summary>
public sealed class ForkKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096, M1 = 1UL << 20, Block = 256 * 1024;

    /// <summary>One checkpoint: VmPTE, and the slot's RssAnon, RssFile and RssShmem, in kB.</summary>
    private readonly record struct Figures(long Pte, long Anon, long File, long Shmem)
    {
        public override string ToString() => $"VmPTE {Pte,4}  anon {Anon,5}  file {File,5}  shmem {Shmem,5}";
    }

    [NativeFact]
    public void ForkCopiesTheTablesAndSharesThePagesAsTheHostKernelDoes()
    {
        var kernel = RunWitness(out int sigbus);
        var model = RunModel(KernelInfo.Probe().MatchingDesign, out var modelBus);
        Assert.Equal(7, sigbus); // SIGBUS one page past the end of the file
        Assert.Equal(FaultOutcome.Bus, modelBus);
        foreach (var (label, k) in kernel)
        {
            output.WriteLine($"{label,-15} kernel {k}   model {model[label]}");
        }

        Assert.Equal(kernel.Keys.Order(), model.Keys.Order());
        foreach (var (label, k) in kernel)
        {
            Assert.True(k == model[label], $"{label}: kernel {k}, model {model[label]}");
        }

        // The copy, by the rules: a PUD, a PMD and the 5 PTE tables of the two VMAs with an
        // anon_vma (3 of the anonymous mapping, 2 of the private file mapping); the shared and the
        // untouched mappings are left to refault. The 2 MiB read are zero-page entries, or 512
        // private pages on a host whose read faults take them.
        long readPages = MappingDifferential.HostZeroPage ? 0 : 512;
        Assert.Equal(new Figures(7 * 4, (1040 + readPages) * 4, 240 * 4, 0), model["child"]);
    }

    /// <summary>Runs the witness; VmPTE comes back as deltas from the baselines of its first, empty fork.</summary>
    private Dictionary<string, Figures> RunWitness(out int sigbus)
    {
        string exe = NativeBuild.BuildEmbedded(typeof(ForkKernelTests).Assembly, "fork-witness.c", "fork-witness");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(KernelTarget.DiskBackedTempDirectory());
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "fork-witness did not finish within a minute");
        Assert.True(p.ExitCode == 0, $"fork-witness exited with {p.ExitCode}: {stderr}");
        output.WriteLine(stdout);

        var raw = new Dictionary<string, Figures>();
        sigbus = 0;
        foreach (string line in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] f = line.Split(' ');
            if (f[0] == "sigbus")
            {
                sigbus = int.Parse(f[1], CultureInfo.InvariantCulture);
                continue;
            }

            long N(int i) => long.Parse(f[i], CultureInfo.InvariantCulture);
            raw[f[0]] = new Figures(N(1), N(2), N(3), N(4));
        }

        long parentBase = raw["base"].Pte, childBase = raw["child-base"].Pte;
        return raw.Where(kv => kv.Key is not ("base" or "child-base"))
            .ToDictionary(kv => kv.Key, kv => kv.Value with { Pte = kv.Value.Pte - (kv.Key.StartsWith("child", StringComparison.Ordinal) ? childBase : parentBase) });
    }

    /// <summary>The witness's steps on the model, in a slot of its own; a fresh address space needs no baseline.</summary>
    private static Dictionary<string, Figures> RunModel(string design, out FaultOutcome tailAccess)
    {
        var m = new Machine(new MachineOptions { Cpus = 2, PageData = false, ZeroPage = MappingDifferential.HostZeroPage, LockDep = true, Design = PtLab.Reclaim.Designs.Factory(design)! });
        const ulong slot = 0x7e0000000000;
        var parent = m.CreateProcess();
        var pt = parent.MainThread;
        var file = m.Files.GetOrCreate(new FileId(1, 1), 4 * M1);
        Assert.True(file.Populate(0, file.Size));
        var figures = new Dictionary<string, Figures>();
        void Report(string label, SimProcess p)
        {
            var s = p.Mm.Status();
            figures[label] = new Figures(s.VmPteKb, s.RssAnonKb, s.RssFileKb, s.RssShmemKb);
        }

        ulong Map(SimThread t, ulong off, ulong len, MapFlags flags, SimFile? f)
        {
            var r = t.Mm.Mmap(t.Activate(), slot + off, len, Prot.Read | Prot.Write, flags | MapFlags.FixedNoReplace, f, 0);
            Assert.True(r.Ok, r.ToString());
            return r.Address;
        }

        void Touch(SimThread t, ulong start, ulong len, ulong stride, ulong first, bool write)
        {
            var cpu = t.Activate();
            for (ulong o = first; o < len; o += stride)
            {
                var r = write ? cpu.Touch(start + o) : cpu.ReadByte(start + o, out _);
                Assert.True(r.Ok, $"touch 0x{start + o:x}: {r}");
            }
        }

        ulong anon = Map(pt, 0, 8 * M1, MapFlags.Private | MapFlags.Anonymous, null);
        ulong zero = Map(pt, 16 * M1, 2 * M1, MapFlags.Private | MapFlags.Anonymous, null);
        ulong fpriv = Map(pt, 32 * M1, 4 * M1, MapFlags.Private, file);
        ulong fshared = Map(pt, 48 * M1, 4 * M1, MapFlags.Shared, file);
        ulong shm = Map(pt, 64 * M1, 4 * M1, MapFlags.Shared | MapFlags.Anonymous, null);
        Touch(pt, anon, 4 * M1, K4, 0, write: true);
        Touch(pt, anon + (4 * M1), 2 * M1, K4, 0, write: false);
        Touch(pt, fpriv, 4 * M1, Block, 10 * K4, write: false);
        Touch(pt, fpriv, 4 * M1, Block, 2 * K4, write: true);
        Touch(pt, shm, 4 * M1, K4, 0, write: true);
        Report("parent", parent);

        var child = m.Fork(pt)!;
        var ct = child.MainThread;
        Report("child", child);
        Touch(ct, anon, M1, K4, 0, write: true);
        Report("child-cow", child);
        Touch(ct, fshared, 4 * M1, Block, 10 * K4, write: false);
        Report("child-refault", child);
        Touch(ct, zero, 2 * M1, K4, 0, write: false);
        Report("child-zero", child);
        Assert.Equal(Errno.None, child.Mm.Madvise(ct.Activate(), anon, 2 * M1, Advice.DontNeed));
        Report("child-dontneed", child);
        m.ExitProcess(child);
        Report("parent-after", parent);

        ulong tail = Map(pt, 80 * M1, (4 * M1) + (2 * K4), MapFlags.Shared, file);
        tailAccess = pt.Activate().ReadByte(tail + (4 * M1) + K4, out _).Outcome;
        m.ExitProcess(parent);
        return figures;
    }
}
