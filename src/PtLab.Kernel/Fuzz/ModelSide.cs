using PtLab.Mm;
using PtLab.Paging;
using PtLab.Reclaim;
using PtLab.Workloads;

namespace PtLab.Kernel.Fuzz;

/// <summary>
/// The model side of the fuzzer: a fresh address space on a fresh one-CPU machine whose RAM is the
/// host's MemTotal (the overcommit heuristic compares charges with it), laid out as the executor's:
/// everything from the slot's end up to <c>mmap_base</c> is a PROT_NONE placeholder, so top-down
/// placement starts at the slot's end. The test file <c>mmapf</c> maps is a model file of
/// <see cref="FuzzText.FileSize"/> bytes with every page in the page cache, clean, as the
/// executor's is at the start of a sequence, and the host's read-around window.
/// </summary>
public sealed class ModelSide : IDisposable
{
    private readonly ModelTarget _target;

    /// <summary>Creates the address space.</summary>
    /// <param name="design">The reclaim design (a name from <see cref="Designs.Names"/>).</param>
    /// <param name="memTotalKb">RAM in kB.</param>
    /// <param name="slotStart">The slot's first address (512 GiB aligned).</param>
    /// <param name="readAheadKb">The host's <c>read_ahead_kb</c> where the test file lives.</param>
    /// <param name="brk">Whether the heap starts in the slot, <see cref="FuzzText.BrkOffset"/> into it, as the executor's does when it may move it.</param>
    /// <param name="collapse">The executor's collapse mode: THP is not disabled for the address space, faults map no huge page (no VMA is MADV_HUGEPAGE), and MADV_COLLAPSE collapses.</param>
    /// <param name="zeroPage">Whether the host maps the shared zero page on an anonymous read fault (<see cref="PtLab.Mm.MachineOptions.ZeroPage"/>).</param>
    /// <param name="execOnlyPkey">Whether the host gives execute-only mappings a protection key that denies data access (<see cref="PtLab.Mm.MachineOptions.ExecOnlyPkey"/>).</param>
    public ModelSide(string design, long memTotalKb, ulong slotStart, int readAheadKb = 128, bool brk = true, bool collapse = false, bool zeroPage = true, bool execOnlyPkey = false)
    {
        var factory = Designs.Factory(design) ?? throw new ArgumentException($"unknown design '{design}' (known: {string.Join(", ", Designs.Names)})", nameof(design));
        if (slotStart == 0 || slotStart % FuzzText.SlotSize != 0)
        {
            throw new ArgumentException($"the slot 0x{slotStart:x} is not a non-zero 512 GiB boundary", nameof(slotStart));
        }

        SlotStart = slotStart;
        SlotEnd = slotStart + FuzzText.SlotSize;
        _target = new ModelTarget(new MachineOptions
        {
            RamBytes = memTotalKb * 1024,
            PageData = false,
            Cpus = 1,
            Design = factory,
            ReadAheadKb = readAheadKb,
            Thp = collapse ? ThpSettings.Never : ThpSettings.Default,
            ZeroPage = zeroPage,
            ExecOnlyPkey = execOnlyPkey,
        });
        _target.Mm.ThpDisabled = !collapse; // the executor's prctl(PR_SET_THP_DISABLE), or its EXCEPT_ADVISED form
        _target.CreateFile(FuzzText.FileSize); // handle 0, the file mmapf maps
        if (brk)
        {
            _target.Mm.SetBrkBase(_target.Cpu, slotStart + FuzzText.BrkOffset); // the executor's prctl(PR_SET_MM_START_BRK, PR_SET_MM_BRK)
        }

        ulong mmapBase = _target.Mm.MmapBase;
        if (SlotEnd < mmapBase)
        {
            var r = _target.Mmap(SlotEnd, mmapBase - SlotEnd, Prot.None, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve | MapFlags.FixedNoReplace);
            if (!r.Ok)
            {
                throw new InvalidOperationException($"the model refused the placeholder above the slot: {r.Error}");
            }
        }
    }

    /// <summary>The slot's first address.</summary>
    public ulong SlotStart { get; }

    /// <summary>The first address past the slot.</summary>
    public ulong SlotEnd { get; }

    /// <summary>The address space.</summary>
    public MmStruct Mm => _target.Mm;

    /// <summary>Runs one operation and reports as the executor does.</summary>
    public OpOutcome Run(FuzzOp op, bool layout = true)
    {
        ArgumentNullException.ThrowIfNull(op);
        var result = op.Kind.RunOnModel(_target, op.Args);
        if (op.Kind.ResultLength >= 0 && result.Kind == OpResultKind.Value)
        {
            // As the executor does: a mapping placed outside the slot is unmapped again.
            ulong p = result.Value, len = Geometry.PageAlign(op.Args[op.Kind.ResultLength]);
            if (!(p >= SlotStart && p <= SlotEnd && len <= SlotEnd - p))
            {
                _target.Munmap(p, len);
                result = new OpResult(OpResultKind.OutsideSlot, 0);
            }
        }

        var s = _target.Status();
        long refKb = -1;
        if (ReferencedMeasured(op, result))
        {
            refKb = _target.Mm.AnonReferencedKb(_target.Cpu, op.Args[0], op.Args[0] + Geometry.PageAlign(op.Args[1]));
        }

        return new OpOutcome(result, s.VmPteKb, s.RssAnonKb, layout ? Layout() : null, s.RssFileKb, s.RssShmemKb, refKb);
    }

    /// <summary>
    /// Whether the executor reports the referenced figure after <paramref name="op"/>: a MADV_COLD
    /// or MADV_PAGEOUT whose range does not wrap and that walked all of it (it returned 0 or
    /// ENOMEM; EINVAL stops the walk at a locked VMA, past which pages keep a PG_referenced the
    /// model does not hold).
    /// </summary>
    public static bool ReferencedMeasured(FuzzOp op, OpResult result)
    {
        ArgumentNullException.ThrowIfNull(op);
        return op.Kind.Name == "madvise" && op.Args.Count == 3
            && op.Args[2] is (ulong)Advice.Cold or (ulong)Advice.PageOut
            && op.Args[0] + Geometry.PageAlign(op.Args[1]) >= op.Args[0]
            && (result is { Kind: OpResultKind.Value, Value: 0 } || result is { Kind: OpResultKind.Error, Value: 12 }); // ENOMEM
    }

    /// <summary>
    /// The VMAs that lie in the slot, as <c>/proc/PID/maps</c> would show them, each cut at the
    /// slot's end (a PROT_NONE mapping at the top can merge with the placeholder above).
    /// </summary>
    public IReadOnlyList<VmaLine> Layout()
    {
        var list = new List<VmaLine>();
        foreach (var v in _target.Mm.Vmas)
        {
            if (v.End > SlotStart && v.Start < SlotEnd)
            {
                list.Add(new VmaLine(v.Start, Math.Min(v.End, SlotEnd), v.FlagString()));
            }
        }

        return list;
    }

    /// <summary>Tears the address space down.</summary>
    public void Dispose() => _target.Dispose();
}
