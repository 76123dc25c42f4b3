using PtLab.Mm;
using PtLab.Workloads;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// Runs one script of memory calls on the model and on the host kernel, each in an empty 512 GiB
/// slot of its address space (one PGD entry: the slot's tables of every level are its own), and
/// compares what each checkpoint saw: the calls' results (addresses written relative to the
/// slot), the VMAs in the slot with their flags, and the VmPTE, VmLck and anonymous memory changes.
/// </summary>
/// <remarks>
/// The model gets the host's THP mode and the reclaim design that matches the host kernel. On the
/// kernel side the runtime shares the address space, and other tests run beside these in the same
/// process: its RssAnon moves with their allocations and the garbage collector's, by hundreds of kB
/// on a loaded host. So the anonymous memory compared is the slot's own, summed from the
/// <c>Anonymous:</c> lines of the slot's VMAs in smaps on both sides (<see cref="IMemoryTarget.AnonKbIn"/>),
/// and compared exactly. VmPTE is still the process's figure: a run where the runtime added a table
/// meanwhile is repeated (up to three times after a warm-up). In a child process (the probe, a
/// small C program that does nothing else) RssAnon is the slot's alone and is used as it is.
/// </remarks>
internal static class MappingDifferential
{
    public const ulong Slot = 1UL << 39;

    /// <summary>The host's THP mode, for the model (the defaults when it cannot be read).</summary>
    public static ThpSettings HostThp { get; } = KernelInfo.Probe().Thp ?? ThpSettings.Default;

    /// <summary>Whether the host maps the shared zero page on anonymous read faults (measured), for the model.</summary>
    public static bool HostZeroPage { get; } = KernelInfo.Probe().ModelZeroPage;

    /// <summary>Runs <paramref name="script"/> on both sides and asserts they agree at every checkpoint.</summary>
    public static void AssertSame(Action<Run> script, ITestOutputHelper log)
    {
        var factory = PtLab.Reclaim.Designs.Factory(KernelInfo.Probe().MatchingDesign)!;
        Run model;
        using (var m = new ModelTarget(new MachineOptions { PageData = false, Design = factory, Thp = HostThp, ZeroPage = HostZeroPage }))
        {
            model = new Run(m, FreeSlot(), slotAnon: true);
            script(model);
        }

        log.WriteLine($"model ({HostThp}):\n{model}");
        Run kernel = RunOnKernel(script); // warm-up
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            kernel = RunOnKernel(script);
            log.WriteLine($"kernel, attempt {attempt}:\n{kernel}");
            if (model.Checkpoints.Zip(kernel.Checkpoints).All(p => p.First.PteKb == p.Second.PteKb))
            {
                break;
            }
        }

        Compare(model, kernel);
    }

    /// <summary>
    /// Runs <paramref name="script"/> on the model and in a child process on the host kernel (for
    /// brk, mlockall and stack growth), both at the child's slot, or with <paramref name="heap"/>
    /// at the child's break: then the model first gets the child's own VMAs around it, read-touched
    /// as the child has them, so that both sides start with the same tables there.
    /// </summary>
    public static void AssertSameInChild(Action<Run> script, ITestOutputHelper log, bool heap = false, bool lockedFromSlot = false)
    {
        using var probe = ProbeTarget.Start();
        probe.LockedFromSlot = lockedFromSlot;
        ulong at = heap ? probe.Brk(0) : probe.Slot;
        var factory = PtLab.Reclaim.Designs.Factory(KernelInfo.Probe().MatchingDesign)!;
        Run model;
        using (var m = new ModelTarget(new MachineOptions { PageData = false, Design = factory, Thp = HostThp, ZeroPage = HostZeroPage }))
        {
            m.Mm.RlimitStack = StackLimit();
            if (heap)
            {
                foreach (var v in probe.Layout(at & ~(Slot - 1), (at & ~(Slot - 1)) + Slot))
                {
                    var prot = ((v.Flags & VmFlags.Read) != 0 ? Prot.Read : 0) | ((v.Flags & VmFlags.Write) != 0 ? Prot.Write : 0);
                    Assert.True(m.Mmap(v.Start, v.End - v.Start, prot, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed | MapFlags.NoReserve).Ok);
                    if (prot != Prot.None)
                    {
                        Assert.True(m.TouchPages(v.Start, v.End - v.Start, write: false).Ok);
                    }
                }

                m.Mm.SetBrkBase(m.Cpu, at);
            }

            model = new Run(m, at);
            script(model);
        }

        log.WriteLine($"model ({HostThp}):\n{model}");
        var kernel = new Run(probe, at);
        script(kernel);
        log.WriteLine($"kernel (child):\n{kernel}");
        Compare(model, kernel);
    }

    /// <summary>This process's RLIMIT_STACK (a child inherits it), from /proc/self/limits.</summary>
    private static ulong StackLimit()
    {
        foreach (var line in File.ReadAllLines("/proc/self/limits"))
        {
            if (line.StartsWith("Max stack size", StringComparison.Ordinal))
            {
                string soft = line["Max stack size".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)[0];
                return soft == "unlimited" ? ulong.MaxValue : ulong.Parse(soft, System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return 8UL << 20;
    }

    private static void Compare(Run model, Run kernel)
    {
        Assert.Equal(model.Checkpoints.Count, kernel.Checkpoints.Count);
        foreach (var (m, k) in model.Checkpoints.Zip(kernel.Checkpoints))
        {
            Assert.True(m.Results.SequenceEqual(k.Results), $"{m.Label}: results differ\nmodel:  {string.Join(", ", m.Results)}\nkernel: {string.Join(", ", k.Results)}");
            Assert.True(m.Layout.SequenceEqual(k.Layout), $"{m.Label}: VMAs differ\nmodel:  {string.Join("; ", m.Layout)}\nkernel: {string.Join("; ", k.Layout)}");
            Assert.True(m.PteKb == k.PteKb, $"{m.Label}: VmPTE change model {m.PteKb} kB, kernel {k.PteKb} kB");
            Assert.True(m.LckKb == k.LckKb, $"{m.Label}: VmLck change model {m.LckKb} kB, kernel {k.LckKb} kB");
            Assert.True(m.AnonKb == k.AnonKb, $"{m.Label}: anonymous memory change model {m.AnonKb} kB, kernel {k.AnonKb} kB");
        }
    }

    private static Run RunOnKernel(Action<Run> script)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var kernel = new KernelTarget();
        var run = new Run(kernel, FreeSlot(), slotAnon: true);
        script(run);
        return run;
    }

    private static ulong FreeSlot()
    {
        ulong slot = KernelTarget.FindFreeRegion(Slot, Slot);
        Assert.True(slot != 0, "no empty 512 GiB slot in this process's address space");
        return slot;
    }

    /// <summary>
    /// What a script sees of one target: the slot's base, and checkpoints. With
    /// <paramref name="slotAnon"/> the anonymous memory is the slot's own (smaps), else RssAnon.
    /// </summary>
    public sealed class Run(IMemoryTarget target, ulong slot, bool slotAnon = false)
    {
        private readonly List<(string Call, object? Result)> _results = new(64);
        private readonly long _slotAnonAtStart = slotAnon ? target.AnonKbIn(slot, slot + Slot) : 0;
        private MmStatus _last = target.Status();
        private long _pte, _lck, _anon;

        public IMemoryTarget Target { get; } = target;

        public ulong Base { get; } = slot;

        public List<Checkpoint> Checkpoints { get; } = [];

        /// <summary>An address <paramref name="offset"/> bytes into the slot.</summary>
        public ulong At(ulong offset) => Base + offset;

        /// <summary>Records a call's result; addresses in the slot are written relative to it.</summary>
        public T Note<T>(string call, T result)
        {
            _results.Add((call, result)); // formatted later: allocating here would grow the kernel side's RssAnon
            return result;
        }

        public MmapResult Mmap(ulong offset, ulong length, Prot prot, MapFlags flags = MapFlags.None) =>
            Note("mmap", Target.Mmap(At(offset), length, prot, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace | flags));

        public void Touch(ulong offset, ulong length, bool write) => Note(write ? "write" : "read", Target.TouchPages(At(offset), length, write));

        /// <summary>
        /// Records the pagemap entries of <paramref name="pages"/> pages from the offset, with the
        /// frame numbers left out: "p" present, "-" none, else the entry (swap or marker) in hex.
        /// </summary>
        public void Pagemap(ulong offset, int pages) =>
            Note("pagemap", string.Join(' ', Target.Pagemap(At(offset), pages).Select(static e =>
                (e & (1UL << 63)) != 0 ? "p" : e == 0 ? "-" : $"{e:x}")));

        /// <summary>
        /// Takes a checkpoint of the results so far, the slot's VMAs and the status changes. The
        /// changes are summed over the script's own steps only: reading the VMA listing (all of
        /// /proc/self/smaps, on the kernel side) makes the runtime allocate, so the status is read
        /// again after it and the next step counts from there.
        /// </summary>
        public void Check(string label)
        {
            var now = Target.Status();
            _pte += now.VmPteKb - _last.VmPteKb;
            _lck += now.VmLckKb - _last.VmLckKb;
            _anon = slotAnon ? Target.AnonKbIn(Base, Base + Slot) - _slotAnonAtStart : _anon + now.RssAnonKb - _last.RssAnonKb;
            var layout = Target.Layout(Base, Base + Slot).Select(v => $"+{v.Start - Base:x}-{v.End - Base:x} {(v with { Flags = v.Flags & VmaView.Modelled }).FlagNames()}").ToList();
            Checkpoints.Add(new Checkpoint(label, [.. _results.Select(r => $"{r.Call} -> {Relative(r.Result)}")], layout, _pte, _lck, _anon));
            _results.Clear();
            // Collect the listing's garbage now, so that no collection falls into the next steps.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            _last = Target.Status();
        }

        private string Relative(object? value) => value switch
        {
            MmapResult { Ok: true } r when r.Address >= Base && r.Address < Base + Slot => $"+{r.Address - Base:x}",
            MmapResult r => r.Ok ? $"0x{r.Address:x}" : r.Error.ToString(),
            AccessResult a => a.Ok ? "ok" : a.Outcome.ToString(),
            _ => $"{value}",
        };

        public override string ToString() => string.Join("\n", Checkpoints.Select(c =>
            $"  {c.Label}: pte {c.PteKb:+#;-#;0} kB, lck {c.LckKb:+#;-#;0} kB, anon {c.AnonKb:+#;-#;0} kB; {string.Join(", ", c.Results)}; VMAs {string.Join("; ", c.Layout)}"));
    }

    public sealed record Checkpoint(string Label, List<string> Results, List<string> Layout, long PteKb, long LckKb, long AnonKb);
}
