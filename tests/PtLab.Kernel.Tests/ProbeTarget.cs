using System.Diagnostics;
using System.Globalization;
using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Kernel.Tests;

/// <summary>
/// The host kernel in a child process (Native/vmprobe.c, built from source at test time) as an
/// <see cref="IMemoryTarget"/>, for the calls the test runner may not make on its own address
/// space: brk, mlockall, munlockall, and touches below a MAP_GROWSDOWN stack. Status figures are
/// changes over the child's baseline.
/// </summary>
internal sealed class ProbeTarget : IMemoryTarget
{
    private readonly Process _process;

    private ProbeTarget(Process process, ulong slot)
    {
        _process = process;
        Slot = slot;
    }

    /// <inheritdoc/>
    public string Name => "kernel (child)";

    /// <summary>The empty 512 GiB slot the child keeps its mappings in.</summary>
    public ulong Slot { get; }

    /// <summary>
    /// When set, <see cref="Status"/> reports VmLck as the size of the locked VMAs in the slot
    /// instead of the child's own figure (which counts the child's libraries after mlockall).
    /// </summary>
    public bool LockedFromSlot { get; set; }

    /// <summary>Builds and starts the child.</summary>
    public static ProbeTarget Start()
    {
        string exe = NativeBuild.BuildEmbedded(typeof(ProbeTarget).Assembly, "vmprobe.c", "vmprobe");
        var p = Process.Start(new ProcessStartInfo(exe) { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false })
            ?? throw new InvalidOperationException("the probe did not start");
        string hello = p.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the probe said nothing");
        Assert.StartsWith("slot 0x", hello);
        return new ProbeTarget(p, Hex(hello["slot ".Length..]));
    }

    /// <inheritdoc/>
    public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags) => AsMmap(Call($"mmap {addr} {length} {(int)prot} {(int)flags}"));

    /// <inheritdoc/>
    public Errno Munmap(ulong addr, ulong length) => AsErrno(Call($"munmap {addr} {length}"));

    /// <inheritdoc/>
    public Errno Mprotect(ulong addr, ulong length, Prot prot) => AsErrno(Call($"mprotect {addr} {length} {(int)prot}"));

    /// <inheritdoc/>
    public Errno Madvise(ulong addr, ulong length, Advice advice) => AsErrno(Call($"madvise {addr} {length} {(int)advice}"));

    /// <inheritdoc/>
    public MmapResult Mremap(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr) =>
        AsMmap(Call($"mremap {addr} {oldLen} {newLen} {(int)flags} {newAddr}"));

    /// <inheritdoc/>
    public Errno Mlock(ulong addr, ulong length) => AsErrno(Call($"mlock {addr} {length}"));

    /// <inheritdoc/>
    public Errno Mlock2(ulong addr, ulong length, MlockFlags flags) => AsErrno(Call($"mlock2 {addr} {length} {(int)flags}"));

    /// <inheritdoc/>
    public Errno Munlock(ulong addr, ulong length) => AsErrno(Call($"munlock {addr} {length}"));

    /// <inheritdoc/>
    public Errno Mlockall(MlockallFlags flags) => AsErrno(Call($"mlockall {(int)flags}"));

    /// <inheritdoc/>
    public Errno Munlockall() => AsErrno(Call("munlockall"));

    /// <inheritdoc/>
    public ulong Brk(ulong addr) => Hex(Call($"brk {addr}")[2..]);

    /// <inheritdoc/>
    public AccessResult TouchPages(ulong addr, ulong length, bool write)
    {
        string r = Call($"touch {addr} {length} {(write ? 1 : 0)}");
        if (r.StartsWith('='))
        {
            return AccessResult.Success;
        }

        // "S SIGNO CODE 0xADDR": SIGSEGV (11) with SEGV_MAPERR (1) or SEGV_ACCERR (2), or SIGBUS.
        var f = r.Split(' ');
        var outcome = f[1] == "11" ? (f[2] == "2" ? FaultOutcome.SegvAccErr : FaultOutcome.SegvMapErr) : FaultOutcome.Bus;
        return new AccessResult(outcome, Hex(f[3]));
    }

    /// <inheritdoc/>
    public ulong[] Pagemap(ulong addr, int pages)
    {
        string r = Call($"pagemap {addr} {pages}");
        Assert.True(r.StartsWith("P ", StringComparison.Ordinal), $"pagemap of 0x{addr:x}: {r}");
        return [.. r[2..].Split(' ').Select(Hex)];
    }

    /// <inheritdoc/>
    public MmStatus Status()
    {
        var f = Call("status").Split(' ').Select(kv => long.Parse(kv[(kv.IndexOf('=') + 1)..], CultureInfo.InvariantCulture)).ToArray();
        long lck = LockedFromSlot
            ? Layout(Slot, Slot + MappingDifferential.Slot).Where(v => (v.Flags & VmFlags.Locked) != 0).Sum(v => (long)(v.End - v.Start) >> 10)
            : f[2];
        return new MmStatus(0, f[1], f[1], 0, 0, 0, f[0], default) { VmLckKb = lck };
    }

    /// <inheritdoc/>
    public IReadOnlyList<VmaView> Layout(ulong start, ulong end)
    {
        int n = int.Parse(Call($"layout {start} {end - start}"), CultureInfo.InvariantCulture);
        var result = new List<VmaView>(n);
        for (int i = 0; i < n; i++)
        {
            var words = Read().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var flags = VmFlags.None;
            foreach (string w in words.Skip(2))
            {
                flags |= VmaView.Mnemonics.GetValueOrDefault(w);
            }

            result.Add(new VmaView(Hex(words[0]), Hex(words[1]), flags));
        }

        return result;
    }

    /// <summary>Stops the child.</summary>
    public void Dispose()
    {
        try
        {
            _process.StandardInput.WriteLine("quit");
            _process.StandardInput.Flush();
            if (!_process.WaitForExit(5000))
            {
                _process.Kill();
            }
        }
        catch (IOException)
        {
        }

        _process.Dispose();
    }

    private string Call(string request)
    {
        _process.StandardInput.WriteLine(request);
        _process.StandardInput.Flush();
        string reply = Read();
        Assert.False(reply.StartsWith('?'), $"the probe refused \"{request}\": {reply}");
        return reply;
    }

    private string Read() => _process.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the probe exited");

    private static MmapResult AsMmap(string reply) =>
        reply.StartsWith('!') ? new MmapResult(0, (Errno)int.Parse(reply[2..], CultureInfo.InvariantCulture)) : new MmapResult(Hex(reply[2..]), Errno.None);

    private static Errno AsErrno(string reply) => AsMmap(reply).Error;

    private static ulong Hex(string s) => ulong.Parse(s.Trim().AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
}
