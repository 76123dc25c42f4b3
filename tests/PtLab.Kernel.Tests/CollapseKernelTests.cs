using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using PtLab.Workloads;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.Differential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// MADV_COLLAPSE of private anonymous memory: each step script runs on the model (the design
/// matching the host, the host's THP mode) and on the host kernel in the probe program
/// (Native/collapse.c), whose figures nothing else moves; after every step the result and the
/// changes of VmPTE and RssAnon must agree.
/// A collapse keeps VmPTE (the PTE table is deposited beside the leaf) and makes RssAnon count the
/// whole 2 MiB. The same probe checks the split of huge pages by a partial MADV_FREE, MADV_COLD or
/// MADV_PAGEOUT.
/// </summary>
[Collection(HostKernelCollection.Name)]
public sealed class CollapseKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096;
    private const int Pages = 2048; // an 8 MiB mapping at a 2 MiB boundary

    private static string Design => KernelInfo.Probe().MatchingDesign;

    /// <summary>
    /// Steps on page numbers of the mapping: "wN[:M]" store to M pages from N, "rN[:M]" load,
    /// "cN:M" MADV_COLLAPSE of M pages from N, "CN:M" of M bytes from byte N, "dN:M"
    /// MADV_DONTNEED, "uN:M" munmap, "pN:M" mprotect PROT_READ, "PN:M" PROT_NONE, "h"/"n"
    /// MADV_HUGEPAGE/MADV_NOHUGEPAGE of the whole mapping.
    /// </summary>
    public static TheoryData<string> Scripts() =>
    [
        "c0:512",                   // no table: EINVAL
        "w0,c0:512",                // one page: a 2 MiB leaf, VmPTE kept
        "r0,c0:512",                // the zero page only, no anon_vma: EINVAL
        "w0,c0:1024",               // the second 2 MiB has no PTE table: EINVAL after the first
        "w600,c0:1024",             // the first has none: EINVAL, the second is not tried
        "w0,w600,c0:1024",
        "w5,c0:511",                // no whole 2 MiB: nothing, 0
        "w0,C4096:8192",            // inside one 2 MiB: EINVAL
        "w5,c1:1024",               // unaligned start: only [512, 1024) is a candidate
        "w0:512,c0:512",
        "w0,d0:1,c0:512",           // an empty PTE table
        "w0,d0:1,r0:512,c0:512",    // zero pages only, with an anon_vma
        "w0,p0:512,c0:512",         // read-only entries
        "w0,P0:512,c0:512",         // PROT_NONE: a PROT_NONE leaf
        "w0,w700,p0:600,c0:1024",   // the VMA boundary at 600 leaves one whole 2 MiB
        "h,r0,c0:512",              // the huge zero page: already a leaf
        "h,w5,c0:512",              // a faulted huge page: already a leaf
        "n,w5,c0:512",              // MADV_NOHUGEPAGE: EINVAL
        "w0,c0:512,c0:512",
        "w0,c0:512,d3:1,r4",        // a partial zap splits the leaf into the deposited table
        "w0,c0:512,u0:512",         // munmap frees the leaf and its deposit
        "w5,w1000,c0:2048",
        "w0,u16:2032,c0:16",        // a VMA without a whole 2 MiB: EINVAL
        "c0:511",                   // no anon_vma: EINVAL even with no whole 2 MiB
        "r0,c1:2",
        "w0,u0:1,w5,c0:512",        // a hole: ENOMEM
    ];

    [NativeTheory]
    [MemberData(nameof(Scripts))]
    public void ACollapseDoesWhatTheHostDoes(string script) => AssertSameAsHost(script, smaps: false);

    /// <summary>
    /// MADV_FREE ("fN:M"), MADV_COLD ("kN:M") and MADV_PAGEOUT ("oN:M") of part of a huge page
    /// split it (<c>split_folio</c>), and MADV_PAGEOUT of a whole one too (no huge swap slot: the
    /// host runs without swap); "l" mlocks the mapping, "vN" pins page N. Besides the result,
    /// VmPTE and RssAnon, the mapping's AnonHugePages and LazyFree (smaps) must agree: the split
    /// keeps VmPTE (the deposited table becomes the PTE table), zero-filled pages go to the shared
    /// zero page (RssAnon drops), only the pages in range become lazy-free, a pinned huge page is
    /// not split at all.
    /// </summary>
    public static TheoryData<string> SplitScripts() =>
    [
        "h,w0,f0:1",                        // 511 zero-filled pages go to the zero page
        "h,w0:512,f0:1",                    // all written: kept, one lazy-free
        "h,w0:512,f0:512",                  // whole: lazy-free at PMD level, not split
        "h,w0:512,f0:256,f256:256,o0:512",  // split, then every page lazy-free and discarded
        "h,w0:512,f0:512,o0:512",           // a lazy-free huge page discarded through a split PMD
        "h,w0:512,f0:1,w0,o0:1",            // redirtied: kept
        "h,w0:512,f0:1,o0:1",
        "h,w0:512,k0:1",
        "h,w0:512,k0:512",
        "h,w0:512,o0:1",
        "h,w0:512,o0:512",                  // swap-backed, no swap: split, all kept
        "h,w0,o0:512",
        "h,w0:512,d0:1,f1:1",               // a huge page mapped by PTEs, covered in part
        "h,w0:512,d0:1,f0:512",             // 511 of its 512 pages: still split
        "h,w0:512,d0:1,k1:1",
        "h,w0:512,p1:1,f0:1024",            // mprotect splits the leaf; the range covers it
        "w0:512,c0:512,f0:1",               // a collapsed huge page
        "h,r0,f0:1",                        // the huge zero page: nothing
        "h,w0:512,v0,f1:1",                 // pinned: not split
        "h,w0:512,l,f0:1",                  // VM_LOCKED: EINVAL
        "h,w0:600,f100:700,o0:1024",        // two huge pages, one in part, one whole
    ];

    [NativeTheory]
    [MemberData(nameof(SplitScripts))]
    public void APartialMadviseSplitsTheHugePageAsTheHostDoes(string script) => AssertSameAsHost(script, smaps: true);

    /// <summary>
    /// A huge page moved by mremap ("mN:M:D": M pages from N to page D) to an address that is not
    /// 2 MiB aligned: the leaf is split into PTEs, the folio stays whole and its pages lie in two
    /// PTE tables (pages 1024 and 1536 are table boundaries). MADV_FREE, MADV_COLD and
    /// MADV_PAGEOUT over part of it, or over all of it (no one table holds it whole), split it in
    /// both tables; a part moved elsewhere by a second mremap is split too (the reverse map finds
    /// it); a pinned one is not split. Written pages are pages 0, 300 and 511 of the folio.
    /// </summary>
    public static TheoryData<string> StraddleScripts() =>
    [
        "h,w0,w300,w511,m0:512:1280",                   // moved: 256 pages in each table, whole
        "h,w0,w300,w511,m0:512:1280,f1280:1",           // a written page in the first table
        "h,w0,w300,w511,m0:512:1280,f1580:1",           // a written page in the second table
        "h,w0,w300,w511,m0:512:1280,f1281:1",           // a zero-filled page: the zero page, not lazy-free
        "h,w0,w300,w511,m0:512:1280,f1280:512",         // all of it: still split
        "h,w0,w300,w511,m0:512:1280,f1280:512,o1280:512", // lazy-free pages discarded
        "h,w0,w300,w511,m0:512:1280,k1500:100",         // MADV_COLD across the table boundary
        "h,w0,w300,w511,m0:512:1280,o1280:512",         // swap-backed, no swap: split, kept
        "h,w0:512,m0:512:1280,f1400:200,o1280:512",     // every page written
        "h,w0,w300,w511,m0:512:1100,f1100:1",           // 1100: 436 pages in the first table
        "h,w0,w300,w511,m0:512:1280,m1344:64:256,f1280:1", // a part moved again: three tables
        "h,w0,w300,w511,m0:512:1280,d1280:1,f1581:1",   // a zapped page: the rest is split
        "h,w0:512,m0:512:1280,v1290,f1280:1",           // pinned: not split
        "h,w0,w300,w511,m0:512:1280,p1536:512,f1280:1", // two VMAs (mprotect at the table boundary)
    ];

    [NativeTheory]
    [MemberData(nameof(StraddleScripts))]
    public void AHugePageInTwoTablesIsSplitAsTheHostDoes(string script) => AssertSameAsHost(script, smaps: true);

    /// <summary>
    /// MADV_COLLAPSE of shared anonymous memory (shmem): the page cache gets a PMD-sized folio
    /// (holes filled: RssShmem the whole 2 MiB), the PTE table is freed (VmPTE 4 kB less) and a
    /// PMD leaf maps it (ShmemPmdMapped); a later DONTNEED of one page zaps the whole leaf and the
    /// table does not come back; a range with nothing cached ends the walk with EINVAL.
    /// </summary>
    public static TheoryData<string> ShmemScripts() =>
    [
        "c0:512",                   // nothing cached: EINVAL
        "w0,c0:512",
        "r0,c0:512",                // a read fault caches a page too
        "w0,w9,c0:512,w3",
        "w0,c0:512,d0:1",           // the whole leaf goes, VmPTE stays down
        "w0,c0:512,d3:1,r4",        // the cached folio is mapped by a PMD again
        "w0,c0:512,d0:1,c0:512",    // collapse_pte_mapped_thp maps the cached folio
        "w0,c0:512,c0:512",
        "w0,c0:512,u0:512",
        "w0,d0:1,c0:512",           // cached, unmapped, an empty table
        "w0,c0:1024",               // nothing cached in the second 2 MiB: EINVAL after the first
        "w600,c0:1024",             // nothing in the first: the second is not tried
        "w5,w1000,c0:2048",
        "n,w5,c0:512",              // MADV_NOHUGEPAGE: EINVAL
        "w0,C4096:8192",            // inside one 2 MiB: EINVAL
    ];

    [NativeTheory]
    [MemberData(nameof(ShmemScripts))]
    public void AShmemCollapseDoesWhatTheHostDoes(string script) => AssertSameAsHost(script, smaps: true, shmem: true);

    /// <summary>
    /// Runs the steps on the model and in the probe; after each step the result and the changes of
    /// VmPTE and RssAnon (and with <paramref name="smaps"/> AnonHugePages and LazyFree) must agree;
    /// with <paramref name="shmem"/> the mapping is shared anonymous, and RssShmem (and
    /// ShmemPmdMapped) must agree too.
    /// </summary>
    private void AssertSameAsHost(string script, bool smaps, bool shmem = false)
    {
        var steps = script.Split(',');
        var seen = new List<string>();
        using (var t = new ModelTarget(new MachineOptions { PageData = false, Thp = MappingDifferential.HostThp, Design = PtLab.Reclaim.Designs.Factory(Design)! }))
        {
            // As the probe: 8 MiB, 1 GiB into an empty 512 GiB slot.
            var m = t.Mmap(PgdSlot + (1UL << 30), Pages * K4, Prot.Read | Prot.Write, (shmem ? MapFlags.Shared : MapFlags.Private) | MapFlags.Anonymous | MapFlags.FixedNoReplace);
            Assert.True(m.Ok, m.ToString());
            var before = t.Status();
            var pins = new long[16];
            int pinned = 0;
            foreach (string step in steps)
            {
                string[] nm = step.Length > 1 ? step[1..].Split(':') : ["0"];
                ulong n = ulong.Parse(nm[0], CultureInfo.InvariantCulture);
                ulong count = nm.Length > 1 ? ulong.Parse(nm[1], CultureInfo.InvariantCulture) : 1;
                ulong at = m.Address + (n * K4);
                var result = step[0] switch
                {
                    'r' or 'w' => t.TouchPages(at, count * K4, write: step[0] == 'w').Ok ? Errno.None : throw new InvalidOperationException($"{step} faulted"),
                    'c' => t.Madvise(at, count * K4, Advice.Collapse),
                    'C' => t.Madvise(m.Address + n, count, Advice.Collapse),
                    'd' => t.Madvise(at, count * K4, Advice.DontNeed),
                    'f' => t.Madvise(at, count * K4, Advice.Free),
                    'k' => t.Madvise(at, count * K4, Advice.Cold),
                    'o' => t.Madvise(at, count * K4, Advice.PageOut),
                    'm' => t.Mremap(at, count * K4, count * K4, MremapFlags.MayMove | MremapFlags.Fixed, m.Address + (ulong.Parse(nm[2], CultureInfo.InvariantCulture) * K4)).Error,
                    'u' => t.Munmap(at, count * K4),
                    'p' or 'P' => t.Mprotect(at, count * K4, step[0] == 'p' ? Prot.Read : Prot.None),
                    'h' or 'n' => t.Madvise(m.Address, Pages * K4, step[0] == 'h' ? Advice.HugePage : Advice.NoHugePage),
                    'l' => t.Mlock(m.Address, Pages * K4),
                    'v' => t.Mm.GetUserPages(t.Cpu, at, 1, write: false, pins.AsSpan(pinned++, 1)) == 1 ? Errno.None : Errno.EFAULT,
                    _ => throw new ArgumentException($"unknown step {step}"),
                };
                var s = t.Status();
                string line = $"{step} r={(result == Errno.None ? "0" : result.ToString())} pte={s.VmPteKb - before.VmPteKb} anon={s.RssAnonKb - before.RssAnonKb}";
                if (shmem)
                {
                    line += $" shmem={s.RssShmemKb - before.RssShmemKb}";
                }

                if (smaps)
                {
                    var vmas = t.Mm.Smaps(t.Cpu).Where(v => v.Start >= m.Address && v.Start < m.Address + (Pages * K4)).ToList();
                    line += $" AnonHugePages={vmas.Sum(v => v.AnonHugePagesKb)} LazyFree={vmas.Sum(v => v.LazyFreeKb)}";
                    if (shmem)
                    {
                        line += $" ShmemPmdMapped={vmas.Sum(v => v.ShmemPmdMappedKb)}";
                    }
                }

                seen.Add(line);
            }
        }

        // The probe reads its own figures, in a process with nothing else moving them. The host can
        // still fail a step for a reason of its own that passes (a split refused while another CPU
        // holds a transient reference to the folio), so a script that differs is run again, up to
        // three runs in all; the model is deterministic, and every run that differed is printed.
        string[] kernel = [];
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            kernel = Probe(shmem ? "shmem" : "anon", script).Select((f, i) => $"{steps[i]} r={f["r"]} pte={f["pte"]} anon={f["anon"]}"
                + (shmem ? $" shmem={f["shmem"]}" : "")
                + (smaps ? $" AnonHugePages={f["AnonHugePages"]} LazyFree={f["LazyFree"]}" : "")
                + (smaps && shmem ? $" ShmemPmdMapped={f["ShmemPmdMapped"]}" : "")).ToArray();
            if (kernel.SequenceEqual(seen))
            {
                break;
            }

            output.WriteLine($"host run {attempt} differs:");
            for (int i = 0; i < steps.Length; i++)
            {
                output.WriteLine($"model  {seen[i]}");
                output.WriteLine($"kernel {(i < kernel.Length ? kernel[i] : "")}");
            }
        }

        Assert.Equal(kernel, seen);
    }

    /// <summary>
    /// The probe program (Native/collapse.c) in a process of its own reads what ptlab's address
    /// space cannot show: AnonHugePages, ShmemPmdMapped and FilePmdMapped from smaps. An anonymous
    /// collapse maps a huge page and keeps VmPTE (the deposit); a shmem collapse maps a PMD too and
    /// frees the PTE table (AShmemCollapseDoesWhatTheHostDoes compares it with the model); a
    /// regular file on a kernel without CONFIG_READ_ONLY_THP_FOR_FS is refused with EINVAL; a page
    /// pinned by vmsplice makes the collapse fail with EAGAIN.
    /// </summary>
    [NativeFact]
    public void TheProbeSeesTheHugePageTheDepositAndTheRefusals()
    {
        var anon = Probe("anon", "w0,c0:512");
        Assert.Equal("0", anon[1]["r"]);
        Assert.Equal("2048", anon[1]["AnonHugePages"]);
        Assert.Equal(anon[0]["pte"], anon[1]["pte"]); // the table is deposited, not freed

        var pinned = Probe("anon", "w0,v0,c0:512");
        Assert.Equal("EAGAIN", pinned[2]["r"]);
        Assert.Equal("0", pinned[2]["AnonHugePages"]);

        var shmem = Probe("shmem", "w0,c0:512");
        if (shmem[1]["r"] == "0")
        {
            Assert.Equal("2048", shmem[1]["ShmemPmdMapped"]);
            Assert.Equal("2048", shmem[1]["shmem"]); // the holes are filled
            Assert.Equal("-4", (long.Parse(shmem[1]["pte"], CultureInfo.InvariantCulture) - long.Parse(shmem[0]["pte"], CultureInfo.InvariantCulture)).ToString(CultureInfo.InvariantCulture)); // the table is retracted
        }
        else
        {
            output.WriteLine($"this host refuses shmem collapse: {shmem[1]["r"]} (shmem_enabled deny?)");
        }

        var file = Probe("file", "r0:512,c0:512");
        if (KernelConfig("CONFIG_READ_ONLY_THP_FOR_FS") is false)
        {
            Assert.Equal("EINVAL", file[1]["r"]);
        }
        else
        {
            output.WriteLine($"CONFIG_READ_ONLY_THP_FOR_FS is set or unknown: the file collapse gave {file[1]["r"]}");
        }
    }

    /// <summary>Whether /proc/config.gz sets <paramref name="option"/>; null where it cannot be read.</summary>
    private static bool? KernelConfig(string option)
    {
        const string path = "/proc/config.gz";
        if (!File.Exists(path))
        {
            return null;
        }

        using var gz = new System.IO.Compression.GZipStream(File.OpenRead(path), System.IO.Compression.CompressionMode.Decompress);
        using var r = new StreamReader(gz);
        return r.ReadToEnd().Contains(option + "=y", StringComparison.Ordinal);
    }

    /// <summary>Runs the probe; one dictionary per step, "key=value" fields by key.</summary>
    private static List<Dictionary<string, string>> Probe(string mode, string steps)
    {
        string exe = NativeBuild.BuildEmbedded(typeof(CollapseKernelTests).Assembly, "collapse.c", "collapse");
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { KernelTarget.DiskBackedTempDirectory(), mode, steps })
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new InvalidOperationException("the probe did not start");
        string text = p.StandardOutput.ReadToEnd();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"collapse exited {p.ExitCode}: {err}");
        var result = new List<Dictionary<string, string>>();
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var d = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (string f in line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1))
            {
                int eq = f.IndexOf('=', StringComparison.Ordinal);
                d[f[..eq]] = f[(eq + 1)..];
            }

            result.Add(d);
        }

        return result;
    }
}
