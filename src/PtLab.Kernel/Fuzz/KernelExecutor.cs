using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace PtLab.Kernel.Fuzz;

/// <summary>The executor refused a request, died, or answered something that is not its protocol.</summary>
public sealed class FuzzHarnessException(string message) : Exception(message);

/// <summary>
/// The kernel side of the fuzzer: a small C program (<c>Fuzz/executor.c</c>, built from source at run
/// time) that runs each operation on the host kernel inside an empty 512 GiB slot of its own address
/// space and answers with the result, VmPTE and RssAnon over its baseline, and on request its VMAs in
/// the slot. The protocol is documented at the top of the C source.
/// </summary>
public sealed class KernelExecutor : IDisposable
{
    private const string ProgramName = "ptlab-fuzz-executor";
    private readonly Process _process;
    private readonly StreamWriter _stdin;
    private readonly StreamReader _stdout;
    private readonly StringBuilder _stderr = new();
    private bool _disposed;

    private KernelExecutor(string exe, string? fileDirectory, bool collapse)
    {
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (fileDirectory is not null)
        {
            psi.ArgumentList.Add(fileDirectory);
        }

        if (collapse)
        {
            psi.Environment["PTLAB_EXECUTOR_THP"] = "collapse";
        }

        _process = Process.Start(psi) ?? throw new FuzzHarnessException($"could not start {exe}");
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            }
        };
        _process.BeginErrorReadLine();
        _stdin = _process.StandardInput;
        _stdin.AutoFlush = false;
        _stdin.NewLine = "\n";
        _stdout = _process.StandardOutput;
        string hello = ReadLine("the hello line");
        var words = hello.Split(' ');
        if (words.Length < 2 || words[0] != "ptlab-executor" || words[1] != "1")
        {
            throw new FuzzHarnessException($"the executor's hello is not protocol 1: \"{hello}\"");
        }

        foreach (var w in words.Skip(2))
        {
            int eq = w.IndexOf('=', StringComparison.Ordinal);
            string key = eq < 0 ? w : w[..eq], value = eq < 0 ? "" : w[(eq + 1)..];
            switch (key)
            {
                case "slot":
                    SlotStart = FuzzText.ParseNumber(value);
                    break;
                case "end":
                    SlotEnd = FuzzText.ParseNumber(value);
                    break;
                case "memtotal":
                    MemTotalKb = long.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "filesize":
                    FileSize = ulong.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "brk":
                    BrkStart = FuzzText.ParseNumber(value);
                    break;
                case "thp":
                    Collapse = value == "collapse";
                    break;
            }
        }

        if (Collapse != collapse)
        {
            throw new FuzzHarnessException($"the executor's THP mode is not the one asked for ({(collapse ? "collapse" : "off")}): \"{hello}\"");
        }

        if (SlotStart == 0 || SlotEnd != SlotStart + FuzzText.SlotSize || MemTotalKb <= 0)
        {
            throw new FuzzHarnessException($"the executor's hello lacks its slot or MemTotal: \"{hello}\"");
        }
    }

    /// <summary>The first address of the slot.</summary>
    public ulong SlotStart { get; }

    /// <summary>The first address past the slot.</summary>
    public ulong SlotEnd { get; }

    /// <summary>The host's <c>MemTotal</c> in kB (the overcommit heuristic compares charges with it).</summary>
    public long MemTotalKb { get; }

    /// <summary>The size of the test file <c>mmapf</c> maps, or 0 when the executor has none.</summary>
    public ulong FileSize { get; }

    /// <summary>Whether MADV_COLLAPSE collapses in the executor (THP kept off for faults outside MADV_HUGEPAGE VMAs only).</summary>
    public bool Collapse { get; }

    /// <summary>Where the heap starts in the slot (<c>start_brk</c>), or 0 when the executor could not move it there.</summary>
    public ulong BrkStart { get; }

    /// <summary>Where the test file lives, or null.</summary>
    public string? FileDirectory { get; private init; }

    /// <summary>Requests answered since start.</summary>
    public long Requests { get; private set; }

    /// <summary>Whether an executor can run here (Linux x86-64 and a C compiler), and why not.</summary>
    public static bool IsAvailable(out string reason)
    {
        if (!KernelTarget.IsSupported)
        {
            reason = "the kernel fuzzer needs Linux on x86-64";
            return false;
        }

        return NativeBuild.IsAvailable(out reason);
    }

    /// <summary>
    /// Builds the executor (cached by its source) and starts it, with its test file in a
    /// disk-backed temporary directory (none when <paramref name="withFile"/> is false). With
    /// <paramref name="collapse"/>, MADV_COLLAPSE collapses (see the executor's start-up notes).
    /// </summary>
    /// <exception cref="NativeBuildException">No C compiler, or it refused the source.</exception>
    public static KernelExecutor Start(bool withFile = true, bool collapse = false)
    {
        if (!KernelTarget.IsSupported)
        {
            throw new KernelUnavailableException("the kernel fuzzer needs Linux on x86-64");
        }

        string exe = NativeBuild.BuildEmbedded(typeof(KernelExecutor).Assembly, "Fuzz.executor.c", ProgramName);
        string? dir = withFile ? KernelTarget.DiskBackedTempDirectory() : null;
        return new KernelExecutor(exe, dir, collapse) { FileDirectory = dir };
    }

    /// <summary>Runs one operation; with <paramref name="layout"/>, also reads the VMAs in the slot after it.</summary>
    public OpOutcome Run(FuzzOp op, bool layout = true)
    {
        ArgumentNullException.ThrowIfNull(op);
        Send(op.WireLine(), layout);
        string reply = ReadLine(op.WireLine());
        var maps = layout ? ReadMaps() : null; // read even after a refusal, to stay in step
        var (result, pte, anon, file, shmem, refKb) = ParseReply(op.WireLine(), reply);
        return new OpOutcome(result, pte, anon, maps, file, shmem, refKb);
    }

    /// <summary>Unmaps the whole slot and returns what is left over the baseline (zeros when clean).</summary>
    public OpOutcome Reset()
    {
        Send("reset", layout: true);
        string reply = ReadLine("reset");
        var maps = ReadMaps();
        var (result, pte, anon, file, shmem, _) = ParseReply("reset", reply);
        return new OpOutcome(result, pte, anon, maps, file, shmem);
    }

    /// <summary>Stops the executor.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            if (!_process.HasExited)
            {
                _stdin.WriteLine("quit");
                _stdin.Flush();
                if (!_process.WaitForExit(2000))
                {
                    _process.Kill();
                }
            }
        }
        catch (IOException)
        {
            // it is gone already
        }
        finally
        {
            _process.Dispose();
        }
    }

    private void Send(string line, bool layout)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            _stdin.WriteLine(line);
            if (layout)
            {
                _stdin.WriteLine("maps");
            }

            _stdin.Flush();
        }
        catch (IOException e)
        {
            throw Died($"writing \"{line}\": {e.Message}");
        }
    }

    private (OpResult Result, long Pte, long Anon, long File, long Shmem, long Ref) ParseReply(string request, string line)
    {
        Requests++;
        if (line.StartsWith("? ", StringComparison.Ordinal))
        {
            throw new FuzzHarnessException($"the executor refused \"{request}\": {line[2..]}");
        }

        var w = line.Split(' ');
        try
        {
            OpResult result;
            int statusAt;
            switch (w[0])
            {
                case "=":
                    result = OpResult.Returned(FuzzText.ParseNumber(w[1]));
                    statusAt = 2;
                    break;
                case "!":
                    result = new OpResult(OpResultKind.Error, FuzzText.ParseNumber(w[1]));
                    statusAt = 2;
                    break;
                case "O":
                    result = new OpResult(OpResultKind.OutsideSlot, 0);
                    statusAt = 1;
                    break;
                case "S":
                    result = new OpResult(OpResultKind.Signal, FuzzText.ParseNumber(w[3]),
                        int.Parse(w[1], CultureInfo.InvariantCulture), int.Parse(w[2], CultureInfo.InvariantCulture));
                    statusAt = 4;
                    break;
                default:
                    throw new FormatException("unknown reply");
            }

            long pte = long.Parse(w[statusAt].AsSpan(4), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            long anon = long.Parse(w[statusAt + 1].AsSpan(5), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            long file = long.Parse(w[statusAt + 2].AsSpan(5), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            long shmem = long.Parse(w[statusAt + 3].AsSpan(6), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            long refKb = w.Length > statusAt + 4 && w[statusAt + 4].StartsWith("ref=", StringComparison.Ordinal)
                ? long.Parse(w[statusAt + 4].AsSpan(4), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)
                : -1;
            return (result, pte, anon, file, shmem, refKb);
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException or OverflowException)
        {
            throw new FuzzHarnessException($"the executor's reply to \"{request}\" is not its protocol: \"{line}\"");
        }
    }

    private List<VmaLine> ReadMaps()
    {
        string count = ReadLine("maps");
        if (!int.TryParse(count, NumberStyles.None, CultureInfo.InvariantCulture, out int n))
        {
            throw new FuzzHarnessException($"the executor's maps reply does not start with a count: \"{count}\"");
        }

        var vmas = new List<VmaLine>(n);
        for (int i = 0; i < n; i++)
        {
            var w = ReadLine("maps").Split(' ');
            if (w.Length != 3 ||
                !ulong.TryParse(w[0], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong s) ||
                !ulong.TryParse(w[1], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong e))
            {
                throw new FuzzHarnessException($"the executor's maps line is not START END PERMS: \"{string.Join(' ', w)}\"");
            }

            vmas.Add(new VmaLine(s, e, w[2]));
        }

        return vmas;
    }

    private string ReadLine(string what)
    {
        string? line;
        try
        {
            line = _stdout.ReadLine();
        }
        catch (IOException e)
        {
            throw Died($"reading the answer to \"{what}\": {e.Message}");
        }

        return line ?? throw Died($"before answering \"{what}\"");
    }

    private FuzzHarnessException Died(string when)
    {
        _process.WaitForExit(2000);
        string code = _process.HasExited ? $"exit code {_process.ExitCode}" : "still running";
        string err;
        lock (_stderr)
        {
            err = _stderr.ToString().Trim();
        }

        return new FuzzHarnessException($"the executor stopped {when} ({code}){(err.Length > 0 ? ": " + err : "")}");
    }
}
