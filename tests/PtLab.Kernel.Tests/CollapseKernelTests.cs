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
    /// MADV_PAGEOUT of a whole lazy-free huge page: reclaim discards it whole, never split. Mapped
    /// by PTEs ("p1:1,W": mprotect of one page splits the PMD, and the VMAs merge again, so one
    /// VMA's range covers all 512 entries), <c>folio_unmap_pte_batch</c> clears the 512 entries at
    /// once: no thp_split_page, every entry none (a split would map the zero-filled pages the zero
    /// page). Mapped by a PMD, reclaim splits the PMD (thp_split_pmd, the deposit becomes the PTE
    /// table) and discards the folio through its PTEs. A page written after MADV_FREE keeps all
    /// 512 (swap-backed again); a swap-backed one is split (no swap here), as a pinned lazy-free
    /// one keeps its pages. Besides the figures of <see cref="SplitScripts"/>, the pages present,
    /// mapping the zero page and swapped (pagemap), and the thp_split_page and thp_split_pmd events
    /// must agree.
    /// </summary>
    public static TheoryData<string> FolioReclaimScripts() =>
    [
        "h,w0,w300,w511,p1:1,W,f0:512,o0:512",      // PTE-mapped, lazy-free: discarded whole
        "h,w0:512,p1:1,W,f0:512,o0:512",
        "h,w0,w300,w511,p1:1,W,f0:512,w5,o0:512",   // redirtied: all 512 kept, swap-backed again
        "h,w0,w300,w511,p1:1,W,f0:512,o0:256",      // part of it: split, the part's pages discarded
        "h,w0,w300,w511,p1:1,W,o0:512",             // swap-backed, no swap: split
        "h,w0,w300,w511,p1:1,W,f0:512,v3,o0:512",   // pinned: kept, swap-backed again
        "h,w0,w300,w511,f0:512,o0:512",             // PMD-mapped, lazy-free: PMD split, discarded
        "h,w0:512,f0:512,o0:512",
        "h,w0,w300,w511,f0:512,w5,o0:512",          // PMD-mapped, redirtied
        "h,w0,w300,w511,o0:512",                    // PMD-mapped, swap-backed: split
        "h,w0,w300,w511,w600,f0:1024,o0:1024",      // two huge pages, both lazy-free
    ];

    [NativeTheory]
    [MemberData(nameof(FolioReclaimScripts))]
    public void AWholeLazyFreeHugePageIsReclaimedWholeAsTheHostDoes(string script) => AssertSameAsHost(script, smaps: true, entries: true);

    /// <summary>
    /// A huge page shared with a child after fork ("F"; "X" makes the child exit). MADV_COLD,
    /// MADV_PAGEOUT and MADV_FREE in the parent leave it alone, whole or in part, PMD- or
    /// PTE-mapped: <c>folio_maybe_mapped_shared</c> (a PTE-mapped one covered whole is skipped
    /// because its mapcount is not its page count). A partial munmap or mprotect in the parent
    /// splits the PMD in the parent only (thp_split_pmd, no thp_split_page: the folio split is
    /// deferred); once the child is gone the parent's advice splits it as usual.
    /// </summary>
    public static TheoryData<string> ForkScripts() =>
    [
        "h,w0,w300,w511,F,o0:512",
        "h,w0,w300,w511,F,o0:1",
        "h,w0,w300,w511,F,k0:1",
        "h,w0,w300,w511,F,k0:512",
        "h,w0,w300,w511,F,f0:1",
        "h,w0,w300,w511,F,f0:512,o0:512",
        "h,w0,w300,w511,F,u0:1",                    // the parent's PMD split, the folio whole
        "h,w0,w300,w511,F,p1:1,W,o0:512",           // PTE-mapped in the parent, PMD in the child
        "h,w0,w300,w511,F,p1:1,W,o0:1",
        "h,w0,w300,w511,F,p1:1,W,f0:512",
        "h,w0,w300,w511,F,p1:1,W,k5:3",
        "h,w0,w300,w511,F,X,o0:1",                  // the child gone: split
        "h,w0,w300,w511,F,u0:1,o1:1",
        "h,w0,w300,w511,F,u0:1,X,o1:1",
        "h,w0,w300,w511,F,w5,o0:1",                 // copy-on-write of the PMD: the parent's own
    ];

    [NativeTheory]
    [MemberData(nameof(ForkScripts))]
    public void AHugePageSharedWithAChildIsLeftAsTheHostLeavesIt(string script) => AssertSameAsHost(script, smaps: true, entries: true);

    /// <summary>
    /// A huge page whose pages 1 to 10 were moved one by one by mremap, each to a PTE table of its
    /// own beyond the mapping: its pages lie in 11 tables, and a partial MADV_FREE, MADV_COLD or
    /// MADV_PAGEOUT still splits it (the reverse map finds every piece; the moved pages, zero-filled,
    /// map the zero page where they are). MADV_PAGEOUT over the first 2 MiB gives ENOMEM for the
    /// holes the moves left, after the split.
    /// </summary>
    public static TheoryData<string> ManyTablesScripts()
    {
        string moved = "h,w0,w300,w511";
        for (int k = 1; k <= 10; k++)
        {
            moved += $",m{k}:1:{2048 + (k * 512) + k}";
        }

        return [moved + ",f0:1", moved + ",k0:1", moved + ",o0:512", moved + ",w20,f20:1"];
    }

    [NativeTheory]
    [MemberData(nameof(ManyTablesScripts))]
    public void AHugePageInElevenTablesIsSplitAsTheHostDoes(string script) => AssertSameAsHost(script, smaps: true, entries: true);

    /// <summary>The swap area a script runs with: none, a swap file, or a block device (a loop device).</summary>
    public enum SwapKind
    {
        None,
        File,
        BlockDevice,
    }

    /// <summary>
    /// MADV_PAGEOUT of a swap-backed huge page with a swap area of 256 MiB. On a block device the
    /// cluster allocator gives it 512 slots of one cluster: it is written out whole (thp_swpout),
    /// its 512 entries become swap entries (zero-filled pages too), and a PMD-mapped one has its PMD
    /// split first (thp_split_pmd). On a swap file 6.18 gives it no huge slot: it is split
    /// (thp_swpout_fallback), its zero-filled pages map the zero page and the others go to swap one
    /// by one. A huge page covered in part, or whose pages lie in two tables, is split either way.
    /// The host part switches a swap area on for the script and off again (root only; where it
    /// cannot, the test says why and checks nothing).
    /// </summary>
    public static TheoryData<string, SwapKind> SwapScripts() => new()
    {
        { "h,w0,w300,w511,o0:512", SwapKind.BlockDevice },            // PMD-mapped: whole, PMD split
        { "h,w0,w300,w511,p1:1,W,o0:512", SwapKind.BlockDevice },     // PTE-mapped: whole
        { "h,w0:512,o0:512", SwapKind.BlockDevice },
        { "h,w0,w300,w511,o0:1", SwapKind.BlockDevice },              // in part: split
        { "h,w0,w300,w511,m0:512:1280,o1280:512", SwapKind.BlockDevice }, // two tables: split
        { "h,w0,w300,w511,F,o0:512", SwapKind.BlockDevice },          // shared with a child: left
        { "h,w0,w300,w511,w600,o0:1024", SwapKind.BlockDevice },      // two huge pages, two clusters
        { "h,w0,w300,w511,o0:512", SwapKind.File },                   // a swap file: split
        { "h,w0,w300,w511,p1:1,W,o0:512", SwapKind.File },
        { "h,w0,w300,w511,o0:1", SwapKind.File },
    };

    [NativeTheory]
    [MemberData(nameof(SwapScripts))]
    public void AHugePageIsSwappedOutWholeWhereTheSwapDeviceAllowsIt(string script, SwapKind swap) => AssertSameAsHost(script, smaps: true, entries: true, swap: swap);

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
        "w0,w1100,p1100:1,c0:512",  // the mapping split into three VMAs: the first 2 MiB collapses
        "w0,w600,u1500:1,c0:1024",  // split by a munmap: both 2 MiB collapse
        "w1100,p1100:1,c1024:512",  // a 2 MiB in two VMAs: EINVAL
        "w0,p600:1,c0:512",
        "w0,u1024:1024,c0:512",
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
    private void AssertSameAsHost(string script, bool smaps, bool shmem = false, bool entries = false, SwapKind swap = SwapKind.None)
    {
        string why = "";
        using var hostSwap = swap == SwapKind.None ? null : HostSwap.TryStart(swap == SwapKind.BlockDevice, out why);
        if (swap != SwapKind.None && hostSwap is null)
        {
            output.WriteLine($"not run on this host: {why}");
            return;
        }

        var steps = script.Split(',');
        var seen = new List<string>();
        var options = new MachineOptions
        {
            PageData = false,
            Thp = MappingDifferential.HostThp,
            ZeroPage = MappingDifferential.HostZeroPage,
            Design = PtLab.Reclaim.Designs.Factory(Design)!,
            SwapBytes = swap == SwapKind.None ? 0 : HostSwap.Bytes,
            SwapBlockDevice = swap == SwapKind.BlockDevice,
        };
        using (var t = new ModelTarget(options))
        {
            MmStruct? child = null;
            // As the probe: 8 MiB, 1 GiB into an empty 512 GiB slot.
            var m = t.Mmap(PgdSlot + (1UL << 30), Pages * K4, Prot.Read | Prot.Write, (shmem ? MapFlags.Shared : MapFlags.Private) | MapFlags.Anonymous | MapFlags.FixedNoReplace);
            Assert.True(m.Ok, m.ToString());
            var before = t.Status();
            var pins = new long[16];
            int pinned = 0;
            var events = default(ThpCounters);
            var childEvents = default(ThpCounters);
            var swapEvents = t.Machine.ThpSwapStats;
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
                    'W' => t.Mprotect(m.Address, Pages * K4, Prot.Read | Prot.Write),
                    'F' => (child = t.Mm.Fork(t.Cpu)) is null ? Errno.ENOMEM : Errno.None,
                    'X' => EndChild(t, ref child),
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

                if (entries)
                {
                    line += ModelEntries(t, m.Address, child, ref events, ref childEvents, ref swapEvents);
                }

                seen.Add(line);
            }

            EndChild(t, ref child);
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
                + (smaps && shmem ? $" ShmemPmdMapped={f["ShmemPmdMapped"]}" : "")
                + (entries ? HostEntries(f) : "")).ToArray();
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
    /// The pagemap figures of the probe's step: pages present, pages mapping the shared zero page
    /// (its frame number needs root) and swap entries in the mapping, and the changes of
    /// thp_split_page, thp_split_pmd, thp_swpout and thp_swpout_fallback over the step
    /// (machine-wide: another process's split can add to them, and the run is then made again).
    /// </summary>
    private static string HostEntries(Dictionary<string, string> f) =>
        $" present={f["present"]} zero={(Environment.IsPrivilegedProcess ? f["zero"] : "?")} swap={f["swap"]} split={f["split"]} splitpmd={f["splitpmd"]}"
        + $" swpout={f["swpout"]} swpfb={f["swpfb"]}";

    /// <summary>
    /// The same figures of the model: the leaf entries of the 8 MiB, and the split events of the
    /// address space and its child since the last step (<paramref name="last"/> and
    /// <paramref name="lastChild"/>, the counts then, are updated).
    /// </summary>
    private static string ModelEntries(ModelTarget t, ulong start, MmStruct? child, ref ThpCounters last, ref ThpCounters lastChild, ref (long SwpOut, long SwpOutFallback) lastSwap)
    {
        int present = 0, zero = 0, swap = 0;
        for (int i = 0; i < Pages; i++)
        {
            ulong e = t.Mm.PeekPte(start + ((ulong)i * K4));
            if (PtLab.Paging.Entry.IsPresent(e))
            {
                present++;
                zero += PtLab.Paging.Entry.IsSpecial(e) && PtLab.Paging.Entry.Pfn(e) == t.Machine.Phys.ZeroPfn ? 1 : 0;
            }
            else if (PtLab.Paging.Entry.IsSwap(e))
            {
                swap++;
            }
        }

        var now = t.Mm.ThpCounters();
        var nowChild = child?.ThpCounters() ?? default;
        long split = now.SplitPage - last.SplitPage + nowChild.SplitPage - lastChild.SplitPage;
        long splitPmd = now.SplitPmd - last.SplitPmd + nowChild.SplitPmd - lastChild.SplitPmd;
        var nowSwap = t.Machine.ThpSwapStats;
        string line = $" present={present} zero={(Environment.IsPrivilegedProcess ? zero.ToString(CultureInfo.InvariantCulture) : "?")} swap={swap} split={split} splitpmd={splitPmd}"
            + $" swpout={nowSwap.SwpOut - lastSwap.SwpOut} swpfb={nowSwap.SwpOutFallback - lastSwap.SwpOutFallback}";
        (last, lastChild, lastSwap) = (now, nowChild, nowSwap);
        return line;
    }

    /// <summary>The "X" step: the child made by "F" exits.</summary>
    private static Errno EndChild(ModelTarget t, ref MmStruct? child)
    {
        if (child is null)
        {
            return Errno.EINVAL;
        }

        child.Exit(t.Cpu);
        child = null;
        return Errno.None;
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
