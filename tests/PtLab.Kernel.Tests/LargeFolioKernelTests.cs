using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using PtLab.Workloads;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.Differential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// Large page-cache folios of a regular file: a cold read fault in a MADV_HUGEPAGE mapping reads
/// PMD-sized folios and maps the faulting one with one PMD entry (no PTE table, 512 pages of
/// RssFile); where the 2 MiB cannot be PMD-mapped the folio is mapped by PTEs, whole when it lies
/// inside the VMA and one PTE table, else within the fault-around window. Each step script runs on
/// the model (the design matching the host, the host's THP and readahead settings) and on the host
/// kernel in ptlab's own address space; after every step VmPTE, RssFile and RssAnon must have moved
/// by the same amounts and the same pages must be present.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class LargeFolioKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096;
    private const int Pages = 2048; // an 8 MiB file and mapping

    private static string Design => KernelInfo.Probe().MatchingDesign;

    private static int ReadAheadKb => ReadAhead.KbFor(KernelTarget.DiskBackedTempDirectory()) ?? 128;

    /// <summary>
    /// Step scripts, as the probe program takes them: "rN" a load from page N of the mapping, "wN"
    /// a store, "dN" MADV_DONTNEED of page N, "DN" of the 2 MiB from page N, "uN" munmap of page N,
    /// "pN" mprotect of page N adding PROT_EXEC, "h" MADV_NOHUGEPAGE of the whole mapping.
    /// </summary>
    public static TheoryData<string, bool> Scripts() => new()
    {
        { "r517", false },
        { "r517", true },
        { "r0,r2047", false },
        { "r517,r1100,r1600", false },
        { "r517,w600", false },
        { "r517,w600", true },
        { "r517,d600,r601", false },
        { "r517,D512,r600", false },
        { "r517,D512,h,r600", false },
        { "r517,u600,r601", false },
        { "r517,p600,r601,r530", true },
        { "r517,p600,r601,w700", true },
        { "r517,w600,r517", false },
    };

    [LinuxTheory]
    [MemberData(nameof(Scripts))]
    public void AColdMadviseHugepageFileMappingFaultsLikeTheHost(string script, bool shared)
    {
        var steps = script.Split(',');
        string[] Run(IFileTarget t, ulong slot)
        {
            bool write = script.Contains('w', StringComparison.Ordinal);
            var prot = write ? Prot.Read | Prot.Write : Prot.Read;
            int f = t.CreateFile(Pages * K4);
            t.DropFileCache(f);
            var m = t.MmapFile(slot + (1UL << 30), Pages * K4, prot, (shared ? MapFlags.Shared : MapFlags.Private) | MapFlags.FixedNoReplace, f, 0);
            Assert.True(m.Ok, m.ToString());
            Assert.Equal(Errno.None, t.Madvise(m.Address, Pages * K4, Advice.HugePage));
            var before = t.Status();
            var seen = new List<string>();
            foreach (string step in steps)
            {
                ulong at = m.Address + (step.Length > 1 ? ulong.Parse(step[1..], CultureInfo.InvariantCulture) * K4 : 0);
                switch (step[0])
                {
                    case 'r' or 'w':
                        Assert.True(t.TouchPages(at, K4, write: step[0] == 'w').Ok, step);
                        break;
                    case 'd':
                        Assert.Equal(Errno.None, t.Madvise(at, K4, Advice.DontNeed));
                        break;
                    case 'D':
                        Assert.Equal(Errno.None, t.Madvise(at, 2UL << 20, Advice.DontNeed));
                        break;
                    case 'u':
                        Assert.Equal(Errno.None, t.Munmap(at, K4));
                        break;
                    case 'p':
                        Assert.Equal(Errno.None, t.Mprotect(at, K4, prot | Prot.Exec));
                        break;
                    case 'h':
                        Assert.Equal(Errno.None, t.Madvise(m.Address, Pages * K4, Advice.NoHugePage));
                        break;
                    default:
                        throw new ArgumentException($"unknown step {step}");
                }

                var s = t.Status();
                seen.Add($"{step}: pte {s.VmPteKb - before.VmPteKb} file {s.RssFileKb - before.RssFileKb} anon {s.RssAnonKb - before.RssAnonKb} present {FileMappingKernelTests.Runs(t.PresentPages(m.Address, Pages))}");
            }

            Assert.Equal(Errno.None, t.Munmap(m.Address, Pages * K4));
            return [.. seen];
        }

        string[] RunKernel()
        {
            using var k = new KernelTarget();
            return Run(k, KernelTarget.FindFreeRegion(PgdSlot, PgdSlot));
        }

        string[] kernel = RunKernel();

        if (!kernel[0].Contains(" file 2048 ", StringComparison.Ordinal))
        {
            // The model builds PMD-sized folios as 6.18 on ext4 does; a file system or kernel that
            // reads the 2 MiB as single pages cannot be compared with it.
            output.WriteLine($"SKIP: the host's first fault did not map the faulting 2 MiB folio ({kernel[0]}): no large folios for files in {KernelTarget.DiskBackedTempDirectory()}");
            return;
        }

        string[] model;
        using (var m = new ModelTarget(new MachineOptions { PageData = false, ReadAheadKb = ReadAheadKb, Thp = MappingDifferential.HostThp, Design = PtLab.Reclaim.Designs.Factory(Design)! }))
        {
            model = Run(m, 1UL << 39);
        }

        // The kernel's figures are this test process's own VmPTE and RssAnon, which other threads of
        // the process (the runtime's heap, tests running beside this one) also move. A step that
        // differs only by such growth is measured again, twice at most: a model that is wrong
        // differs in every attempt.
        for (int attempt = 1; attempt < 3 && !kernel.SequenceEqual(model); attempt++)
        {
            output.WriteLine($"attempt {attempt} differed; the kernel side is measured again");
            kernel = RunKernel();
        }

        for (int i = 0; i < steps.Length; i++)
        {
            output.WriteLine($"model  {model[i]}");
            output.WriteLine($"kernel {kernel[i]}");
        }

        Assert.Equal(kernel, model);
    }

    /// <summary>
    /// The probe program (Native/foliofault.c) in a process of its own, on a file in the
    /// disk-backed directory the kernel tests use: it also reads the folio sizes from
    /// /proc/kpageflags and FilePmdMapped from smaps, which ptlab's own address space cannot show
    /// for pages it does not map. A cold read fault under MADV_HUGEPAGE must leave two 512-page
    /// folios in the cache, the faulting one PMD-mapped; without the advice, order-0 pages and a
    /// 16-page fault-around. Skipped where the host's THP mode is never or /proc/kpageflags is closed.
    /// </summary>
    [NativeFact]
    public void TheProbeSeesPmdSizedFoliosAndAPmdMappingAfterAColdHugepageFault()
    {
        if (MappingDifferential.HostThp.Enabled == ThpEnabled.Never || !CanRead("/proc/kpageflags"))
        {
            output.WriteLine("SKIP: THP is never on this host or /proc/kpageflags cannot be read (not root)");
            return;
        }

        var huge = Probe("private", "hugepage", "r517");
        output.WriteLine(string.Join('\n', huge.Select(kv => $"{kv.Key} {kv.Value}")));
        Assert.Equal("2048", huge["pmd_mapped_kb"]);
        Assert.Equal("0", huge["d_vmpte_kb"]);
        Assert.Equal("2048", huge["d_rssfile_kb"]);
        Assert.Equal("512 1536", huge["cached_range"]);
        Assert.Equal("512 512 1 0 1", huge["folio 512"]);
        Assert.Equal("1024 512 1 0 1", huge["folio 1024"]);

        var plain = Probe("private", "random", "r517");
        output.WriteLine(string.Join('\n', plain.Select(kv => $"{kv.Key} {kv.Value}")));
        Assert.Equal("0", plain["pmd_mapped_kb"]);
        Assert.Equal("4", plain["d_rssfile_kb"]);
        Assert.Equal("517 1 0 0 0", plain["folio 517"]);
    }

    private static bool CanRead(string path)
    {
        try
        {
            using var f = File.OpenRead(path);
            return f.ReadByte() >= 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Runs the probe; its "key value…" lines by key ("folio N" keyed with its first page).</summary>
    private static Dictionary<string, string> Probe(string mode, string advice, string steps)
    {
        string exe = NativeBuild.BuildEmbedded(typeof(LargeFolioKernelTests).Assembly, "foliofault.c", "foliofault");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { KernelTarget.DiskBackedTempDirectory(), mode, advice, steps })
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException("the probe did not start");
        string text = p.StandardOutput.ReadToEnd();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"foliofault exited {p.ExitCode}: {err}");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] f = line.Split(' ');
            if (f[0] == "folio")
            {
                // "folio FIRST pages N head H tail T thp P"
                result[$"folio {f[1]}"] = $"{f[1]} {f[3]} {f[5]} {f[7]} {f[9]}";
            }
            else
            {
                result[f[0]] = string.Join(' ', f[1..]);
            }
        }

        return result;
    }
}
