using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel;
using PtLab.Mm;
using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Cli;

/// <summary>
/// <c>ptlab bench replay</c>: how fast a trace replays on one design, where the time goes, and what
/// a trace costs on disk.
/// </summary>
internal static class BenchReplay
{
    public static Command Command(TextWriter stdout)
    {
        var cmd = new Command(
            "replay",
            "Replay throughput in events per second on one design with page data off, and the trace's bytes per event; on a synthetic " +
            "fault-heavy trace (the cover letter's loop: 512 faults per madvise) or on --trace FILE. The time is split: the reader alone " +
            "(decoding and checking every row), the replay end to end (the reader on its own thread meanwhile), the replay's own thread " +
            "(dispatch and model), and, on the synthetic trace, the model alone (the same faults and calls made straight on a machine). " +
            "A benchmark, not a test.");
        var events = new Option<long>("--events") { Description = "Rows of the synthetic trace.", DefaultValueFactory = _ => 10_000_000 };
        var trace = new Option<string?>("--trace") { Description = "Replay this trace instead of a synthetic one." };
        var save = new Option<string?>("--save-trace") { Description = "Keep the synthetic trace in this file (to profile a replay of it with --trace)." };
        var design = new Option<string>("--design") { Description = "The design to replay under.", DefaultValueFactory = _ => Reclaim.Designs.Baseline };
        var trials = new Option<int>("--trials") { Description = "Measured rounds (the best is reported, with the median), after one warm-up.", DefaultValueFactory = _ => 3 };
        var rows = new Option<bool>("--rows") { Description = "Also time the reader a row at a time (a TraceEvent per row)." };
        design.AcceptOnlyFromAmong([.. Reclaim.Designs.Names]);
        cmd.Options.Add(events);
        cmd.Options.Add(trace);
        cmd.Options.Add(save);
        cmd.Options.Add(design);
        cmd.Options.Add(trials);
        cmd.Options.Add(rows);
        cmd.SetAction(p =>
        {
            var ci = CultureInfo.InvariantCulture;
            long n = p.GetValue(events);
            int runs = p.GetValue(trials);
            if (n is < 1000 or > 2_000_000_000)
            {
                throw new UsageException($"--events must be between 1000 and 2e9, got {n}");
            }

            if (runs is < 1 or > 100)
            {
                throw new UsageException($"--trials must be between 1 and 100, got {runs}");
            }

            string? dir = null;
            string path = p.GetValue(trace) ?? "";
            string? keep = p.GetValue(save);
            if (path.Length > 0 && keep is not null)
            {
                throw new UsageException("--save-trace keeps the synthetic trace: it cannot go with --trace");
            }

            bool synthetic = path.Length == 0;
            try
            {
                if (synthetic)
                {
                    dir = Directory.CreateTempSubdirectory("ptlab-bench-replay-").FullName;
                    path = keep ?? Path.Combine(dir, "synthetic.parquet");
                    SyntheticTrace.Write(path, n);
                }
                else if (!File.Exists(path))
                {
                    throw new UsageException(Directory.Exists(path) ? $"--trace: '{path}' is a directory, not a trace file" : $"--trace: '{path}' does not exist");
                }

                string name = p.GetValue(design)!;
                var factory = Cli.DesignFactory(name);
                long bytes = new FileInfo(path).Length;
                long total;
                TraceMetadata metadata;
                using (var r = Open(path))
                {
                    total = r.Rows;
                    metadata = r.Metadata;
                }

                stdout.WriteLine(string.Create(ci, $"trace: {total:N0} rows, {bytes:N0} bytes, {(double)bytes / total:F2} bytes/event ({(synthetic ? "synthetic cover-letter loop, 512 faults per madvise" : path)})"));
                var options = new ReplayOptions { Design = name, DesignFactory = factory, RamBytes = 64L << 30, Cpus = 1 };
                var ops = synthetic ? ModelOps.From(path) : null;
                // Each figure is events per second of wall time and per second of CPU time (every thread
                // of the process): on a busy host the second is the one to compare.
                var read = new Figures();
                var perRow = new Figures();
                var replay = new Figures();
                var consumer = new List<double>();
                var allocated = new List<double>();
                var modelAllocated = new List<double>();
                var model = new Figures();
                for (int i = 0; i <= runs; i++)
                {
                    if (i == 1)
                    {
                        read.Clear();
                        perRow.Clear();
                        replay.Clear();
                        consumer.Clear();
                        allocated.Clear();
                        modelAllocated.Clear();
                        model.Clear();
                    }

                    if (p.GetValue(rows))
                    {
                        perRow.Time(() =>
                        {
                            long count = 0;
                            using var r = Open(path);
                            foreach (var e in r.ReadEvents())
                            {
                                count++;
                            }

                            return count;
                        });
                    }

                    read.Time(() =>
                    {
                        long count = 0;
                        using var r = Open(path);
                        foreach (var b in r.ReadBatches())
                        {
                            count += b.Count;
                        }

                        return count;
                    });
                    ReplayResult? result = null;
                    long bytesBefore = 0, bytesAfter = 0;
                    replay.Time(() =>
                    {
                        using var r = Open(path);
                        bytesBefore = GC.GetAllocatedBytesForCurrentThread();
                        result = TraceReplayer.Run(r, options);
                        bytesAfter = GC.GetAllocatedBytesForCurrentThread();
                        return result.Events;
                    });
                    consumer.Add(result!.Events / result.WallSeconds);
                    allocated.Add((double)(bytesAfter - bytesBefore) / result.Events);
                    if (ops is not null)
                    {
                        long before = GC.GetAllocatedBytesForCurrentThread();
                        model.Time(() => ops.Run(factory, TraceReplayer.ThpOf(metadata)));
                        modelAllocated.Add((double)(GC.GetAllocatedBytesForCurrentThread() - before) / ops.Rows);
                    }

                    if (i == 0)
                    {
                        stdout.WriteLine(string.Create(ci, $"warm-up: replayed {result.Events:N0} events, {result.Processes.Sum(x => x.Faults):N0} faults, exit VmPTE {string.Join(", ", result.Processes.Select(x => x.Exit?.VmPteKb ?? 0))} kB; divergences {result.Divergences.Values.Sum():N0}"));
                        long recorded = result.Processes.Sum(x => x.Faults);
                        stdout.WriteLine(string.Create(ci, $"  of the {recorded:N0} recorded faults {result.FaultsAlreadyMapped:N0} ({100.0 * result.FaultsAlreadyMapped / Math.Max(1, recorded):F2}%) found their page already mapped by the model (resolved by the walk, no fault)"));
                    }
                }

                stdout.WriteLine("events per second (best, median) of wall time, of the process's CPU time (all threads) and of the measuring thread's:");
                if (perRow.Count > 0)
                {
                    stdout.WriteLine("reader, a TraceEvent per row (decoded, checked):   " + perRow);
                }

                stdout.WriteLine("reader, batches of columns (decoded, checked):     " + read);
                stdout.WriteLine($"replay on {name}, end to end (reader included):      " + replay);
                stdout.WriteLine(string.Create(ci, $"  the replay's thread alone (dispatch and model): wall {consumer.Max(),12:N0} {Median(consumer),12:N0}   thread {replay.Thread}"));
                if (ops is not null)
                {
                    stdout.WriteLine("  the model alone (its faults and calls, no trace): " + model + "   thread " + model.Thread);
                }

                // Per event, medians over the rounds: the reader's CPU (its threads), the replay's thread
                // (dispatch and model) and the model's thread alone. The dispatch is the median of each
                // round's difference between the last two, measured a moment apart on the same host.
                double readerNs = 1e9 / Median(read.CpuRates), threadNs = 1e9 / Median(replay.ThreadRates);
                string split = "";
                if (ops is not null)
                {
                    double dispatchNs = Median([.. replay.ThreadRates.Zip(model.ThreadRates, (r, m) => (1e9 / r) - (1e9 / m))]);
                    split = string.Create(ci, $" = model {1e9 / Median(model.ThreadRates):F0} ns + dispatch {dispatchNs:F0} ns");
                }

                stdout.WriteLine(string.Create(ci, $"per event (CPU, median of the rounds): reader {readerNs:F0} ns on its own thread; the replay's thread {threadNs:F0} ns{split}"));
                stdout.WriteLine(string.Create(ci, $"end to end, cores used (CPU time / wall time, median): {replay.Cores:F2}; allocated on the replay's thread: {Median(allocated):F2} bytes per event{(ops is null ? "" : $" (the model alone {Median(modelAllocated):F2})")}"));

                stdout.WriteLine(string.Create(ci, $"page data off, 1 CPU, {runs} rounds after a warm-up; {Environment.ProcessorCount} CPUs on this host"));
            }
            finally
            {
                if (dir is not null)
                {
                    Directory.Delete(dir, recursive: true);
                }
            }

            return Cli.ExitOk;
        });
        return cmd;
    }

    private static TraceReader Open(string path)
    {
        try
        {
            return TraceReader.Open(path);
        }
        catch (TraceFormatException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary>
    /// Events per second of one measurement, by wall time, by the process's CPU time (every
    /// thread) and by the CPU time of the thread that ran it (<c>CLOCK_THREAD_CPUTIME_ID</c>).
    /// </summary>
    private sealed class Figures
    {
        private readonly List<double> _wall = [];
        private readonly List<double> _cpu = [];
        private readonly List<double> _thread = [];
        private readonly List<double> _cores = [];

        public int Count => _wall.Count;

        public List<double> CpuRates => _cpu;

        public List<double> ThreadRates => _thread;

        /// <summary>The median of the process's CPU time over wall time: how many cores the measurement kept busy.</summary>
        public double Cores => Median(_cores);

        public string Thread => string.Create(CultureInfo.InvariantCulture, $"{_thread.Max(),12:N0} {Median(_thread),12:N0}");

        public void Clear()
        {
            _wall.Clear();
            _cpu.Clear();
            _thread.Clear();
            _cores.Clear();
        }

        /// <summary>Times <paramref name="work"/>, which returns the events it handled.</summary>
        public void Time(Func<long> work)
        {
            var process = Process.GetCurrentProcess();
            var cpu = process.TotalProcessorTime;
            var thread = ThreadCpuClock.Now();
            var clock = Stopwatch.StartNew();
            long events = work();
            double wall = clock.Elapsed.TotalSeconds;
            double threadSeconds = Math.Max(1e-6, (ThreadCpuClock.Now() - thread).TotalSeconds);
            process.Refresh();
            double cpuSeconds = Math.Max(1e-6, (process.TotalProcessorTime - cpu).TotalSeconds);
            _wall.Add(events / wall);
            _cpu.Add(events / cpuSeconds);
            _thread.Add(events / threadSeconds);
            _cores.Add(cpuSeconds / wall);
        }

        public override string ToString() => string.Create(
            CultureInfo.InvariantCulture, $"wall {_wall.Max(),12:N0} {Median(_wall),12:N0}   cpu {_cpu.Max(),12:N0} {Median(_cpu),12:N0}");
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    /// <summary>
    /// The synthetic trace's work for the model, taken out of the trace once: its mmaps (at the
    /// kernel's address), faults and madvise calls in order, replayed straight on a machine to time
    /// the model without the reader and the replayer's dispatch.
    /// </summary>
    private sealed class ModelOps
    {
        private readonly List<Op> _ops = [];
        private long _rows;

        private readonly record struct Op(TraceEventKind Kind, ulong Address, ulong Length, int Arg, int Prot = 0);

        public int Count => _ops.Count;

        public long Rows => _rows;

        public static ModelOps From(string path)
        {
            var m = new ModelOps();
            using var r = TraceReader.Open(path);
            m._rows = r.Rows;
            foreach (var b in r.ReadBatches())
            {
                var kinds = b.Kinds;
                for (int i = 0; i < b.Count; i++)
                {
                    switch (kinds[i])
                    {
                        case TraceEventKind.Fault or TraceEventKind.KernelFault:
                            m._ops.Add(new Op(TraceEventKind.Fault, (ulong)b.Addresses[i], 0, (int)b.Flags[i]));
                            break;
                        case TraceEventKind.Madvise or TraceEventKind.Mmap:
                            var e = b.Event(i);
                            m._ops.Add(new Op(e.Kind, e.Kind == TraceEventKind.Mmap ? (ulong)e.Result : e.Address, e.Length, e.Kind == TraceEventKind.Mmap ? (int)e.Flags : e.Advice, e.Prot));
                            break;
                    }
                }
            }

            return m;
        }

        /// <summary>Runs the operations on a fresh machine; returns the trace rows they stand for.</summary>
        public long Run(Func<IPageTableReclaim> design, ThpSettings thp)
        {
            var machine = new Machine(new MachineOptions { Cpus = 1, RamBytes = 64L << 30, PageData = false, Design = design, Thp = thp });
            var mm = machine.CreateAddressSpace();
            var cpu = machine.Cpus[0];
            cpu.SwitchMm(mm);
            foreach (var op in _ops)
            {
                switch (op.Kind)
                {
                    case TraceEventKind.Fault:
                        if ((op.Arg & 2) != 0)
                        {
                            cpu.Touch(op.Address);
                        }
                        else
                        {
                            cpu.ReadByte(op.Address, out _);
                        }

                        break;
                    case TraceEventKind.Madvise:
                        mm.Madvise(cpu, op.Address, op.Length, (Advice)op.Arg);
                        break;
                    default:
                        mm.Mmap(cpu, op.Address, op.Length, (Prot)(op.Prot & 0xf), ((MapFlags)op.Arg & ~MapFlags.FixedNoReplace) | MapFlags.Fixed);
                        break;
                }
            }

            mm.Exit(cpu);
            return _rows;
        }
    }
}
