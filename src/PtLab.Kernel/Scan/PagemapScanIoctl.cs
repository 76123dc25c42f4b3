using System.Runtime.InteropServices;

namespace PtLab.Kernel.Scan;

/// <summary>
/// The <c>PAGEMAP_SCAN</c> ioctl on <c>/proc/PID/pagemap</c> (Linux 6.7+, <c>include/uapi/linux/fs.h</c>,
/// <c>do_pagemap_scan()</c> in <c>fs/proc/task_mmu.c</c>), read-only: <c>PM_SCAN_WP_MATCHING</c> and
/// <c>PM_SCAN_CHECK_WPASYNC</c> are never passed, so the scan never writes to the target.
/// </summary>
internal static unsafe class PagemapScanIoctl
{
    /// <summary><c>PAGE_IS_WRITTEN</c>: set on every entry of an existing PTE table by the fast path (see <see cref="TablePass"/>).</summary>
    public const ulong PageIsWritten = 1 << 1;

    /// <summary><c>PAGE_IS_FILE</c>.</summary>
    public const ulong PageIsFile = 1 << 2;

    /// <summary><c>PAGE_IS_PRESENT</c>.</summary>
    public const ulong PageIsPresent = 1 << 3;

    /// <summary><c>PAGE_IS_SWAPPED</c>: any non-present, non-none entry (swap, migration, markers).</summary>
    public const ulong PageIsSwapped = 1 << 4;

    /// <summary><c>PAGE_IS_PFNZERO</c>: the shared zero page (or the huge zero page), decided in the kernel.</summary>
    public const ulong PageIsPfnZero = 1 << 5;

    /// <summary><c>PAGE_IS_HUGE</c>: a PMD or PUD leaf, or a hugetlb entry.</summary>
    public const ulong PageIsHuge = 1 << 6;

    /// <summary><c>PAGE_IS_GUARD</c> (Linux 6.15+): a guard-region marker.</summary>
    public const ulong PageIsGuard = 1 << 8;

    /// <summary><c>_IOWR('f', 16, struct pm_scan_arg)</c>: (3 &lt;&lt; 30) | (96 &lt;&lt; 16) | ('f' &lt;&lt; 8) | 16.</summary>
    public const uint Request = (3u << 30) | (96u << 16) | ('f' << 8) | 16;

    /// <summary>
    /// Regions per call: the kernel's bounce buffer (<c>PAGEMAP_WALK_SIZE &gt;&gt; PAGE_SHIFT</c>). With a
    /// larger <c>vec_len</c> one call walks several times, resuming internally, and on Linux 6.18 that
    /// reported pages twice (4,608 regions of one page for 4,096 present pages of a sparse layout); one
    /// walk per call, resumed here at <c>walk_end</c>, is exact.
    /// </summary>
    public const int RegionsPerCall = 512;

    private const int ENOTTY = 25;
    private const int EINVAL = 22;

    /// <summary>
    /// Pass A. With <c>category_mask == return_mask == PAGE_IS_WRITTEN</c> and nothing else,
    /// <c>pagemap_scan_pmd_entry</c> takes its fast path and reports every entry of an existing PTE table,
    /// <c>pte_none</c> included (only uffd-wp entries are skipped), and a PMD leaf as one 2 MiB range,
    /// while <c>pagemap_scan_pte_hole</c> reports nothing where no table exists.
    /// </summary>
    public static readonly ScanMasks TablePass = new(PageIsWritten, 0, PageIsWritten);

    /// <summary>
    /// Pass B: every populated entry (present, swap, marker) and every leaf, with what it is. Without
    /// <see cref="PageIsFile"/> in any mask the kernel skips <c>vm_normal_page</c> and the struct page
    /// read for each present entry; only leaves need it (<see cref="LeafFilePass"/>).
    /// </summary>
    public static ScanMasks PopulatedPass(bool withGuard) => new(
        0,
        PageIsPresent | PageIsSwapped | (withGuard ? PageIsGuard : 0),
        PageIsPresent | PageIsSwapped | PageIsHuge | PageIsPfnZero | (withGuard ? PageIsGuard : 0));

    /// <summary>Whether a leaf maps file (page cache, shmem, hugetlb) or anonymous memory: only anonymous leaves have a deposited table.</summary>
    public static readonly ScanMasks LeafFilePass = new(PageIsHuge, 0, PageIsHuge | PageIsFile);

    /// <summary>
    /// Scans [start, end) with <paramref name="masks"/>, calling <paramref name="region"/> for each
    /// range reported, in address order; resumes at <c>walk_end</c> until the range is done. Returns 0 or an errno.
    /// </summary>
    public static int Scan(int fd, ulong start, ulong end, ScanMasks masks, PageRegion[] buffer, Action<PageRegion> region)
    {
        if (buffer.Length < RegionsPerCall)
        {
            throw new ArgumentException($"the buffer needs {RegionsPerCall} regions", nameof(buffer));
        }

        fixed (PageRegion* vec = buffer)
        {
            ulong from = start;
            ulong reported = start;         // regions never go backwards: anything below this was reported already
            while (from < end)
            {
                var arg = new PmScanArg
                {
                    Size = (ulong)sizeof(PmScanArg),
                    Flags = 0, // never PM_SCAN_WP_MATCHING: that would write-protect the target's pages
                    Start = from,
                    End = end,
                    Vec = (ulong)vec,
                    VecLen = RegionsPerCall,
                    CategoryMask = masks.Category,
                    CategoryAnyofMask = masks.AnyOf,
                    ReturnMask = masks.Return,
                };
                int n = LibC.Ioctl(fd, Request, &arg);
                if (n < 0)
                {
                    return Marshal.GetLastPInvokeError();
                }

                for (int i = 0; i < n; i++)
                {
                    var r = buffer[i];
                    if (r.End <= reported)
                    {
                        continue;
                    }

                    if (r.Start < reported)
                    {
                        r = r with { Start = reported };
                    }

                    region(r);
                    reported = r.End;
                }

                if (arg.WalkEnd <= from)
                {
                    return EINVAL; // no progress: a kernel that does not report walk_end as documented
                }

                from = arg.WalkEnd;
            }

            return 0;
        }
    }

    /// <summary>
    /// Pass A, one table at a time: with <c>max_pages = 1</c> the fast-path walk stops at the first
    /// entry of the next existing table (or PMD leaf) at or after <paramref name="start"/>, skipping
    /// holes at the upper levels; <paramref name="table"/> gets that entry's address and the search
    /// resumes at the next 2 MiB boundary. One call per table, instead of the 512 outputs per table
    /// of an unbounded pass. Returns 0 or an errno.
    /// </summary>
    public static int FindTables(int fd, ulong start, ulong end, Action<ulong> table)
    {
        PageRegion found = default;
        ulong from = start;
        while (from < end)
        {
            var arg = new PmScanArg
            {
                Size = (ulong)sizeof(PmScanArg),
                Flags = 0, // never PM_SCAN_WP_MATCHING
                Start = from,
                End = end,
                Vec = (ulong)&found,
                VecLen = 1,
                MaxPages = 1,
                CategoryMask = TablePass.Category,
                ReturnMask = TablePass.Return,
            };
            int n = LibC.Ioctl(fd, Request, &arg);
            if (n < 0)
            {
                return Marshal.GetLastPInvokeError();
            }

            if (n == 0)
            {
                return 0;
            }

            if (found.Start < from || found.Start >= end)
            {
                return EINVAL; // a region outside the range asked for: not the documented behaviour
            }

            table(found.Start);
            from = (found.Start | ((1UL << 21) - 1)) + 1;
        }

        return 0;
    }

    /// <summary>Whether an errno from <see cref="Scan"/> means the kernel lacks the ioctl (or the category asked for).</summary>
    public static bool IsUnsupported(int errno) => errno is ENOTTY or EINVAL;

    /// <summary><c>struct pm_scan_arg</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct PmScanArg
    {
        public ulong Size;
        public ulong Flags;
        public ulong Start;
        public ulong End;
        public ulong WalkEnd;
        public ulong Vec;
        public ulong VecLen;
        public ulong MaxPages;
        public ulong CategoryInverted;
        public ulong CategoryMask;
        public ulong CategoryAnyofMask;
        public ulong ReturnMask;
    }
}

/// <summary>The masks of one <c>PAGEMAP_SCAN</c> call (<c>category_mask</c>, <c>category_anyof_mask</c>, <c>return_mask</c>).</summary>
internal readonly record struct ScanMasks(ulong Category, ulong AnyOf, ulong Return);

/// <summary><c>struct page_region</c>: [Start, End) whose pages all have <see cref="Categories"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal readonly record struct PageRegion(ulong Start, ulong End, ulong Categories);
