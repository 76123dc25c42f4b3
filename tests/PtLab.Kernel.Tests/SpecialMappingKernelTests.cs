using System.Diagnostics;
using PtLab.Mm;
using PtLab.Workloads;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// The vDSO's mappings on the host and in the model: Programs/special-split.c makes one call per
/// case on <c>[vdso]</c> or <c>[vvar]</c> in a fresh child and prints the result and what became
/// of the mapping (its range, Rss and flags); the model makes the same call on the same mapping.
/// A special mapping is never split (a call that would cut one fails with EINVAL), mlock passes
/// over it without locking it, GUP refuses the <c>VM_PFNMAP</c> vvar (MADV_POPULATE: EINVAL),
/// MREMAP_DONTUNMAP refuses both, and mprotect beyond VM_MAY* is EACCES.
/// </summary>
public sealed class SpecialMappingKernelTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;
    private const ulong Target = 0x1_0000_0000;
    private const ulong Base = 0x7f00_0000_0000;

    private static readonly string[] Cases =
    [
        "munmap-first", "munmap-last", "munmap-all", "mprotect-first-none", "mprotect-first-same", "mprotect-first-rw",
        "mprotect-all-rw", "mprotect-all-none", "mlock-first", "mlock-all", "mlock2-onfault-all", "mlockall-current",
        "populate-read", "populate-write", "dontdump-first", "dodump-first", "dontneed-first", "cold-all",
        "nohugepage-first", "nohugepage-all", "dontfork-all", "random-first", "mremap-dontunmap", "mremap-move-first",
        "mremap-move-all", "mremap-shrink", "mremap-grow", "mmap-fixed-first",
    ];

    [NativeFact]
    public void CallsOnTheVdsoMappingsDoWhatTheKernelDoes()
    {
        var (sizes, kernel) = RunProbe();
        Assert.Contains("[vdso]", sizes.Keys);
        int differ = 0;
        foreach (var (key, k) in kernel)
        {
            string m = RunModel(key.Case, key.Name, sizes);
            if (m != k)
            {
                differ++;
            }

            output.WriteLine($"{key.Case,-20} {key.Name,-7} kernel {k,-40} model {m}{(m == k ? string.Empty : "   <- differs")}");
        }

        Assert.Equal(Cases.Length * sizes.Count, kernel.Count);
        Assert.Equal(0, differ);
    }

    /// <summary>The sizes in pages of the host's vDSO mappings, and per (case, mapping) the normalised result line.</summary>
    private static (Dictionary<string, ulong> Sizes, Dictionary<(string Case, string Name), string> Results) RunProbe()
    {
        string exe = NativeBuild.BuildEmbedded(typeof(SpecialMappingKernelTests).Assembly, "special-split.c", "special-split");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string c in Cases)
        {
            psi.ArgumentList.Add(c);
        }

        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "special-split did not finish within a minute");
        Assert.True(p.ExitCode == 0, $"special-split exited with {p.ExitCode}: {stderr}");
        var sizes = new Dictionary<string, ulong>(StringComparer.Ordinal);
        var results = new Dictionary<(string, string), string>();
        foreach (string line in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] w = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (w[0] == "size")
            {
                sizes[w[1]] = ulong.Parse(w[2], System.Globalization.CultureInfo.InvariantCulture);
                continue;
            }

            var flags = w.Skip(6).Aggregate(VmFlags.None, (f, m) => f | VmaView.Mnemonics.GetValueOrDefault(m));
            results[(w[0], w[1])] = Line(w[2], w[3], w[4], w[5], flags);
        }

        return (sizes, results);
    }

    private static string Line(string ret, string errno, string where, string rssKb, VmFlags flags) =>
        $"{ret} {errno} {where} {rssKb}kB {new VmaView(0, 0, flags & VmaView.Modelled).FlagNames()}";

    /// <summary>The case on a fresh model process with the host's vDSO mappings, as the probe prints it.</summary>
    private static string RunModel(string c, string name, Dictionary<string, ulong> sizes)
    {
        using var t = new ModelTarget(new MachineOptions { RamBytes = 256L << 20, PageData = false, ZeroPage = MappingDifferential.HostZeroPage, Cpus = 1, Design = PtLab.Reclaim.Designs.Factory("none")! });
        ulong vvarLen = sizes.GetValueOrDefault("[vvar]", 4UL) * Page;
        ulong vdso = Base + vvarLen + (2 * Page); // the host has [vvar_vclock] between them
        Assert.Equal(Errno.None, t.Mm.InstallSpecialMapping(t.Cpu, Base, vvarLen, SpecialMapping.Vvar));
        Assert.Equal(Errno.None, t.Mm.InstallSpecialMapping(t.Cpu, vdso, sizes["[vdso]"] * Page, SpecialMapping.Vdso));
        bool isVdso = name == "[vdso]";
        ulong s = isVdso ? vdso : Base;
        ulong len = isVdso ? sizes["[vdso]"] * Page : vvarLen;
        var prot = isVdso ? Prot.Read | Prot.Exec : Prot.Read;
        long ret;
        Errno err;
        switch (c)
        {
            case "mremap-dontunmap" or "mremap-move-first" or "mremap-move-all" or "mremap-shrink" or "mremap-grow" or "mmap-fixed-first":
                var r = c switch
                {
                    "mremap-dontunmap" => t.Mm.Mremap(t.Cpu, s, len, len, MremapFlags.MayMove | MremapFlags.DontUnmap),
                    "mremap-move-first" => t.Mm.Mremap(t.Cpu, s, Page, Page, MremapFlags.MayMove | MremapFlags.Fixed, Target),
                    "mremap-move-all" => t.Mm.Mremap(t.Cpu, s, len, len, MremapFlags.MayMove | MremapFlags.Fixed, Target),
                    "mremap-shrink" => t.Mm.Mremap(t.Cpu, s, len, Page, MremapFlags.None),
                    "mremap-grow" => t.Mm.Mremap(t.Cpu, s, len, len + Page, MremapFlags.MayMove),
                    _ => t.Mm.Mmap(t.Cpu, s, Page, Prot.Read, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed),
                };
                err = r.Error;
                ret = !r.Ok ? -1 : r.Address == Target ? 1 : r.Address == s ? 2 : 3;
                break;
            default:
                err = c switch
                {
                    "munmap-first" => t.Mm.Munmap(t.Cpu, s, Page),
                    "munmap-last" => t.Mm.Munmap(t.Cpu, s + len - Page, Page),
                    "munmap-all" => t.Mm.Munmap(t.Cpu, s, len),
                    "mprotect-first-none" => t.Mm.Mprotect(t.Cpu, s, Page, Prot.None),
                    "mprotect-first-same" => t.Mm.Mprotect(t.Cpu, s, Page, prot),
                    "mprotect-first-rw" => t.Mm.Mprotect(t.Cpu, s, Page, Prot.Read | Prot.Write),
                    "mprotect-all-rw" => t.Mm.Mprotect(t.Cpu, s, len, Prot.Read | Prot.Write),
                    "mprotect-all-none" => t.Mm.Mprotect(t.Cpu, s, len, Prot.None),
                    "mlock-first" => t.Mm.Mlock(t.Cpu, s, Page),
                    "mlock-all" => t.Mm.Mlock(t.Cpu, s, len),
                    "mlock2-onfault-all" => t.Mm.Mlock2(t.Cpu, s, len, MlockFlags.OnFault),
                    "mlockall-current" => t.Mm.Mlockall(t.Cpu, MlockallFlags.Current),
                    "populate-read" => t.Mm.Madvise(t.Cpu, s, len, Advice.PopulateRead),
                    "populate-write" => t.Mm.Madvise(t.Cpu, s, len, Advice.PopulateWrite),
                    "dontdump-first" => t.Mm.Madvise(t.Cpu, s, Page, Advice.DontDump),
                    "dodump-first" => t.Mm.Madvise(t.Cpu, s, Page, Advice.DoDump),
                    "dontneed-first" => t.Mm.Madvise(t.Cpu, s, Page, Advice.DontNeed),
                    "cold-all" => t.Mm.Madvise(t.Cpu, s, len, Advice.Cold),
                    "nohugepage-first" => t.Mm.Madvise(t.Cpu, s, Page, Advice.NoHugePage),
                    "nohugepage-all" => t.Mm.Madvise(t.Cpu, s, len, Advice.NoHugePage),
                    "dontfork-all" => t.Mm.Madvise(t.Cpu, s, len, Advice.DontFork),
                    "random-first" => t.Mm.Madvise(t.Cpu, s, Page, Advice.Random),
                    _ => throw new ArgumentException($"unknown case {c}", nameof(c)),
                };
                ret = err == Errno.None ? 0 : -1;
                break;
        }

        // The mapping afterwards: the VMA of the special mapping, wherever it now is.
        Vma? v = null;
        for (var i = t.Mm.FindVma(0); i is not null; i = t.Mm.FindVma(i.End))
        {
            if (ReferenceEquals(i.Special, isVdso ? SpecialMapping.Vdso : SpecialMapping.Vvar))
            {
                v = i;
            }
        }

        string where = v is null ? "gone"
            : v.Start >= Target && v.Start < 2 * Target ? $"T{(v.Start - Target) / Page}-{(v.End - Target) / Page}"
            : $"{((long)v.Start - (long)s) / (long)Page}-{((long)v.End - (long)s) / (long)Page}";

        // The vDSO is the only mapping counted in RSS (the vvar pages are raw frame numbers).
        long rss = v is null || !isVdso ? 0 : t.Mm.Status().RssFileKb;
        return v is null ? Line(ret.ToString(System.Globalization.CultureInfo.InvariantCulture), ((int)err).ToString(System.Globalization.CultureInfo.InvariantCulture), where, "0", VmFlags.None)
            : Line(ret.ToString(System.Globalization.CultureInfo.InvariantCulture), ((int)err).ToString(System.Globalization.CultureInfo.InvariantCulture), where, rss.ToString(System.Globalization.CultureInfo.InvariantCulture), v.Flags);
    }
}
