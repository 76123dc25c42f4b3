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
}
