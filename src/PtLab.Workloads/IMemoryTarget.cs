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
