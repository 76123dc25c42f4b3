using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Kernel.Fuzz;

/// <summary>How an argument of an operation is written in a case file (its wire form is always a number).</summary>
public enum FuzzArg
{
    /// <summary>An address: <c>S+0x…</c> inside the slot, else a plain number.</summary>
    Address,
    /// <summary>A length in bytes, hex.</summary>
    Length,
    /// <summary><c>PROT_*</c> names joined by <c>|</c>.</summary>
    Prot,
    /// <summary><c>MAP_*</c> names joined by <c>|</c>.</summary>
    MapFlags,
    /// <summary>A <c>MADV_*</c> name.</summary>
    Advice,
    /// <summary>Other flags (mremap's, mlock2's), hex.</summary>
    Flags,
}

/// <summary>
/// One kind of operation the fuzzer runs on both sides: its name (in case files and in the
/// executor's protocol), its arguments, how the model runs it, and how the generator draws one.
/// Adding an operation is one entry in <see cref="FuzzOps.All"/> and one line in the executor's
/// <c>calls</c> table.
/// </summary>
public sealed class FuzzOpKind
{
    /// <summary>The name, the same in case files and on the executor's stdin.</summary>
    public required string Name { get; init; }

    /// <summary>The arguments, in order.</summary>
    public required IReadOnlyList<FuzzArg> Args { get; init; }

    /// <summary>Constant arguments appended on the wire only (mmap's fd -1 and offset 0).</summary>
    public string WireSuffix { get; init; } = "";

    /// <summary>
    /// The argument holding the length of the mapping the call returns (mmap's, mremap's new
    /// length), or -1 when the call returns no mapping: a mapping placed outside the slot is
    /// unmapped again on both sides.
    /// </summary>
    public int ResultLength { get; init; } = -1;

    /// <summary>Runs the operation on the model.</summary>
    public required Func<ModelTarget, IReadOnlyList<ulong>, OpResult> RunOnModel { get; init; }

    /// <summary>Draws arguments for a random operation of this kind.</summary>
    public required Func<OpGenerator, ulong[]> Generate { get; init; }

    /// <summary>How often the generator picks this kind, relative to the others.</summary>
    public required int Weight { get; init; }

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>One operation: a kind and its arguments.</summary>
/// <param name="Kind">What it is.</param>
/// <param name="Args">Its arguments, as the kernel receives them.</param>
public sealed record FuzzOp(FuzzOpKind Kind, IReadOnlyList<ulong> Args)
{
    /// <summary>The request line for the executor.</summary>
    public string WireLine()
    {
        var parts = new List<string>(Args.Count + 3) { Kind.Name };
        parts.AddRange(Args.Select(a => "0x" + a.ToString("x", System.Globalization.CultureInfo.InvariantCulture)));
        if (Kind.WireSuffix.Length > 0)
        {
            parts.Add(Kind.WireSuffix);
        }

        return string.Join(' ', parts);
    }

    /// <summary>The case-file form, addresses written relative to <paramref name="slot"/>.</summary>
    public string Format(ulong slot) => FuzzText.FormatOp(this, slot);

    /// <summary>
    /// The same operation for a slot at <paramref name="to"/> instead of <paramref name="from"/>:
    /// addresses in the old slot move with it, and a length that made its range wrap past 2^64 is
    /// changed so that the range still ends at the same (wrapped) address.
    /// </summary>
    public FuzzOp Rebase(ulong from, ulong to)
    {
        if (from == to)
        {
            return this;
        }

        var args = Args.ToArray();
        for (int i = 0; i < args.Length; i++)
        {
            if (Kind.Args[i] != FuzzArg.Address || args[i] < from || args[i] - from > FuzzText.SlotSize)
            {
                continue;
            }

            ulong old = args[i];
            args[i] = old - from + to;
            if (i + 1 < args.Length && Kind.Args[i + 1] == FuzzArg.Length && old + args[i + 1] < old)
            {
                args[i + 1] = args[i + 1] + from - to;
            }
        }

        return this with { Args = args };
    }

    /// <summary>Whether two operations are the same kind with the same arguments.</summary>
    public bool SameAs(FuzzOp other) => other is not null && Kind == other.Kind && Args.SequenceEqual(other.Args);
}

/// <summary>The operations the kernel fuzzer knows.</summary>
public static class FuzzOps
{
    /// <summary>Every operation kind, in the order the generator's weights are listed.</summary>
    public static IReadOnlyList<FuzzOpKind> All { get; } =
    [
        new()
        {
            Name = "mmap",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Prot, FuzzArg.MapFlags],
            WireSuffix = "-1 0",
            ResultLength = 1,
            RunOnModel = static (m, a) => OpResult.FromMmap(m.Mmap(a[0], a[1], (Prot)(int)a[2], (MapFlags)(int)a[3])),
            Generate = static g => g.Mmap(),
            Weight = 24,
        },
        new()
        {
            // mmap of the test file (the executor supplies its descriptor); the last argument is the offset.
            Name = "mmapf",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Prot, FuzzArg.MapFlags, FuzzArg.Length],
            ResultLength = 1,
            RunOnModel = static (m, a) => OpResult.FromMmap(m.MmapFile(a[0], a[1], (Prot)(int)a[2], (MapFlags)(int)a[3], 0, a[4])),
            Generate = static g => g.MmapFile(),
            Weight = 10,
        },
        new()
        {
            Name = "munmap",
            Args = [FuzzArg.Address, FuzzArg.Length],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Munmap(a[0], a[1])),
            Generate = static g => g.Range(),
            Weight = 8,
        },
        new()
        {
            Name = "mprotect",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Prot],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Mprotect(a[0], a[1], (Prot)(int)a[2])),
            Generate = static g => [.. g.Range(), g.Prot()],
            Weight = 16,
        },
        new()
        {
            Name = "madvise",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Advice],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Madvise(a[0], a[1], (Advice)(int)a[2])),
            Generate = static g => g.Madvise(),
            Weight = 24,
        },
        new()
        {
            Name = "mremap",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Length, FuzzArg.Flags, FuzzArg.Address],
            ResultLength = 2,
            RunOnModel = static (m, a) => OpResult.FromMmap(m.Mremap(a[0], a[1], a[2], (MremapFlags)(int)a[3], a[4])),
            Generate = static g => g.Mremap(),
            Weight = 8,
        },
        new()
        {
            Name = "mlock",
            Args = [FuzzArg.Address, FuzzArg.Length],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Mlock(a[0], a[1])),
            Generate = static g => g.Lock(),
            Weight = 3,
        },
        new()
        {
            Name = "mlock2",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Flags],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Mlock2(a[0], a[1], (MlockFlags)(int)a[2])),
            Generate = static g => [.. g.Lock(), g.LockFlags()],
            Weight = 2,
        },
        new()
        {
            Name = "munlock",
            Args = [FuzzArg.Address, FuzzArg.Length],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Munlock(a[0], a[1])),
            Generate = static g => g.Range(),
            Weight = 3,
        },
        new()
        {
            Name = "mlockall",
            Args = [FuzzArg.Flags],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Mlockall((MlockallFlags)(int)a[0])),
            Generate = static g => g.MlockallFlags(),
            Weight = 1,
        },
        new()
        {
            Name = "munlockall",
            Args = [],
            RunOnModel = static (m, _) => OpResult.FromErrno(m.Munlockall()),
            Generate = static _ => [],
            Weight = 1,
        },
        new()
        {
            // A sequence that sealed leaves the executor a slot it cannot empty: the next starts a new one.
            Name = "mseal",
            Args = [FuzzArg.Address, FuzzArg.Length, FuzzArg.Flags],
            RunOnModel = static (m, a) => OpResult.FromErrno(m.Mseal(a[0], a[1], a[2])),
            Generate = static g => g.Mseal(),
            Weight = 1,
        },
        new()
        {
            // The heap starts in the slot (FuzzText.BrkOffset); brk returns the break, moved or not.
            Name = "brk",
            Args = [FuzzArg.Address],
            RunOnModel = static (m, a) => OpResult.Returned(m.Brk(a[0])),
            Generate = static g => [g.BrkAddress()],
            Weight = 5,
        },
        new()
        {
            Name = "read",
            Args = [FuzzArg.Address, FuzzArg.Length],
            RunOnModel = static (m, a) => OpResult.FromAccess(m.TouchPages(a[0], a[1], write: false)),
            Generate = static g => g.Touch(),
            Weight = 10,
        },
        new()
        {
            Name = "write",
            Args = [FuzzArg.Address, FuzzArg.Length],
            RunOnModel = static (m, a) => OpResult.FromAccess(m.TouchPages(a[0], a[1], write: true)),
            Generate = static g => g.Touch(),
            Weight = 18,
        },
    ];

    /// <summary>The kind called <paramref name="name"/>, or null.</summary>
    public static FuzzOpKind? Find(string name) => All.FirstOrDefault(k => k.Name == name);
}
