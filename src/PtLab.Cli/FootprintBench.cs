using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Cli;

/// <summary>
/// <c>ptlab bench footprint</c>: host memory per resident page and per page table, measured as the
/// growth of the GC heap (after full collections), not estimated from sizes. Page data off, the
/// <c>none</c> design, one CPU. Three layouts: dense (every page of a region written), sparse (one
/// written page per 2 MiB) and empty tables (the sparse layout after MADV_DONTNEED of everything:
/// the tables stay under <c>none</c>).
/// </summary>
internal static class FootprintBench
{
    private const ulong TwoMiB = 2UL << 20;

    public static Command Command(TextWriter stdout)
    {
        var dense = new Option<int>("--dense-gib") { Description = "GiB written page by page for the dense layout (1-256).", DefaultValueFactory = _ => 4 };
        var sparse = new Option<int>("--sparse-gib") { Description = "GiB of address space with one written page per 2 MiB, for the sparse and empty-table layouts (1-65536).", DefaultValueFactory = _ => 256 };
        var cmd = new Command(
            "footprint",
            "Host memory per resident page and per page table (page data off, design none): dense, sparse and empty tables, measured as GC heap growth. A benchmark, not a test.")
        {
            dense, sparse,
        };
        cmd.SetAction(p =>
        {
            int d = p.GetValue(dense), s = p.GetValue(sparse);
            if (d is < 1 or > 256)
            {
                throw new UsageException($"--dense-gib must be between 1 and 256, got {d}");
            }

            if (s is < 1 or > 65536)
            {
                throw new UsageException($"--sparse-gib must be between 1 and 65536, got {s}");
            }

            foreach (var line in Measure((ulong)d << 30, (ulong)s << 30))
            {
                stdout.WriteLine(line);
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    /// <summary>Runs the three layouts and returns one line per figure.</summary>
    internal static IEnumerable<string> Measure(ulong denseBytes, ulong sparseBytes)
    {
        var lines = new List<string>();
        var (perPage, denseHost, pages, denseSec, split) = Dense(denseBytes);
        lines.Add(Line($"dense: {pages:N0} resident pages ({denseBytes >> 30} GiB written), GC heap +{denseHost:N0} B: {perPage:0.00} B per resident page, tables and descriptors included ({denseSec:0.0} s)"));
        lines.Add(Line($"dense, per resident page: {split.Descriptors / (double)pages:0.000} B page descriptors (tables' included), {split.Tables / (double)pages:0.000} B table storage (entries, headers, design state), {(denseHost - split.Descriptors - split.Tables) / (double)pages:0.000} B the rest"));
        var (perSparse, perEmpty, tables, sparseSec) = Sparse(sparseBytes);
        lines.Add(Line($"sparse: {tables:N0} PTE tables with one resident page each: {perSparse:0.0} B per table, its page included ({sparseSec:0.0} s)"));
        lines.Add(Line($"empty: the same {tables:N0} PTE tables after MADV_DONTNEED of everything: {perEmpty:0.0} B per table"));
        return lines;
    }

    private static string Line(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static Machine NewMachine(ulong touchBytes) => new(new MachineOptions
    {
        RamBytes = Math.Max(1L << 30, (long)(touchBytes + (touchBytes >> 6)) + (256L << 20)),
        PageData = false,
        Design = Designs.Factory("none")!,
    });

    private static long Heap()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    private static (double PerPage, long Host, long Pages, double Seconds, (long Descriptors, long Tables) Split) Dense(ulong bytes)
    {
        var m = NewMachine(bytes);
        var mm = m.CreateAddressSpace();
        var cpu = m.Cpus[0];
        var r = mm.Mmap(cpu, 0, bytes, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous);
        if (!r.Ok)
        {
            throw new UsageException($"bench footprint: mmap of {bytes >> 30} GiB failed: {r.Error}");
        }

        long before = Heap();
        long descBefore = m.Phys.DescriptorHostBytes, tablesBefore = m.Phys.TableHostBytes;
        var sw = Stopwatch.StartNew();
        for (ulong va = r.Address; va < r.Address + bytes; va += 4096)
        {
            cpu.Touch(va);
        }

        sw.Stop();
        long after = Heap();
        long pages = mm.Status().RssAnonKb / 4;
        var split = (m.Phys.DescriptorHostBytes - descBefore, m.Phys.TableHostBytes - tablesBefore);
        GC.KeepAlive(m);
        return ((after - before) / (double)pages, after - before, pages, sw.Elapsed.TotalSeconds, split);
    }

    private static (double PerSparse, double PerEmpty, long Tables, double Seconds) Sparse(ulong bytes)
    {
        var sw = Stopwatch.StartNew();
        var (perSparse, tables) = PerTable(bytes, empty: false);
        var (perEmpty, _) = PerTable(bytes, empty: true);
        return (perSparse, perEmpty, tables, sw.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// One page written per 2 MiB (sparse), or per 2 MiB a page read (the zero page) and the 2 MiB
    /// then dropped with MADV_DONTNEED (empty: no frame but the table's own, and the entry storage
    /// goes back before the next table takes it).
    /// </summary>
    private static (double PerTable, long Tables) PerTable(ulong bytes, bool empty)
    {
        var m = NewMachine(bytes / 512);
        var mm = m.CreateAddressSpace();
        var cpu = m.Cpus[0];
        var r = mm.Mmap(cpu, 0, bytes, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve);
        if (!r.Ok)
        {
            throw new UsageException($"bench footprint: mmap of {bytes >> 30} GiB failed: {r.Error}");
        }

        long before = Heap();
        for (ulong va = r.Address; va < r.Address + bytes; va += TwoMiB)
        {
            if (empty)
            {
                cpu.ReadByte(va, out _);
                mm.Madvise(cpu, va, TwoMiB, Advice.DontNeed);
            }
            else
            {
                cpu.Touch(va);
            }
        }

        long after = Heap();
        long tables = mm.Status().Tables.Pte;
        GC.KeepAlive(m);
        return ((after - before) / (double)tables, tables);
    }
}
