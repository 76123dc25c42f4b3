using PtLab.Mm;

namespace PtLab.Workloads;

/// <summary>
/// What a scenario runs against: one address space with Linux's memory system calls and a way to
/// touch pages. The model (<see cref="ModelTarget"/>) and the host kernel both implement it, so one
/// scenario description drives both.
/// </summary>
public interface IMemoryTarget : IDisposable
{
    /// <summary>A short name for reports ("model:none", "kernel").</summary>
    string Name { get; }

    /// <summary><c>mmap(addr, length, prot, flags, -1, 0)</c>.</summary>
    MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags);

    /// <summary><c>munmap</c>.</summary>
    Errno Munmap(ulong addr, ulong length);

    /// <summary><c>mprotect</c>.</summary>
    Errno Mprotect(ulong addr, ulong length, Prot prot);

    /// <summary><c>madvise</c>.</summary>
    Errno Madvise(ulong addr, ulong length, Advice advice);

    /// <summary>Touches one byte in each page of [addr, addr + length): a write or a read.</summary>
    AccessResult TouchPages(ulong addr, ulong length, bool write);

    /// <summary>The <c>/proc/self/status</c> figures now.</summary>
    MmStatus Status();

    /// <summary><c>mremap(addr, old_len, new_len, flags, new_addr)</c>.</summary>
    MmapResult Mremap(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr) => throw Unsupported("mremap");

    /// <summary><c>mlock</c>.</summary>
    Errno Mlock(ulong addr, ulong length) => throw Unsupported("mlock");

    /// <summary><c>mlock2</c>.</summary>
    Errno Mlock2(ulong addr, ulong length, MlockFlags flags) => throw Unsupported("mlock2");

    /// <summary><c>munlock</c>.</summary>
    Errno Munlock(ulong addr, ulong length) => throw Unsupported("munlock");

    /// <summary><c>mlockall</c>.</summary>
    Errno Mlockall(MlockallFlags flags) => throw Unsupported("mlockall");

    /// <summary><c>munlockall</c>.</summary>
    Errno Munlockall() => throw Unsupported("munlockall");

    /// <summary><c>brk</c>: the new break, or the old one when refused.</summary>
    ulong Brk(ulong addr) => throw Unsupported("brk");

    /// <summary><c>mseal(addr, len, flags)</c> (Linux 6.10+): seals the VMAs of a fully mapped range for the process's life.</summary>
    Errno Mseal(ulong addr, ulong length, ulong flags) => throw Unsupported("mseal");

    /// <summary>The VMAs that meet [start, end), with their flags, as <c>/proc/PID/smaps</c> shows them.</summary>
    IReadOnlyList<VmaView> Layout(ulong start, ulong end) => throw Unsupported("a VMA listing");

    /// <summary>
    /// The anonymous memory mapped by the VMAs that meet [start, end), in kB: the sum of their
    /// <c>Anonymous:</c> lines in <c>/proc/PID/smaps</c>. Unlike RssAnon it leaves out whatever
    /// else the process maps, so a range no one else uses gives an exact figure.
    /// </summary>
    long AnonKbIn(ulong start, ulong end) => throw Unsupported("a per-range anonymous figure");

    /// <summary>
    /// The <c>/proc/PID/pagemap</c> entries of the <paramref name="pages"/> pages from
    /// <paramref name="addr"/>: bit 63 present, bit 62 swapped, bit 58 guard region, the frame
    /// number or swap type and offset below.
    /// </summary>
    ulong[] Pagemap(ulong addr, int pages) => throw Unsupported("pagemap");

    private NotSupportedException Unsupported(string call) => new($"{Name} does not support {call}");
}

/// <summary>One VMA as <c>/proc/PID/smaps</c> shows it: its range and the VM flags its <c>VmFlags</c> line names.</summary>
/// <param name="Start">vm_start.</param>
/// <param name="End">vm_end.</param>
/// <param name="Flags">The flags among those PtLab models (see <see cref="VmaView.Modelled"/>).</param>
public readonly record struct VmaView(ulong Start, ulong End, VmFlags Flags)
{
    /// <summary>The flags both the model and smaps report, the ones a comparison looks at.</summary>
    public const VmFlags Modelled =
        VmFlags.Read | VmFlags.Write | VmFlags.Exec | VmFlags.Shared | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec |
        VmFlags.GrowsDown | VmFlags.Locked | VmFlags.LockOnFault | VmFlags.SeqRead | VmFlags.RandRead | VmFlags.Account |
        VmFlags.NoReserve | VmFlags.DontDump | VmFlags.HugePage | VmFlags.NoHugePage | VmFlags.DontCopy | VmFlags.WipeOnFork |
        VmFlags.Mergeable | VmFlags.Sealed | VmFlags.Droppable;

    /// <summary>The two-letter <c>VmFlags</c> mnemonics of smaps (<c>show_smap_vma_flags</c>) for the modelled flags.</summary>
    public static IReadOnlyDictionary<string, VmFlags> Mnemonics { get; } = new Dictionary<string, VmFlags>(StringComparer.Ordinal)
    {
        ["rd"] = VmFlags.Read,
        ["wr"] = VmFlags.Write,
        ["ex"] = VmFlags.Exec,
        ["sh"] = VmFlags.Shared,
        ["mr"] = VmFlags.MayRead,
        ["mw"] = VmFlags.MayWrite,
        ["me"] = VmFlags.MayExec,
        ["gd"] = VmFlags.GrowsDown,
        ["lo"] = VmFlags.Locked,
        ["lf"] = VmFlags.LockOnFault,
        ["sr"] = VmFlags.SeqRead,
        ["rr"] = VmFlags.RandRead,
        ["dc"] = VmFlags.DontCopy,
        ["ac"] = VmFlags.Account,
        ["nr"] = VmFlags.NoReserve,
        ["wf"] = VmFlags.WipeOnFork,
        ["dd"] = VmFlags.DontDump,
        ["hg"] = VmFlags.HugePage,
        ["nh"] = VmFlags.NoHugePage,
        ["mg"] = VmFlags.Mergeable,
        ["gu"] = VmFlags.MaybeGuard,
        ["dp"] = VmFlags.Droppable,
        ["sl"] = VmFlags.Sealed,
    };

    /// <summary>The smaps mnemonics of the flags, in smaps' order.</summary>
    public string FlagNames()
    {
        var flags = Flags;
        return string.Join(' ', Mnemonics.Where(m => (flags & m.Value) != 0).Select(m => m.Key));
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Start:x}-{End:x} {FlagNames()}";
}

/// <summary>
/// A target with several simulated CPUs on one address space: <see cref="OnCpu"/> gives a view whose
/// calls and touches run on one CPU, for multi-CPU scenarios (one thread per view).
/// </summary>
public interface IMultiCpuTarget : IMemoryTarget
{
    /// <summary>How many CPUs the target has.</summary>
    int CpuCount { get; }

    /// <summary>A view of the same address space driven by CPU <paramref name="cpu"/>; disposing it does nothing.</summary>
    IMemoryTarget OnCpu(int cpu);
}

/// <summary>A target that can store and check page contents, for scenarios that verify their own data.</summary>
public interface IDataTarget : IMemoryTarget
{
    /// <summary>Writes <paramref name="value"/> at <paramref name="va"/>.</summary>
    AccessResult WriteByte(ulong va, byte value);

    /// <summary>
    /// A fingerprint of the page holding <paramref name="va"/> that reflects every write so far (0 for a
    /// never-written page), reading the page in if needed.
    /// </summary>
    AccessResult Fingerprint(ulong va, out ulong fingerprint);

    /// <summary>The fingerprint a page has after <paramref name="value"/> is written at <paramref name="va"/> over <paramref name="previous"/>.</summary>
    ulong FingerprintAfterWrite(ulong previous, ulong va, byte value);
}

/// <summary>
/// A target that can map regular files: files it creates, written in full, so that every page is in
/// the page cache when it is mapped (as a file just written, or a library in use).
/// </summary>
public interface IFileTarget : IMemoryTarget
{
    /// <summary>Creates a file of <paramref name="size"/> bytes, written page by page, and returns its handle.</summary>
    int CreateFile(ulong size);

    /// <summary><c>mmap(addr, length, prot, flags, fd, offset)</c> of a file from <see cref="CreateFile"/>.</summary>
    MmapResult MmapFile(ulong addr, ulong length, Prot prot, MapFlags flags, int file, ulong offset);

    /// <summary>For each page of [<paramref name="addr"/>, +<paramref name="pages"/> pages), whether a present entry maps it (pagemap bit 63).</summary>
    bool[] PresentPages(ulong addr, int pages);

    /// <summary>Evicts a file's pages that no mapping uses from the page cache (written back first), so that faults find them cold.</summary>
    void DropFileCache(int file);

    /// <summary>The bytes a <c>read()</c> chunk asks for in <see cref="ReadFile"/> (as <c>cat</c> reads).</summary>
    public const int ReadChunk = 128 << 10;

    /// <summary>
    /// Reads [<paramref name="offset"/>, +<paramref name="length"/>) of a file from
    /// <see cref="CreateFile"/> with <c>pread</c> calls of <see cref="ReadChunk"/> bytes in order,
    /// which brings the pages into the page cache as the host's readahead does.
    /// </summary>
    void ReadFile(int file, ulong offset, ulong length) => throw new NotSupportedException($"{Name} does not support read()");
}
