using System.Globalization;
using System.Text;

namespace PtLab.Kernel.Fuzz;

/// <summary>One line of a case: an operation and, when recorded, the kernel's answer to it.</summary>
/// <param name="Op">The operation.</param>
/// <param name="Expected">The kernel's outcome (result, VmPTE, RssAnon, layout), or null.</param>
public sealed record FuzzCaseStep(FuzzOp Op, OpOutcome? Expected);

/// <summary>
/// A replayable fuzz case: a text file with one operation per line, as <c>ptlab fuzz kernel</c>
/// writes it for a difference it found.
/// </summary>
/// <remarks>
/// <para>The format, line by line:</para>
/// <list type="bullet">
/// <item><c># …</c>: a comment; blank lines are ignored.</item>
/// <item><c>slot 0x…</c>: the 512 GiB slot the addresses were recorded in (<c>S</c> below). A
/// replay in another slot moves them.</item>
/// <item><c>design NAME</c>: the model design the kernel was compared with.</item>
/// <item><c>memtotal KB</c>: the recording host's MemTotal (the model's RAM, for overcommit).</item>
/// <item><c>readahead KB</c>: the recording host's <c>read_ahead_kb</c> where the test file of
/// <c>mmapf</c> lived (the model file's read-around window; 128 when absent).</item>
/// <item><c>zeropage 0</c>: the recording host took a private page on an anonymous read fault
/// rather than mapping the shared zero page (absent: it mapped the zero page).</item>
/// <item><c>thp collapse</c>: the case ran in the collapse mode (MADV_COLLAPSE collapses); absent
/// when THP was off.</item>
/// <item><c>OP ARG…</c> optionally followed by <c>=&gt; RESULT pte=KB anon=KB | VMA…</c>: one
/// operation and the kernel's answer. OP is one of <see cref="FuzzOps.All"/> (mmap ADDR LEN PROT FLAGS,
/// mmapf ADDR LEN PROT FLAGS OFFSET (the test file), munmap ADDR LEN, mprotect ADDR LEN PROT,
/// madvise ADDR LEN ADVICE, read ADDR LEN, write ADDR LEN).
/// Addresses are <c>S+0x…</c> or numbers; PROT, FLAGS and ADVICE are the Linux names joined by
/// <c>|</c> (or numbers). RESULT is a value (<c>0</c>, <c>S+0x…</c>), an errno name (<c>ENOMEM</c>)
/// or <c>SIGSEGV:SEGV_MAPERR@S+0x…</c>; pte and anon are VmPTE and RssAnon over the baseline; each
/// VMA in the slot after the operation is <c>START-END:PERMS</c>.</item>
/// </list>
/// </remarks>
public sealed class FuzzCase
{
    /// <summary>The slot the addresses are in.</summary>
    public required ulong Slot { get; init; }

    /// <summary>The model design, or null when the case does not say.</summary>
    public string? Design { get; init; }

    /// <summary>The recording host's MemTotal in kB, or null.</summary>
    public long? MemTotalKb { get; init; }

    /// <summary>The recording host's <c>read_ahead_kb</c> for the test file, or null.</summary>
    public int? ReadAheadKb { get; init; }

    /// <summary>Whether the recording host mapped the shared zero page on anonymous read faults (no <c>zeropage 0</c> line).</summary>
    public bool ZeroPage { get; init; } = true;

    /// <summary>Whether the recording host gave execute-only mappings a protection key that denies data access (a <c>pkey exec-only</c> line).</summary>
    public bool ExecOnlyPkey { get; init; }

    /// <summary>Whether the case ran in the collapse mode (a <c>thp collapse</c> line).</summary>
    public bool Collapse { get; init; }

    /// <summary>The comment lines at the top, without their <c>#</c>.</summary>
    public IReadOnlyList<string> Comments { get; init; } = [];

    /// <summary>The operations, with the kernel's answers where recorded.</summary>
    public required IReadOnlyList<FuzzCaseStep> Steps { get; init; }

    /// <summary>The operations alone.</summary>
    public IReadOnlyList<FuzzOp> Ops => [.. Steps.Select(s => s.Op)];

    /// <summary>A case from a run: every operation with the kernel's outcome.</summary>
    public static FuzzCase FromSequence(
        FuzzSequence sequence, string design, long memTotalKb, IEnumerable<string> comments, int? readAheadKb = null, bool collapse = false, bool zeroPage = true, bool execOnlyPkey = false)
    {
        ArgumentNullException.ThrowIfNull(sequence);
        return new FuzzCase
        {
            Slot = sequence.Slot,
            Design = design,
            MemTotalKb = memTotalKb,
            ReadAheadKb = readAheadKb,
            Collapse = collapse,
            ZeroPage = zeroPage,
            ExecOnlyPkey = execOnlyPkey,
            Comments = [.. comments],
            Steps = [.. sequence.Steps.Select(s => new FuzzCaseStep(s.Op, s.Kernel))],
        };
    }

    /// <summary>Reads a case file; a bad line throws <see cref="FormatException"/> naming the file and line.</summary>
    public static FuzzCase Load(string path) => Parse(File.ReadAllText(path), path);

    /// <summary>Parses case text; <paramref name="source"/> names it in errors.</summary>
    public static FuzzCase Parse(string text, string source)
    {
        ArgumentNullException.ThrowIfNull(text);
        ulong slot = 0;
        string? design = null;
        long? memTotal = null;
        int? readAhead = null;
        bool collapse = false;
        bool zeroPage = true;
        bool execOnlyPkey = false;
        var comments = new List<string>();
        var steps = new List<FuzzCaseStep>();
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (line.Length == 0)
            {
                continue;
            }

            try
            {
                if (line.StartsWith('#'))
                {
                    if (steps.Count == 0)
                    {
                        comments.Add(line[1..].TrimStart());
                    }

                    continue;
                }

                var words = line.Split([' ', '\t'], 2, StringSplitOptions.RemoveEmptyEntries);
                switch (words[0])
                {
                    case "slot":
                        slot = FuzzText.ParseNumber(Value(words));
                        if (slot == 0 || slot % FuzzText.SlotSize != 0)
                        {
                            throw new FormatException($"slot {Value(words)} is not a non-zero 512 GiB boundary");
                        }

                        continue;
                    case "design":
                        design = Value(words);
                        continue;
                    case "memtotal":
                        memTotal = long.TryParse(Value(words), NumberStyles.None, CultureInfo.InvariantCulture, out long kb) && kb > 0
                            ? kb
                            : throw new FormatException($"memtotal {Value(words)} is not a positive number of kB");
                        continue;
                    case "readahead":
                        readAhead = int.TryParse(Value(words), NumberStyles.None, CultureInfo.InvariantCulture, out int ra)
                            ? ra
                            : throw new FormatException($"readahead {Value(words)} is not a number of kB");
                        continue;
                    case "zeropage":
                        zeroPage = Choice(words, "1", "0", "0 or 1");
                        continue;
                    case "pkey":
                        execOnlyPkey = Choice(words, "exec-only", "none", "'exec-only' or 'none'");
                        continue;
                    case "thp":
                        collapse = Choice(words, "collapse", "off", "'collapse' or 'off'");
                        continue;
                }

                if (slot == 0)
                {
                    throw new FormatException("an operation before the 'slot' line");
                }

                int arrow = line.IndexOf("=>", StringComparison.Ordinal);
                var op = FuzzText.ParseOp(arrow < 0 ? line : line[..arrow], slot);
                var expected = arrow < 0 ? null : FuzzText.ParseOutcome(line[(arrow + 2)..], slot);
                steps.Add(new FuzzCaseStep(op, expected));
            }
            catch (FormatException e)
            {
                throw new FormatException($"{source}:{i + 1}: {e.Message}", e);
            }
        }

        if (steps.Count == 0)
        {
            throw new FormatException($"{source}: no operations");
        }

        return new FuzzCase
        {
            Slot = slot,
            Design = design,
            MemTotalKb = memTotal,
            ReadAheadKb = readAhead,
            Collapse = collapse,
            ZeroPage = zeroPage,
            ExecOnlyPkey = execOnlyPkey,
            Comments = comments,
            Steps = steps,
        };
    }

    /// <summary>The case in its file form.</summary>
    public string Format()
    {
        var sb = new StringBuilder();
        foreach (var c in Comments)
        {
            sb.Append("# ").AppendLine(c);
        }

        sb.AppendLine(CultureInfo.InvariantCulture, $"slot {FuzzText.Hex(Slot)}");
        if (Design is not null)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"design {Design}");
        }

        if (MemTotalKb is { } kb)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"memtotal {kb}");
        }

        if (ReadAheadKb is { } ra)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"readahead {ra}");
        }

        if (!ZeroPage)
        {
            sb.AppendLine("zeropage 0");
        }

        if (ExecOnlyPkey)
        {
            sb.AppendLine("pkey exec-only");
        }

        if (Collapse)
        {
            sb.AppendLine("thp collapse");
        }

        foreach (var s in Steps)
        {
            sb.Append(s.Op.Format(Slot));
            if (s.Expected is not null)
            {
                sb.Append(" => ").Append(FuzzText.FormatOutcome(s.Expected, Slot));
            }

            sb.Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>
    /// Replays the case on a fresh model and compares each step with the recorded kernel answer.
    /// Returns one line per step that differs (empty when the model agrees throughout).
    /// </summary>
    public IReadOnlyList<string> CheckOnModel(string? design = null, long? memTotalKb = null)
    {
        string d = design ?? Design ?? throw new InvalidOperationException("the case names no design; pass one");
        long kb = memTotalKb ?? MemTotalKb ?? throw new InvalidOperationException("the case gives no memtotal; pass one");
        using var model = new ModelSide(d, kb, Slot, ReadAheadKb ?? 128, collapse: Collapse, zeroPage: ZeroPage, execOnlyPkey: ExecOnlyPkey);
        var problems = new List<string>();
        for (int i = 0; i < Steps.Count; i++)
        {
            var step = Steps[i];
            var got = model.Run(step.Op);
            if (step.Expected is { } want && want.DifferencesFrom(got) is { Count: > 0 } diff)
            {
                problems.Add($"operation {i + 1} ({step.Op.Format(Slot)}) differs in {string.Join(", ", diff)}: " +
                             $"kernel {FuzzText.FormatOutcome(want, Slot)}; model {FuzzText.FormatOutcome(got, Slot)}");
            }
        }

        return problems;
    }

    private static string Value(string[] words) =>
        words.Length == 2 ? words[1].Trim() : throw new FormatException($"'{words[0]}' needs a value");

    /// <summary>A header line's value of two: true for <paramref name="yes"/>, false for <paramref name="no"/>.</summary>
    private static bool Choice(string[] words, string yes, string no, string either) =>
        Value(words) is var v && v == yes ? true
        : v == no ? false
        : throw new FormatException($"{words[0]} {v} is not {either}");
}
