using System.IO.Hashing;
using System.Text;

namespace PtLab.Traces;

/// <summary>The three shapes of fuzz input.</summary>
internal enum FuzzInputKind
{
    /// <summary>A valid trace's bytes, mutated (sometimes with its checksum made to match again).</summary>
    TraceBytes,
    /// <summary>A well-formed file of random, mostly invalid rows.</summary>
    TraceRows,
    /// <summary>perf script text, mutated line by line.</summary>
    PerfText,
}

/// <summary>What one fuzz input did: the reader or importer accepted it, rejected it with a
/// <see cref="TraceFormatException"/>, or crashed (any other exception: a bug).</summary>
internal readonly record struct FuzzOutcome(FuzzInputKind Kind, bool Accepted, Exception? Crash, string? Message);

/// <summary>
/// Feeds the trace reader and the perf script importer inputs made from valid ones by mutation,
/// one seed per input, and classifies what they did. Used by the default test run (a few thousand
/// seeds) and <c>ptlab fuzz traces</c> (a million).
/// </summary>
internal sealed class TraceFuzzer
{
    private readonly byte[] _trace;
    private readonly string[] _text;

    /// <param name="perfText">Lines of a valid perf script text to mutate (the checked-in sample).</param>
    public TraceFuzzer(IReadOnlyList<string> perfText)
    {
        using var ms = new MemoryStream();
        using (var w = TraceWriter.Create(ms))
        {
            foreach (var e in SyntheticTrace.Events(300, seed: 5, threads: 2))
            {
                w.Append(e);
            }

            w.Complete(SyntheticTrace.Metadata());
        }

        _trace = ms.ToArray();
        _text = [.. perfText];
    }

    /// <summary>The checked-in perf script sample (Samples/sample.perf.txt): 150 lines of a small threaded program.</summary>
    public static string[] SamplePerfText()
    {
        using var stream = typeof(TraceFuzzer).Assembly.GetManifestResourceStream("PtLab.Traces.sample.perf.txt")!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    /// <summary>Makes input <paramref name="seed"/> and runs it.</summary>
    public FuzzOutcome Run(ulong seed)
    {
        var rng = new Random((int)(seed ^ (seed >> 32)));
        var kind = (FuzzInputKind)(seed % 3);
        // Making the input is outside the try: a fault there is the fuzzer's, not the reader's.
        // Random rows go through a Parquet file one time in eight (writing one costs milliseconds);
        // the other times straight into the checks the reader applies to each decoded row.
        bool direct = kind == FuzzInputKind.TraceRows && rng.Next(8) != 0;
        TraceMetadata? meta = null;
        var rows = kind == FuzzInputKind.TraceRows ? RandomEvents(rng, out meta) : null;
        byte[]? bytes = kind switch
        {
            FuzzInputKind.TraceBytes => MutateBytes(rng),
            FuzzInputKind.TraceRows when !direct => ToFile(rows!, meta!, rng),
            _ => null,
        };
        string? text = kind == FuzzInputKind.PerfText ? MutateText(rng) : null;
        try
        {
            if (bytes is not null)
            {
                ReadAll(bytes);
            }
            else if (text is not null)
            {
                ImportAll(text);
            }
            else
            {
                CheckAll(rows!, meta!);
            }

            return new FuzzOutcome(kind, true, null, null);
        }
        catch (TraceFormatException e)
        {
            return new FuzzOutcome(kind, false, null, e.Message);
        }
        catch (Exception e)
        {
            return new FuzzOutcome(kind, false, e, null);
        }
    }

    private static void ReadAll(byte[] bytes)
    {
        using var reader = TraceReader.Open(new MemoryStream(bytes, writable: false), "fuzz.parquet");
        foreach (var _ in reader.ReadEvents())
        {
        }
    }

    private static void CheckAll(List<TraceEvent> rows, TraceMetadata meta)
    {
        var validator = new TraceValidator(admitUnknownTasks: meta.Incomplete, allowUnfinished: meta.Truncated || meta.Source == "attach");
        for (int i = 0; i < rows.Count; i++)
        {
            if (validator.Check(rows[i]) is { } error)
            {
                throw new TraceFormatException($"fuzz.parquet: row {i}: {error}");
            }
        }
    }

    private static void ImportAll(string text)
    {
        var importer = new PerfScriptImporter(new StringReader(text), "fuzz.txt");
        foreach (var _ in importer.Read())
        {
        }
    }

    internal byte[] MutateBytes(Random rng)
    {
        byte[] b = (byte[])_trace.Clone();
        int footerLength = BitConverter.ToInt32(b, b.Length - 8);
        int footerStart = b.Length - 8 - footerLength;
        int mutations = 1 + rng.Next(4);
        bool fixChecksum = rng.Next(3) == 0;
        for (int m = 0; m < mutations; m++)
        {
            // Half the mutations land in the footer, which the checksum does not cover.
            int lo = rng.Next(2) == 0 ? Math.Clamp(footerStart, 0, b.Length - 1) : 0;
            int at = lo + rng.Next(Math.Max(1, b.Length - lo));
            switch (rng.Next(6))
            {
                case 0:
                    b[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    b[at] = (byte)rng.Next(256);
                    break;
                case 2:
                    for (int i = at; i < Math.Min(b.Length, at + 1 + rng.Next(16)); i++)
                    {
                        b[i] = (byte)rng.Next(256);
                    }

                    break;
                case 3:
                    b = b[..at];
                    break;
                case 4:
                    b[at] = rng.Next(2) == 0 ? (byte)0 : (byte)0xff;
                    break;
                default:
                    b = [.. b[..at], .. b[at..Math.Min(b.Length, at + 1 + rng.Next(64))], .. b[at..]];
                    break;
            }

            if (b.Length < 16)
            {
                return b;
            }
        }

        return fixChecksum ? WithChecksum(b) : b;
    }

    /// <summary>Rewrites the footer's checksum to match the (mutated) data, so that decoding itself is attacked.</summary>
    private static byte[] WithChecksum(byte[] b)
    {
        if (b.Length < 12)
        {
            return b;
        }

        int footerLength = BitConverter.ToInt32(b, b.Length - 8);
        long footerStart = (long)b.Length - 8 - footerLength;
        if (footerLength <= 0 || footerStart < 4)
        {
            return b;
        }

        byte[] key = Encoding.ASCII.GetBytes(TraceKeys.Checksum);
        int keyAt = b.AsSpan((int)footerStart).IndexOf(key);
        if (keyAt < 0)
        {
            return b;
        }

        // The value follows the key in the Thrift struct: a length byte, then 16 hex digits.
        int valueAt = (int)footerStart + keyAt + key.Length + 2;
        if (valueAt + 16 > b.Length)
        {
            return b;
        }

        string hash = Convert.ToHexStringLower(XxHash3.Hash(b.AsSpan(0, (int)footerStart)));
        Encoding.ASCII.GetBytes(hash).CopyTo(b, valueAt);
        return b;
    }

    private static byte[] ToFile(List<TraceEvent> rows, TraceMetadata meta, Random rng)
    {
        using var ms = new MemoryStream();
        using (var w = TraceWriter.CreateUnchecked(ms))
        {
            foreach (var e in rows)
            {
                w.Append(e);
            }

            if (rng.Next(10) == 0)
            {
                w.OverrideKeyValues = new() { [rng.Next(2) == 0 ? TraceKeys.Version : TraceKeys.LostEvents] = rng.Next(3).ToString(System.Globalization.CultureInfo.InvariantCulture) };
            }

            w.Complete(meta);
        }

        return ms.ToArray();
    }

    internal static List<TraceEvent> RandomEvents(Random rng, out TraceMetadata meta)
    {
        var list = new List<TraceEvent>();
        {
            long t = rng.Next(1000);
            int rows = 1 + rng.Next(40);
            int[] pids = [1, 2, 3, 1000, rng.Next(int.MaxValue)];
            for (int i = 0; i < rows; i++)
            {
                var kind = (TraceEventKind)(rng.Next(20) == 0 ? TraceKinds.Count + rng.Next(3) : rng.Next(TraceKinds.Count));
                var (required, optional) = (int)kind < TraceKinds.Count ? TraceKinds.Fields(kind) : (TraceFields.None, TraceFields.None);
                var has = required | (optional & (TraceFields)rng.Next(1 << 15));
                if (rng.Next(8) == 0)
                {
                    has ^= (TraceFields)(1 << rng.Next(15));
                }

                t += rng.Next(8) == 0 ? -rng.Next(100) : rng.Next(1000);
                int pid = pids[rng.Next(pids.Length)];
                var e = new TraceEvent
                {
                    TimeNs = t,
                    Pid = rng.Next(10) == 0 ? rng.Next(-2, 3) : pid,
                    Tid = rng.Next(4) == 0 ? pids[rng.Next(pids.Length)] : pid,
                    Kind = kind,
                    Has = has,
                    Address = Value(rng),
                    Length = Value(rng),
                    Prot = rng.Next(-1, 9),
                    Flags = rng.Next(3) == 0 ? (ulong)rng.Next(3) : Value(rng),
                    Fd = rng.Next(-1, 5),
                    Offset = Value(rng),
                    NewAddress = Value(rng),
                    NewLength = Value(rng),
                    Result = rng.Next(3) == 0 ? pids[rng.Next(pids.Length)] : (long)Value(rng),
                    DurationNs = rng.Next(-5, 1000),
                    Ip = Value(rng),
                    Dev = rng.Next(3) switch { 0 => "fe:00", 1 => "", _ => "zz:" + rng.Next() },
                    Inode = Value(rng),
                    Path = rng.Next(50) == 0 ? new string('p', 5000) : "/lib/x.so",
                    Status = new StatusFigures(rng.Next(-1, 9), 1, 2, 3, 4, 5, rng.Next(-1, 100)),
                };
                if (TraceKinds.IsPageCacheChange(kind) && rng.Next(2) == 0)
                {
                    // Mostly well-formed page-cache changes: rows of no task, a folio at an aligned offset.
                    int order = rng.Next(4) == 0 ? rng.Next(TraceKinds.MaxFolioOrder + 3) : 0;
                    e = e with { Pid = 0, Tid = 0, Flags = (ulong)order, Offset = (ulong)rng.Next(1 << 16) << (12 + Math.Min(order, 20)), Result = rng.Next(3) };
                }

                list.Add(e);
            }

            meta = new TraceMetadata { Truncated = rng.Next(2) == 0, Incomplete = rng.Next(2) == 0, Source = rng.Next(2) == 0 ? "record" : "attach" };
        }

        return list;
    }

    private static ulong Value(Random rng) => rng.Next(4) switch
    {
        0 => 0,
        1 => (ulong)rng.Next(1 << 20) << 12,
        2 => ulong.MaxValue - (ulong)rng.Next(100),
        _ => (ulong)rng.NextInt64(),
    };

    internal string MutateText(Random rng)
    {
        var lines = new List<string>(_text);
        int mutations = 1 + rng.Next(4);
        for (int m = 0; m < mutations && lines.Count > 0; m++)
        {
            int i = rng.Next(lines.Count);
            string line = lines[i];
            switch (rng.Next(8))
            {
                case 0:
                    lines.RemoveAt(i);
                    break;
                case 1:
                    lines.Insert(rng.Next(lines.Count), line);
                    break;
                case 2:
                    int j = rng.Next(lines.Count);
                    (lines[i], lines[j]) = (lines[j], lines[i]);
                    break;
                case 3:
                    lines[i] = line[..rng.Next(line.Length + 1)];
                    break;
                case 4:
                    if (line.Length > 0)
                    {
                        var chars = line.ToCharArray();
                        chars[rng.Next(chars.Length)] = " :/,=x0129[]()-\t"[rng.Next(16)];
                        lines[i] = new string(chars);
                    }

                    break;
                case 5:
                    lines.Insert(i, new string((char)rng.Next(32, 127), rng.Next(80)));
                    break;
                case 6:
                    // Another number where a number was: pids, times, addresses.
                    lines[i] = ReplaceDigits(line, rng);
                    break;
                default:
                    lines[i] = line.Replace("sys_exit", "sys_enter", StringComparison.Ordinal);
                    break;
            }
        }

        return string.Join('\n', lines);
    }

    private static string ReplaceDigits(string line, Random rng)
    {
        var sb = new StringBuilder(line);
        for (int k = 0; k < 3; k++)
        {
            int at = rng.Next(Math.Max(1, sb.Length));
            if (at < sb.Length && char.IsAsciiDigit(sb[at]))
            {
                sb[at] = (char)('0' + rng.Next(10));
            }
        }

        return sb.ToString();
    }
}
