using System.Globalization;
using System.Text;

namespace PtLab.Kernel.Fuzz;

/// <summary>
/// The text forms of operations, results and layouts, shared by the printed reports and the case
/// files (see <see cref="FuzzCase"/>). Addresses inside the slot are written <c>S+0x…</c>, so a case
/// replays in whichever slot the executor finds free.
/// </summary>
public static class FuzzText
{
    /// <summary>The size of the slot: one PGD entry, 512 GiB.</summary>
    public const ulong SlotSize = 1UL << 39;

    /// <summary>Where the heap starts in the slot: <c>start_brk</c> is the slot's start plus this (the executor's <c>BRK_OFFSET</c>).</summary>
    public const ulong BrkOffset = 2UL << 30;

    /// <summary>
    /// The size of the test file <c>mmapf</c> maps on both sides (the executor's <c>FILE_SIZE</c>):
    /// 8 MiB less a part page, so the last page ends inside the file and the next one is SIGBUS.
    /// </summary>
    public const ulong FileSize = (8UL << 20) - 1234;

    private static readonly (ulong Bit, string Name)[] ProtNames =
    [
        (0x1, "PROT_READ"), (0x2, "PROT_WRITE"), (0x4, "PROT_EXEC"), (0x8, "PROT_SEM"),
        (0x0100_0000, "PROT_GROWSDOWN"), (0x0200_0000, "PROT_GROWSUP"),
    ];

    private static readonly (ulong Value, string Name)[] MapTypes =
    [
        (0x1, "MAP_SHARED"), (0x2, "MAP_PRIVATE"), (0x3, "MAP_SHARED_VALIDATE"), (0x8, "MAP_DROPPABLE"),
    ];

    private static readonly (ulong Bit, string Name)[] MapNames =
    [
        (0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x40, "MAP_32BIT"), (0x100, "MAP_GROWSDOWN"),
        (0x800, "MAP_DENYWRITE"), (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"), (0x4000, "MAP_NORESERVE"),
        (0x8000, "MAP_POPULATE"), (0x10000, "MAP_NONBLOCK"), (0x20000, "MAP_STACK"), (0x40000, "MAP_HUGETLB"),
        (0x80000, "MAP_SYNC"), (0x100000, "MAP_FIXED_NOREPLACE"), (0x400_0000, "MAP_UNINITIALIZED"),
    ];

    private static readonly (ulong Value, string Name)[] AdviceNames =
    [
        (0, "MADV_NORMAL"), (1, "MADV_RANDOM"), (2, "MADV_SEQUENTIAL"), (3, "MADV_WILLNEED"), (4, "MADV_DONTNEED"),
        (8, "MADV_FREE"), (9, "MADV_REMOVE"), (10, "MADV_DONTFORK"), (11, "MADV_DOFORK"), (12, "MADV_MERGEABLE"),
        (13, "MADV_UNMERGEABLE"), (14, "MADV_HUGEPAGE"), (15, "MADV_NOHUGEPAGE"), (16, "MADV_DONTDUMP"),
        (17, "MADV_DODUMP"), (18, "MADV_WIPEONFORK"), (19, "MADV_KEEPONFORK"), (20, "MADV_COLD"), (21, "MADV_PAGEOUT"),
        (22, "MADV_POPULATE_READ"), (23, "MADV_POPULATE_WRITE"), (24, "MADV_DONTNEED_LOCKED"), (25, "MADV_COLLAPSE"),
        (102, "MADV_GUARD_INSTALL"), (103, "MADV_GUARD_REMOVE"),
    ];

    /// <summary>An address: <c>S+0x…</c> when it lies in [slot, slot + 512 GiB], else hex (0 as "0").</summary>
    public static string Address(ulong value, ulong slot)
    {
        if (slot != 0 && value >= slot && value - slot <= SlotSize)
        {
            return "S+" + Hex(value - slot);
        }

        return value == 0 ? "0" : Hex(value);
    }

    /// <summary><c>0x</c> and lower-case hex.</summary>
    public static string Hex(ulong value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>Parses an address written by <see cref="Address"/>, or any number.</summary>
    public static ulong ParseAddress(string text, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text == "S")
        {
            return slot;
        }

        if (text.StartsWith("S+", StringComparison.Ordinal))
        {
            return slot + ParseNumber(text[2..]);
        }

        return ParseNumber(text);
    }

    /// <summary>A number: <c>0x</c> hex, decimal, or -N (two's complement).</summary>
    public static ulong ParseNumber(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) &&
            ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong hex))
        {
            return hex;
        }

        if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong dec))
        {
            return dec;
        }

        if (text.StartsWith('-') && long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long neg))
        {
            return unchecked((ulong)neg);
        }

        throw new FormatException($"'{text}' is not a number");
    }

    /// <summary>An argument in its case-file form.</summary>
    public static string FormatArg(FuzzArg kind, ulong value, ulong slot) => kind switch
    {
        FuzzArg.Address => Address(value, slot),
        FuzzArg.Length => Hex(value),
        FuzzArg.Prot => value == 0 ? "PROT_NONE" : Bits(value, ProtNames),
        FuzzArg.MapFlags => MapFlagsText(value),
        FuzzArg.Advice => AdviceNames.FirstOrDefault(a => a.Value == value).Name ?? value.ToString(CultureInfo.InvariantCulture),
        _ => Hex(value),
    };

    /// <summary>Parses an argument written by <see cref="FormatArg"/> (names or numbers).</summary>
    public static ulong ParseArg(FuzzArg kind, string text, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(text);
        switch (kind)
        {
            case FuzzArg.Address:
                return ParseAddress(text, slot);
            case FuzzArg.Prot:
                return text == "PROT_NONE" ? 0 : ParseBits(text, ProtNames);
            case FuzzArg.MapFlags:
                return ParseBits(text, [.. MapTypes, .. MapNames]);
            case FuzzArg.Advice:
                foreach (var (v, n) in AdviceNames)
                {
                    if (n == text)
                    {
                        return v;
                    }
                }

                return ParseNumber(text);
            default:
                return ParseNumber(text);
        }
    }

    /// <summary>An operation in its case-file form.</summary>
    public static string FormatOp(FuzzOp op, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(op);
        var sb = new StringBuilder(op.Kind.Name);
        for (int i = 0; i < op.Args.Count; i++)
        {
            sb.Append(' ').Append(FormatArg(op.Kind.Args[i], op.Args[i], slot));
        }

        return sb.ToString();
    }

    /// <summary>Parses an operation written by <see cref="FormatOp"/>.</summary>
    public static FuzzOp ParseOp(string text, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = text.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0)
        {
            throw new FormatException("an empty operation");
        }

        var kind = FuzzOps.Find(words[0])
            ?? throw new FormatException($"unknown operation '{words[0]}' (known: {string.Join(", ", FuzzOps.All.Select(k => k.Name))})");
        if (words.Length - 1 != kind.Args.Count)
        {
            throw new FormatException($"{kind.Name} takes {kind.Args.Count} arguments ({string.Join(", ", kind.Args)}), got {words.Length - 1}");
        }

        var args = new ulong[kind.Args.Count];
        for (int i = 0; i < args.Length; i++)
        {
            args[i] = ParseArg(kind.Args[i], words[i + 1], slot);
        }

        return new FuzzOp(kind, args);
    }

    /// <summary>A result: a value, an errno name, or SIGNAL:CODE@ADDRESS.</summary>
    public static string FormatResult(OpResult r, ulong slot) => r.Kind switch
    {
        OpResultKind.Value => Address(r.Value, slot),
        OpResultKind.Error => LinuxErrno.Describe((int)r.Value).Name,
        OpResultKind.Signal => $"{SignalName(r.Signal)}:{CodeName(r.Signal, r.Code)}@{Address(r.Value, slot)}",
        OpResultKind.OutsideSlot => OutsideSlotText,
        _ => "OOM@" + Address(r.Value, slot),
    };

    /// <summary>How a case file writes <see cref="OpResultKind.OutsideSlot"/>.</summary>
    public const string OutsideSlotText = "outside-slot";

    /// <summary>Parses a result written by <see cref="FormatResult"/>.</summary>
    public static OpResult ParseResult(string text, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text == OutsideSlotText)
        {
            return new OpResult(OpResultKind.OutsideSlot, 0);
        }

        int at = text.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            ulong addr = ParseAddress(text[(at + 1)..], slot);
            string what = text[..at];
            if (what == "OOM")
            {
                return new OpResult(OpResultKind.Oom, addr);
            }

            int colon = what.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                throw new FormatException($"'{text}' is not SIGNAL:CODE@ADDRESS");
            }

            return new OpResult(OpResultKind.Signal, addr, ParseSignal(what[..colon]), ParseCode(what[(colon + 1)..]));
        }

        if (text.StartsWith('E'))
        {
            return new OpResult(OpResultKind.Error, (ulong)ParseErrno(text));
        }

        return OpResult.Returned(ParseAddress(text, slot));
    }

    /// <summary>A VMA: <c>START-END:PERMS</c>.</summary>
    public static string FormatVma(VmaLine v, ulong slot) => $"{Address(v.Start, slot)}-{Address(v.End, slot)}:{v.Perms}";

    /// <summary>
    /// An outcome: <c>RESULT pte=KB anon=KB</c>, then <c>file=KB shmem=KB</c> when either is not 0,
    /// <c>ref=KB</c> when measured (after madvise), then <c>| VMA VMA …</c> when it has a layout.
    /// </summary>
    public static string FormatOutcome(OpOutcome o, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(o);
        var sb = new StringBuilder(FormatResult(o.Result, slot));
        sb.Append(CultureInfo.InvariantCulture, $" pte={o.PteKb} anon={o.AnonKb}");
        if (o.FileKb != 0 || o.ShmemKb != 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $" file={o.FileKb} shmem={o.ShmemKb}");
        }

        if (o.RefKb >= 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $" ref={o.RefKb}");
        }

        if (o.Layout is not null)
        {
            sb.Append(" |");
            foreach (var v in o.Layout)
            {
                sb.Append(' ').Append(FormatVma(v, slot));
            }
        }

        return sb.ToString();
    }

    /// <summary>Parses an outcome written by <see cref="FormatOutcome"/>.</summary>
    public static OpOutcome ParseOutcome(string text, ulong slot)
    {
        ArgumentNullException.ThrowIfNull(text);
        int bar = text.IndexOf('|', StringComparison.Ordinal);
        string head = bar < 0 ? text : text[..bar];
        var words = head.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        long refKb = -1;
        if (words.Length is 4 or 6 && words[^1].StartsWith("ref=", StringComparison.Ordinal))
        {
            refKb = ParseKb(words[^1][4..], "ref");
            words = words[..^1];
        }

        if (words.Length is not (3 or 5) || !words[1].StartsWith("pte=", StringComparison.Ordinal) || !words[2].StartsWith("anon=", StringComparison.Ordinal)
            || (words.Length == 5 && (!words[3].StartsWith("file=", StringComparison.Ordinal) || !words[4].StartsWith("shmem=", StringComparison.Ordinal))))
        {
            throw new FormatException($"'{head.Trim()}' is not 'RESULT pte=KB anon=KB [file=KB shmem=KB] [ref=KB]'");
        }

        var result = ParseResult(words[0], slot);
        long pte = ParseKb(words[1][4..], "pte");
        long anon = ParseKb(words[2][5..], "anon");
        long file = words.Length == 5 ? ParseKb(words[3][5..], "file") : 0;
        long shmem = words.Length == 5 ? ParseKb(words[4][6..], "shmem") : 0;
        List<VmaLine>? layout = null;
        if (bar >= 0)
        {
            layout = [];
            foreach (var w in text[(bar + 1)..].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
            {
                layout.Add(ParseVma(w, slot));
            }
        }

        return new OpOutcome(result, pte, anon, layout, file, shmem, refKb);
    }

    private static VmaLine ParseVma(string text, ulong slot)
    {
        int colon = text.LastIndexOf(':');
        int dash = text.IndexOf('-', StringComparison.Ordinal);
        if (colon < 0 || dash < 0 || dash > colon || text.Length - colon - 1 != 4)
        {
            throw new FormatException($"'{text}' is not START-END:PERMS");
        }

        return new VmaLine(ParseAddress(text[..dash], slot), ParseAddress(text[(dash + 1)..colon], slot), text[(colon + 1)..]);
    }

    private static long ParseKb(string text, string what) =>
        long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v)
            ? v
            : throw new FormatException($"{what}={text} is not a number of kB");

    private static string SignalName(int sig) => sig switch
    {
        OpResult.SigSegv => "SIGSEGV",
        OpResult.SigBus => "SIGBUS",
        _ => "SIG" + sig.ToString(CultureInfo.InvariantCulture),
    };

    private static int ParseSignal(string text) => text switch
    {
        "SIGSEGV" => OpResult.SigSegv,
        "SIGBUS" => OpResult.SigBus,
        _ when text.StartsWith("SIG", StringComparison.Ordinal) && int.TryParse(text.AsSpan(3), CultureInfo.InvariantCulture, out int n) => n,
        _ => throw new FormatException($"'{text}' is not a signal"),
    };

    private static string CodeName(int sig, int code) => (sig, code) switch
    {
        (OpResult.SigSegv, 1) => "SEGV_MAPERR",
        (OpResult.SigSegv, 2) => "SEGV_ACCERR",
        (OpResult.SigSegv, 4) => "SEGV_PKUERR",
        _ => code.ToString(CultureInfo.InvariantCulture),
    };

    private static int ParseCode(string text) => text switch
    {
        "SEGV_MAPERR" => 1,
        "SEGV_ACCERR" => 2,
        "SEGV_PKUERR" => 4,
        _ => int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int n) ? n : throw new FormatException($"'{text}' is not an si_code"),
    };

    private static int ParseErrno(string text)
    {
        if (text.StartsWith("E?", StringComparison.Ordinal) && int.TryParse(text.AsSpan(2), CultureInfo.InvariantCulture, out int raw))
        {
            return raw;
        }

        for (int i = 1; i < 134; i++)
        {
            if (LinuxErrno.Describe(i).Name == text)
            {
                return i;
            }
        }

        throw new FormatException($"'{text}' is not an errno name");
    }

    private static string Bits(ulong value, (ulong Bit, string Name)[] names)
    {
        var parts = new List<string>();
        foreach (var (bit, name) in names)
        {
            if ((value & bit) != 0)
            {
                parts.Add(name);
                value &= ~bit;
            }
        }

        if (value != 0)
        {
            parts.Add(Hex(value));
        }

        return string.Join('|', parts);
    }

    private static string MapFlagsText(ulong value)
    {
        var parts = new List<string>();
        ulong type = value & 0xf;
        if (type != 0)
        {
            var known = MapTypes.FirstOrDefault(t => t.Value == type);
            parts.Add(known.Name ?? Hex(type));
        }

        ulong rest = value & ~0xfUL;
        if (rest != 0)
        {
            parts.Add(Bits(rest, MapNames));
        }

        return parts.Count == 0 ? "0" : string.Join('|', parts);
    }

    private static ulong ParseBits(string text, (ulong Bit, string Name)[] names)
    {
        ulong v = 0;
        foreach (var part in text.Split('|'))
        {
            var known = names.FirstOrDefault(n => n.Name == part);
            v |= known.Name is not null ? known.Bit : ParseNumber(part);
        }

        return v;
    }
}
