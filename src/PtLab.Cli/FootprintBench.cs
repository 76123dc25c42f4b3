using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Cli;

/// <summary>
/// <c>ptlab bench footprint</c>: host memory per resident page and per page table, measured as the
/// growth of the GC heap (after full collections), not estimated from sizes. Page data off, one CPU,
/// per design (<c>none</c> and <c>pte-ref</c> by default). Three layouts: dense (every page of a
/// region written), sparse (one written page per 2 MiB) and empty tables (the sparse layout after
/// MADV_DONTNEED of everything: the tables stay under <c>none</c>). The dense figure is itemized
/// from the stores' own counts, and what they do not count is the rest of the heap's growth.
/// </summary>
internal static class FootprintBench
{
    private const ulong TwoMiB = 2UL << 20;

    public static Command Command(TextWriter stdout)
    {
        var dense = new Option<int>("--dense-gib") { Description = "GiB written page by page for the dense layout (1-256).", DefaultValueFactory = _ => 4 };
        var sparse = new Option<int>("--sparse-gib") { Description = "GiB of address space with one written page per 2 MiB, for the sparse and empty-table layouts (1-65536).", DefaultValueFactory = _ => 256 };
        var designs = new Option<string>("--designs")
        {
            Description = $"Comma-separated designs to measure, one after the other (known: {string.Join(", ", Designs.Names)}).",
            DefaultValueFactory = _ => "none,pte-ref",
        };
        var swap = new Option<int>("--swap-gib")
        {
            Description = "GiB of swap each measured machine has (0-1024): with swap, the anonymous LRU list is linked, through the pages' extension words.",
            DefaultValueFactory = _ => 0,
        };
        var cmd = new Command(
            "footprint",
            "Host memory per resident page and per page table (page data off), per design: dense, sparse and empty tables, measured as GC heap growth and itemized. A benchmark, not a test.")
        {
            dense, sparse, designs, swap,
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

            int w = p.GetValue(swap);
            if (w is < 0 or > 1024)
            {
                throw new UsageException($"--swap-gib must be between 0 and 1024, got {w}");
            }

            (string Design, DenseFigures Dense)? first = null;
            foreach (var design in Compare.ParseDesigns(p.GetValue(designs)))
            {
                var (lines, figures) = Measure((ulong)d << 30, (ulong)s << 30, design, (long)w << 30);
                foreach (var line in lines)
                {
                    stdout.WriteLine(line);
                }

                if (first is { } f)
                {
                    // The same pages and tables under both: what the heap grew by beyond the first
                    // design's is this design's own state, per PTE table.
                    stdout.WriteLine(Line(
                        $"{design} against {f.Design}, dense: +{(figures.Heap - f.Dense.Heap) / (double)figures.PteTables:0.0} B per PTE table ({figures.PteTables:N0} PTE tables), +{(figures.Heap - f.Dense.Heap) / (double)figures.Pages:0.000} B per resident page"));
                }

                first ??= (design, figures);
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    /// <summary>Runs the three layouts under <paramref name="design"/> and returns one line per figure.</summary>
    internal static (List<string> Lines, DenseFigures Dense) Measure(ulong denseBytes, ulong sparseBytes, string design = Designs.Baseline, long swapBytes = 0)
    {
        var lines = new List<string>();
        string label = swapBytes > 0 ? $"{design} (swap {swapBytes >> 30} GiB)" : design;
        var (perPage, denseHost, pages, denseSec, split) = Dense(denseBytes, design, swapBytes);
        lines.Add(Line($"{label} dense: {pages:N0} resident pages ({denseBytes >> 30} GiB written), GC heap +{denseHost:N0} B: {perPage:0.000} B per resident page, tables and descriptors included ({denseSec:0.0} s)"));
        lines.Add(Line($"{label} dense, per resident page: {split.Items(pages, denseHost)}"));
        var (perSparse, perEmpty, tables, sparseSec) = Sparse(sparseBytes, design, swapBytes);
        lines.Add(Line($"{label} sparse: {tables:N0} PTE tables with one resident page each: {perSparse:0.0} B per table, its page included ({sparseSec:0.0} s)"));
        lines.Add(double.IsNaN(perEmpty)
            ? $"{label} empty: MADV_DONTNEED of everything left fewer than the {tables:N0} PTE tables (the design freed them): no per-table figure"
            : Line($"{label} empty: the same {tables:N0} PTE tables after MADV_DONTNEED of everything: {perEmpty:0.0} B per table"));
        return (lines, new DenseFigures(denseHost, pages, split.PteTables));
    }

    /// <summary>The dense layout's heap growth, resident pages and PTE tables.</summary>
    internal readonly record struct DenseFigures(long Heap, long Pages, long PteTables);

    /// <summary>
    /// What the dense layout added, from the stores' counts: descriptors (16 bytes a frame, user
    /// pages' and table pages'), page extensions (8 bytes a frame, in segments of 64 frames made
    /// for the frames that need them: table pages, pages on a linked LRU list), stored groups of 32
    /// entries (256 bytes), slot headers (16 words of 4 bytes a table), and what the stores
    /// allocated beyond those (the unfilled part of their last chunks, state cells).
    /// </summary>
    internal readonly record struct DenseSplit(long Descriptors, long Exts, long TableFrames, long PteTables, long Tables, long Groups, long Slots)
    {
        private static readonly int Descriptor = System.Runtime.CompilerServices.Unsafe.SizeOf<PageDescriptor>();
        // The table store's layout (PtLab.Phys.TableStore, internal to the core): groups of 32
        // entries, 16 to a table, named by one 4-byte header word each.
        private const int Group = 32 * sizeof(ulong);
        private const int Header = (PhysMemory.EntriesPerTable / 32) * sizeof(int);

        public string Items(long pages, long heap)
        {
            double P(long bytes) => bytes / (double)pages;
            long userDesc = Descriptor * pages, tableDesc = Descriptor * TableFrames;
            long groups = Group * Groups, headers = Header * Slots;
            return string.Create(CultureInfo.InvariantCulture,
                $"{P(userDesc):0.000} B its descriptor, {P(tableDesc):0.000} B table pages' descriptors ({TableFrames:N0} tables), " +
                $"{P(Descriptors - userDesc - tableDesc):0.000;-0.000;0.000} B descriptor segments not yet filled; " +
                $"{P(Exts):0.000} B page extensions (segments of 64 frames holding a table's slot and lock, or a page's LRU links); " +
                $"{P(groups):0.000} B entries ({Groups:N0} groups of 32 stored), {P(headers):0.000} B slot headers ({Slots:N0} tables with a slot), " +
                $"{P(Tables - groups - headers):0.000} B table-store chunks not yet filled and design state cells; " +
                $"{P(heap - Descriptors - Exts - Tables):0.000} B the rest of the heap (design state objects, array headers, the tables naming the chunks)");
        }
    }
    private static string Line(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static Machine NewMachine(ulong touchBytes, string design, long swapBytes) => new(new MachineOptions
    {
        RamBytes = Math.Max(1L << 30, (long)(touchBytes + (touchBytes >> 6)) + (256L << 20)),
        SwapBytes = swapBytes,
        PageData = false,
        Design = Cli.DesignFactory(design),
    });

    private static long Heap()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    private static (double PerPage, long Host, long Pages, double Seconds, DenseSplit Split) Dense(ulong bytes, string design, long swapBytes)
    {
        var m = NewMachine(bytes, design, swapBytes);
        var mm = m.CreateAddressSpace();
        var cpu = m.Cpus[0];
        var r = mm.Mmap(cpu, 0, bytes, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous);
        if (!r.Ok)
        {
            throw new UsageException($"bench footprint: mmap of {bytes >> 30} GiB failed: {r.Error}");
        }

        long before = Heap();
        long descBefore = m.Phys.DescriptorHostBytes, extBefore = m.Phys.PageExtHostBytes, tablesBefore = m.Phys.TableHostBytes;
        var (groupsBefore, slotsBefore) = m.Phys.TableStorage;
        long framesBefore = TableFrames(mm), pteBefore = mm.Status().Tables.Pte;
        var sw = Stopwatch.StartNew();
        for (ulong va = r.Address; va < r.Address + bytes; va += 4096)
        {
            cpu.Touch(va);
        }

        sw.Stop();
        long after = Heap();
        long pages = mm.Status().RssAnonKb / 4;
        var (groups, slots) = m.Phys.TableStorage;
        var split = new DenseSplit(
            m.Phys.DescriptorHostBytes - descBefore, m.Phys.PageExtHostBytes - extBefore, TableFrames(mm) - framesBefore, mm.Status().Tables.Pte - pteBefore, m.Phys.TableHostBytes - tablesBefore,
            groups - groupsBefore, slots - slotsBefore);
        GC.KeepAlive(m);
        return ((after - before) / (double)pages, after - before, pages, sw.Elapsed.TotalSeconds, split);
    }

    private static long TableFrames(MmStruct mm)
    {
        var t = mm.Status().Tables;
        return t.Pte + t.Pmd + t.Pud;
    }

    private static (double PerSparse, double PerEmpty, long Tables, double Seconds) Sparse(ulong bytes, string design, long swapBytes)
    {
        var sw = Stopwatch.StartNew();
        var (perSparse, tables) = PerTable(bytes, design, swapBytes, empty: false);
        var (perEmpty, emptyTables) = PerTable(bytes, design, swapBytes, empty: true);
        return (perSparse, emptyTables == tables ? perEmpty : double.NaN, tables, sw.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// One page written per 2 MiB (sparse), or per 2 MiB a page read (the zero page) and the 2 MiB
    /// then dropped with MADV_DONTNEED (empty: no frame but the table's own, and the entry storage
    /// goes back before the next table takes it).
    /// </summary>
    private static (double PerTable, long Tables) PerTable(ulong bytes, string design, long swapBytes, bool empty)
    {
        // One written page and one PTE table page per 2 MiB: RAM for both, or the last tables of a
        // large layout would not fit and the layout would come out short of tables.
        var m = NewMachine(2 * (bytes / 512), design, swapBytes);
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
        return (tables == 0 ? double.NaN : (after - before) / (double)tables, tables);
    }
}
