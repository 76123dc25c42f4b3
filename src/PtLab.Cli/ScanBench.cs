using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel;
using PtLab.Kernel.Scan;
using PtLab.Mm;

namespace PtLab.Cli;

/// <summary>
/// <c>ptlab bench scan</c>: how long an exact scan takes. ptlab builds the layout in its own address
/// space with real mmap and touches, then scans itself: a 64 GiB sparse layout with one written page
/// per 8 MiB (8,192 PTE tables) and a dense 16 GiB layout with every page written (8,192 full tables).
/// </summary>
internal static class ScanBench
{
    private const ulong EightMiB = 8UL << 20;

    public static Command Command(TextWriter stdout)
    {
        var layout = new Option<string>("--layout") { Description = "sparse (64 GiB, a page per 8 MiB), dense (16 GiB, every page: needs 16 GiB of RAM) or both.", DefaultValueFactory = _ => "sparse" };
        layout.AcceptOnlyFromAmong("sparse", "dense", "both");
        var repeat = new Option<int>("--repeat") { Description = "Scans per layout (1-100); the minimum and median are reported.", DefaultValueFactory = _ => 5 };
        var cmd = new Command("scan", "Time exact scans (PAGEMAP_SCAN) of a 64 GiB sparse and a 16 GiB dense layout built in ptlab's own address space. A benchmark, not a test.")
        {
            layout, repeat,
        };
        cmd.SetAction(p =>
        {
            int n = p.GetValue(repeat);
            if (n is < 1 or > 100)
            {
                throw new UsageException($"--repeat must be between 1 and 100, got {n}");
            }

            if (!KernelTarget.IsSupported)
            {
                throw new UsageException("bench scan: needs Linux on x86-64");
            }

            string which = p.GetValue(layout)!;
            if (which is "sparse" or "both")
            {
                Run(stdout, "sparse 64 GiB, one page per 8 MiB", 64UL << 30, EightMiB, n);
            }

            if (which is "dense" or "both")
            {
                Run(stdout, "dense 16 GiB, every page", 16UL << 30, 4096, n);
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    private static void Run(TextWriter stdout, string name, ulong size, ulong stride, int repeat)
    {
        using var target = new KernelTarget();
        var m = target.Mmap(0, size, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve);
        if (!m.Ok)
        {
            throw new UsageException($"bench scan: mmap of {size >> 30} GiB failed: {m.Error}");
        }

        var build = Stopwatch.StartNew();
        if (stride == 4096)
        {
            // MADV_POPULATE_WRITE (Linux 5.14) faults every page in at once; touching 4 M pages one by one takes minutes.
            if (target.Madvise(m.Address, size, (Advice)23) != Errno.None)
            {
                target.TouchPages(m.Address, size, write: true);
            }
        }
        else
        {
            for (ulong a = m.Address; a < m.Address + size; a += stride)
            {
                target.TouchPages(a, 4096, write: true);
            }
        }

        build.Stop();
        var times = new List<double>();
        ProcessScan? last = null;
        for (int i = 0; i < repeat; i++)
        {
            var sw = Stopwatch.StartNew();
            last = ProcessScanner.Scan(Environment.ProcessId);
            times.Add(sw.Elapsed.TotalSeconds);
        }

        times.Sort();
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: built in {build.Elapsed.TotalSeconds:0.00} s; scan of the whole process (VmPTE {last!.VmPteKb:N0} kB, {last.PteTables:N0} PTE tables, {last.PopulatedEntries:N0} populated entries): " +
            $"min {times[0]:0.0000} s, median {times[times.Count / 2]:0.0000} s over {repeat}"));
        target.Munmap(m.Address, size);
    }
}
