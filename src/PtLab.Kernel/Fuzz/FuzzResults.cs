using PtLab.Mm;

namespace PtLab.Kernel.Fuzz;

/// <summary>What kind of answer an operation got.</summary>
public enum OpResultKind
{
    /// <summary>The call returned a value (a touch that completed returns 0).</summary>
    Value,
    /// <summary>The call failed with an errno.</summary>
    Error,
    /// <summary>The touch took a signal.</summary>
    Signal,
    /// <summary>The model's fault ran out of memory (the kernel would have invoked the OOM killer).</summary>
    Oom,
    /// <summary>
    /// A call that returns a mapping (mmap, mremap) placed it outside the slot, because no hole in
    /// the slot was large enough; the side unmapped it again. Where it landed is not compared: below
    /// the slot the executor's address space holds its own program and the model's holds nothing.
    /// </summary>
    OutsideSlot,
}

/// <summary>The answer to one operation: a value, an errno, or a signal with its <c>si_code</c> and address.</summary>
/// <param name="Kind">Which of the three.</param>
/// <param name="Value">The return value, the errno, or the faulting address.</param>
/// <param name="Signal">The signal number (11 SIGSEGV, 7 SIGBUS) for <see cref="OpResultKind.Signal"/>.</param>
/// <param name="Code">The <c>si_code</c> (1 SEGV_MAPERR, 2 SEGV_ACCERR) for <see cref="OpResultKind.Signal"/>.</param>
public readonly record struct OpResult(OpResultKind Kind, ulong Value, int Signal = 0, int Code = 0)
{
    /// <summary><c>SIGSEGV</c>.</summary>
    public const int SigSegv = 11;

    /// <summary><c>SIGBUS</c>.</summary>
    public const int SigBus = 7;

    /// <summary>A returned value.</summary>
    public static OpResult Returned(ulong value) => new(OpResultKind.Value, value);

    /// <summary>A failure with <paramref name="errno"/>, or 0 returned when it is <see cref="Errno.None"/>.</summary>
    public static OpResult FromErrno(Errno errno) => errno == Errno.None ? Returned(0) : new(OpResultKind.Error, (ulong)(int)errno);

    /// <summary>The result of <c>mmap</c>.</summary>
    public static OpResult FromMmap(MmapResult r) => r.Ok ? Returned(r.Address) : FromErrno(r.Error);

    /// <summary>The result of a touch on the model.</summary>
    public static OpResult FromAccess(AccessResult r) => r.Outcome switch
    {
        FaultOutcome.Ok => Returned(0),
        FaultOutcome.SegvMapErr => new(OpResultKind.Signal, r.Address, SigSegv, 1),
        FaultOutcome.SegvAccErr => new(OpResultKind.Signal, r.Address, SigSegv, 2),
        FaultOutcome.SegvPkuErr => new(OpResultKind.Signal, r.Address, SigSegv, 4),
        FaultOutcome.Bus => new(OpResultKind.Signal, r.Address, SigBus, 2),
        _ => new(OpResultKind.Oom, r.Address),
    };
}

/// <summary>One VMA as <c>/proc/PID/maps</c> shows it: its range and its permissions column.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">First address past it.</param>
/// <param name="Perms">The four-letter column, for example <c>rw-p</c>.</param>
public readonly record struct VmaLine(ulong Start, ulong End, string Perms);

/// <summary>What one side reported after an operation.</summary>
/// <param name="Result">The operation's answer.</param>
/// <param name="PteKb">VmPTE over the side's baseline, in kB.</param>
/// <param name="AnonKb">RssAnon over the side's baseline, in kB.</param>
/// <param name="Layout">The VMAs in the slot, or null when not asked for.</param>
/// <param name="FileKb">RssFile over the side's baseline, in kB.</param>
/// <param name="ShmemKb">RssShmem over the side's baseline, in kB.</param>
/// <param name="RefKb">
/// After madvise, the smaps Referenced figure of the slot's private anonymous VMAs in kB (the
/// pages whose entries are young); -1 when not measured (other operations, older case files).
/// </param>
public sealed record OpOutcome(OpResult Result, long PteKb, long AnonKb, IReadOnlyList<VmaLine>? Layout, long FileKb = 0, long ShmemKb = 0, long RefKb = -1)
{
    /// <summary>What differs between this (the kernel) and <paramref name="model"/>: "result", "VmPTE", "RssAnon", "RssFile", "RssShmem", "Referenced", "layout".</summary>
    public IReadOnlyList<string> DifferencesFrom(OpOutcome model, bool compareAnon = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        var d = new List<string>();
        if (Result != model.Result)
        {
            d.Add("result");
        }

        if (PteKb != model.PteKb)
        {
            d.Add("VmPTE");
        }

        if (compareAnon && AnonKb != model.AnonKb)
        {
            d.Add("RssAnon");
        }

        if (FileKb != model.FileKb)
        {
            d.Add("RssFile");
        }

        if (ShmemKb != model.ShmemKb)
        {
            d.Add("RssShmem");
        }

        if (RefKb >= 0 && model.RefKb >= 0 && RefKb != model.RefKb)
        {
            d.Add("Referenced");
        }

        if (Layout is not null && model.Layout is not null && !Layout.SequenceEqual(model.Layout))
        {
            d.Add("layout");
        }

        return d;
    }
}
