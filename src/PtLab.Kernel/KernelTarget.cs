using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using PtLab.Mm;
using PtLab.Paging;
using PtLab.Workloads;

namespace PtLab.Kernel;

/// <summary>Thrown when a <see cref="KernelTarget"/> is created on a host that is not Linux x86-64.</summary>
public sealed class KernelUnavailableException(string message) : PlatformNotSupportedException(message);

/// <summary>
/// The host Linux kernel as an <see cref="IMemoryTarget"/>: the scenario's system calls go to the
/// real kernel on this process's own address space, page touches are real loads and stores, and
/// <see cref="Status"/> reads <c>/proc/self/status</c>.
/// </summary>
/// <remarks>
/// <para>
/// The address space is shared with the .NET runtime, so the target guards it: it acts only on
/// ranges it mapped itself or that no VMA occupies (checked against <c>/proc/self/maps</c>), and
/// throws <see cref="ArgumentException"/> for anything else, since a munmap, a DONTNEED or a
/// MAP_FIXED over the runtime's memory would corrupt the process. Touches are checked against the
/// target's own record of its protections, because a real SIGSEGV would kill the process instead
/// of coming back as a result. Figures include the runtime's own tables and pages: compare deltas.
/// </para>
/// <para>
/// A kernel errno that <see cref="Errno"/> has no member for is returned with its Linux number as an
/// undefined <see cref="Errno"/>; <see cref="LastError"/> names it.
/// </para>
/// </remarks>
public sealed unsafe class KernelTarget : IFileTarget
{
    private const ulong PageSize = 4096;

    private readonly Lock _lock = new();
    private readonly MappingSet _owned = new();
    private readonly MappingSet _beyondEof = new(); // parts of file mappings past end of file: a touch there is SIGBUS
    private readonly List<(SafeFileHandle Handle, ulong Size)> _files = [];
    private int _disposed;

    /// <summary>Creates the target; throws <see cref="KernelUnavailableException"/> unless the host is Linux x86-64.</summary>
    public KernelTarget()
    {
        if (!IsSupported)
        {
            throw new KernelUnavailableException(
                $"the kernel target needs Linux on x86-64; this host is {RuntimeInformation.OSDescription} " +
                $"({RuntimeInformation.ProcessArchitecture})");
        }
    }

    /// <summary>Releases the mappings if <see cref="Dispose"/> was never called.</summary>
    ~KernelTarget() => Release(throwOnFailure: false);

    /// <summary>Whether a kernel target can be created on this host.</summary>
    public static bool IsSupported =>
        OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    /// <inheritdoc/>
    public string Name => "kernel";

    /// <summary>The last errno a call returned, with its name; null before any call failed.</summary>
    public KernelError? LastError { get; private set; }

    /// <summary>The ranges this target has mapped and not unmapped, with their protections.</summary>
    public IReadOnlyList<OwnedRange> Mappings
    {
        get
        {
            lock (_lock)
            {
                return [.. _owned.Ranges];
            }
        }
    }

    /// <summary>
    /// An address where [address, address + <paramref name="length"/>) meets no VMA of this
    /// process, <paramref name="alignment"/>-aligned (see <see cref="ProcMaps.FindFreeRegion"/>); 0 if none.
    /// Give it to a scenario to place its mapping where it shares no page table with the runtime's.
    /// </summary>
    public static ulong FindFreeRegion(ulong length, ulong alignment) =>
        ProcMaps.FindFreeRegion(ProcMaps.ReadSelf(), length, alignment);

    /// <inheritdoc/>
    public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags)
    {
        lock (_lock)
        {
            return MmapLocked(addr, length, prot, flags, -1, 0, 0);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The file lives in a disk-backed temporary directory (not tmpfs, whose pages would count as
    /// RssShmem) and is unlinked at once; only its descriptor keeps it. It is written with one 4 KiB
    /// <c>pwrite</c> per page, so the page cache holds it in single pages, as the model's does (a
    /// large write could leave PMD-sized folios that fault-around would map with one huge entry).
    /// </remarks>
    public int CreateFile(ulong size)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            string dir = DiskBackedTempDirectory();
            string path = Path.Combine(dir, $"ptlab-file-{Environment.ProcessId}-{Guid.NewGuid():N}");
            var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            File.Delete(path);
            var page = new byte[PageSize];
            for (ulong off = 0; off < size; off += PageSize)
            {
                int n = (int)Math.Min(PageSize, size - off);
                page.AsSpan(0, n).Fill((byte)(off >> 12));
                RandomAccess.Write(handle, page.AsSpan(0, n), (long)off);
            }

            _files.Add((handle, size));
            return _files.Count - 1;
        }
    }

    /// <inheritdoc/>
    public MmapResult MmapFile(ulong addr, ulong length, Prot prot, MapFlags flags, int file, ulong offset)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            var (handle, size) = _files[file];
            return MmapLocked(addr, length, prot, flags, (int)handle.DangerousGetHandle(), offset, size);
        }
    }

    /// <inheritdoc/>
    public void ReadFile(int file, ulong offset, ulong length)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            var handle = _files[file].Handle;
            byte[] buf = System.Buffers.ArrayPool<byte>.Shared.Rent(IFileTarget.ReadChunk); // pooled, as in PresentPages
            try
            {
                for (ulong done = 0; done < length; done += IFileTarget.ReadChunk)
                {
                    int n = (int)Math.Min(IFileTarget.ReadChunk, length - done);
                    if (RandomAccess.Read(handle, buf.AsSpan(0, n), (long)(offset + done)) < n)
                    {
                        throw new InvalidOperationException($"pread of the target's file at {offset + done} came back short");
                    }
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buf);
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks><c>fdatasync</c>, then <c>posix_fadvise(POSIX_FADV_DONTNEED)</c>, which drops the clean, unmapped pages.</remarks>
    public void DropFileCache(int file)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            int fd = (int)_files[file].Handle.DangerousGetHandle();
            if (LibC.Fdatasync(fd) != 0)
            {
                throw new InvalidOperationException($"fdatasync of the target's file failed: {LinuxErrno.Describe(Marshal.GetLastPInvokeError())}");
            }

            int err = LibC.PosixFadvise(fd, 0, 0, LibC.FadviseDontNeed);
            if (err != 0)
            {
                throw new InvalidOperationException($"posix_fadvise(POSIX_FADV_DONTNEED) of the target's file failed: {LinuxErrno.Describe(err)}");
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>Reads <c>/proc/self/pagemap</c>, whose present bit needs no privilege.</remarks>
    public bool[] PresentPages(ulong addr, int pages)
    {
        var present = new bool[pages];

        // A pooled buffer: a fresh large array per call would show up in the RssAnon that the
        // callers compare (this process's own) until the next full collection.
        byte[] buf = System.Buffers.ArrayPool<byte>.Shared.Rent(pages * 8);
        try
        {
            using var pagemap = File.OpenHandle("/proc/self/pagemap", FileMode.Open, FileAccess.Read);
            int got = RandomAccess.Read(pagemap, buf.AsSpan(0, pages * 8), (long)(addr / PageSize * 8));
            for (int i = 0; i < pages && (i * 8) + 8 <= got; i++)
            {
                present[i] = (BitConverter.ToUInt64(buf, i * 8) & PagemapBits.Present) != 0;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buf);
        }

        return present;
    }

    private MmapResult MmapLocked(ulong addr, ulong length, Prot prot, MapFlags flags, int fd, ulong offset, ulong fileSize)
    {
        ThrowIfDisposed();
        ulong len = Geometry.PageAlign(length);
        bool fixedReplace = (flags & MapFlags.Fixed) != 0 && (flags & MapFlags.FixedNoReplace) == 0;
        if (fixedReplace && len != 0 && (addr & (PageSize - 1)) == 0 && addr + len > addr)
        {
            // MAP_FIXED replaces whatever is there: refuse it over the runtime's memory. Over
            // nothing but free space, MAP_FIXED_NOREPLACE gives the same result without a window
            // in which a runtime thread could map there first.
            EnsureOwnedOrFree(addr, len, "MAP_FIXED mmap");
            var gaps = _owned.Gaps(addr, addr + len);
            if (gaps.Count == 1 && gaps[0] == (addr, addr + len))
            {
                flags = (flags & ~MapFlags.Fixed) | MapFlags.FixedNoReplace;
            }
        }

        nint p = LibC.Mmap((nint)addr, (nuint)length, (int)prot, (int)flags, fd, (nint)offset);
        if (p == LibC.MapFailed)
        {
            return new MmapResult(0, Fail());
        }

        ulong start = (ulong)p;
        if ((flags & MapFlags.FixedNoReplace) != 0 && start != addr)
        {
            // Kernels before 4.17 take MAP_FIXED_NOREPLACE as a plain hint.
            LibC.Munmap(p, (nuint)len);
            throw new KernelUnavailableException(
                $"the kernel placed a MAP_FIXED_NOREPLACE mapping at 0x{start:x}, not 0x{addr:x}: it predates Linux 4.17");
        }

        _owned.Add(start, start + len, prot);
        _beyondEof.Remove(start, start + len);
        ulong filePages = (fileSize + PageSize - 1) & ~(PageSize - 1);
        if (fd >= 0 && (flags & MapFlags.Anonymous) == 0 && offset + len > filePages)
        {
            ulong eof = offset >= filePages ? start : start + (filePages - offset);
            _beyondEof.Add(eof, start + len, Prot.None);
        }

        return new MmapResult(start, Errno.None);
    }

    /// <inheritdoc/>
    public Errno Munmap(ulong addr, ulong length)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            EnsureOwnedOrFree(addr, length, "munmap");
            if (LibC.Munmap((nint)addr, (nuint)length) != 0)
            {
                return Fail();
            }

            _owned.Remove(addr, addr + Geometry.PageAlign(length));
            _beyondEof.Remove(addr, addr + Geometry.PageAlign(length));
            return Errno.None;
        }
    }

    /// <inheritdoc/>
    public Errno Mprotect(ulong addr, ulong length, Prot prot)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            EnsureOwnedOrFree(addr, length, "mprotect");
            if (LibC.Mprotect((nint)addr, (nuint)length, (int)prot) != 0)
            {
                // ENOMEM (a hole) and EACCES (a later VMA) can come after Linux changed the VMAs
                // before them, so each part now has either the old or the new protection. Record
                // what both allow: a touch the record allows must never fault for real. Other
                // errors (EINVAL) come before any change.
                var error = Fail();
                if (error is Errno.ENOMEM or Errno.EACCES)
                {
                    _owned.RestrictProt(addr, addr + Geometry.PageAlign(length), prot);
                }

                return error;
            }

            _owned.SetProt(addr, addr + Geometry.PageAlign(length), prot);
            return Errno.None;
        }
    }

    /// <inheritdoc/>
    public Errno Madvise(ulong addr, ulong length, Advice advice)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            EnsureOwnedOrFree(addr, length, "madvise");
            return LibC.Madvise((nint)addr, (nuint)length, (int)advice) != 0 ? Fail() : Errno.None;
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The source must be the target's own memory (or free), and so must a MREMAP_FIXED
    /// destination. On success the target's record of its ranges follows the remap (the
    /// protections move with the pages; a growth takes the protection of the end it grows from),
    /// worked out without reading /proc, whose reading would make the runtime allocate in the
    /// middle of a measurement; after a MREMAP_FIXED that failed past its checks it is read again
    /// from <c>/proc/self/smaps</c>.
    /// </remarks>
    public MmapResult Mremap(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            EnsureOwnedOrFree(addr, oldLen, "mremap source");
            if ((flags & MremapFlags.Fixed) != 0)
            {
                EnsureOwnedOrFree(newAddr, newLen, "mremap destination");
            }

            var source = _owned.Ranges.Where(o => o.Start < addr + Geometry.PageAlign(oldLen) && o.End > addr).ToList();
            nint p = LibC.Mremap((nint)addr, (nuint)oldLen, (nuint)newLen, (int)flags, (nint)newAddr);
            if (p == LibC.MapFailed)
            {
                // EINVAL comes before anything changed; other errors may follow MREMAP_FIXED's
                // unmap of the destination (or a shrink of the source).
                var error = Fail();
                if (error != Errno.EINVAL && (flags & MremapFlags.Fixed) != 0)
                {
                    Resync(addr, addr + Geometry.PageAlign(oldLen));
                    Resync(newAddr, newAddr + Geometry.PageAlign(newLen));
                }

                return new MmapResult(0, error);
            }

            FollowRemap(source, addr, Geometry.PageAlign(oldLen), Geometry.PageAlign(newLen), (ulong)p, flags);
            return new MmapResult((ulong)p, Errno.None);
        }
    }

    /// <summary>
    /// Moves the record of the source pieces to where mremap put them: resized in place (the tail
    /// dropped, or grown with the protection of the last piece), or moved to
    /// <paramref name="result"/> keeping their offsets, the old range dropped unless MREMAP_DONTUNMAP.
    /// </summary>
    private void FollowRemap(List<OwnedRange> source, ulong addr, ulong oldLen, ulong newLen, ulong result, MremapFlags flags)
    {
        var last = source.Count > 0 ? source[^1].Prot : Prot.None;
        bool moved = result != addr || (flags & (MremapFlags.Fixed | MremapFlags.DontUnmap)) != 0;
        if (!moved)
        {
            if (newLen < oldLen)
            {
                _owned.Remove(addr + newLen, addr + oldLen);
            }
            else if (newLen > oldLen)
            {
                _owned.Add(addr + oldLen, addr + newLen, last);
            }

            return;
        }

        _owned.Remove(result, result + newLen);
        if ((flags & MremapFlags.DontUnmap) == 0)
        {
            _owned.Remove(addr, addr + Math.Max(oldLen, newLen));
        }

        foreach (var piece in source)
        {
            ulong from = Math.Max(piece.Start, addr) - addr, to = Math.Min(piece.End, addr + oldLen) - addr;
            if (from < Math.Min(to, newLen))
            {
                _owned.Add(result + from, result + Math.Min(to, newLen), piece.Prot);
            }
        }

        if (newLen > oldLen)
        {
            _owned.Add(result + oldLen, result + newLen, last);
        }
    }

    /// <inheritdoc/>
    public Errno Mlock(ulong addr, ulong length) => LockCall("mlock", addr, length, () => LibC.Mlock((nint)addr, (nuint)length));

    /// <inheritdoc/>
    public Errno Mlock2(ulong addr, ulong length, MlockFlags flags) =>
        LockCall("mlock2", addr, length, () => LibC.Mlock2((nint)addr, (nuint)length, (int)flags));

    /// <inheritdoc/>
    public Errno Munlock(ulong addr, ulong length) => LockCall("munlock", addr, length, () => LibC.Munlock((nint)addr, (nuint)length));

    /// <inheritdoc/>
    /// <remarks>Refused: it would lock (and populate) the host process's own memory.</remarks>
    public Errno Mlockall(MlockallFlags flags) =>
        throw new NotSupportedException("mlockall acts on every mapping of the process, the runtime's too; run it in a child process");

    /// <inheritdoc/>
    /// <remarks>Refused, as <see cref="Mlockall"/>.</remarks>
    public Errno Munlockall() =>
        throw new NotSupportedException("munlockall acts on every mapping of the process, the runtime's too; run it in a child process");

    /// <inheritdoc/>
    /// <remarks>
    /// Refused: a seal lasts as long as the process, so the target could never unmap the range
    /// again, nor could anything else this process runs. <c>ptlab fuzz kernel</c> seals inside
    /// its executor, a child process started afresh after a sequence that sealed.
    /// </remarks>
    public Errno Mseal(ulong addr, ulong length, ulong flags) =>
        throw new NotSupportedException("mseal lasts as long as the process, and this one is the runtime's; run it in a child process (ptlab fuzz kernel does)");

    /// <inheritdoc/>
    /// <remarks>Refused: the runtime's C allocator owns this process's break.</remarks>
    public ulong Brk(ulong addr) =>
        throw new NotSupportedException("brk moves the break the C library's allocator owns in this process; run it in a child process");

    /// <inheritdoc/>
    public IReadOnlyList<VmaView> Layout(ulong start, ulong end) => SmapsLayout(start, end);

    /// <inheritdoc/>
    /// <remarks>Read without allocating on the managed heap (<see cref="SmapsRss"/>), so the read adds no table of the runtime's.</remarks>
    public long AnonKbIn(ulong start, ulong end) => SmapsRss.In(start, end).Anon;

    /// <summary>The VMAs of this process that meet [start, end), with the modelled flags their smaps VmFlags name.</summary>
    private static List<VmaView> SmapsLayout(ulong start, ulong end) =>
        [.. SmapsIn(start, end).Select(v =>
            new VmaView(v.Vma.Start, v.Vma.End, v.VmFlags.Aggregate(VmFlags.None, (f, w) => f | VmaView.Mnemonics.GetValueOrDefault(w))))];

    /// <summary>The smaps records of this process's VMAs that meet [start, end).</summary>
    private static IEnumerable<Scan.SmapsVma> SmapsIn(ulong start, ulong end)
    {
        if (!Scan.ProcSmaps.TryParse(File.ReadAllText("/proc/self/smaps"), out var vmas, out string? error))
        {
            throw new FormatException($"/proc/self/smaps: {error}");
        }

        return vmas.Where(v => v.Vma.Start < end && v.Vma.End > start);
    }

    private Errno LockCall(string call, ulong addr, ulong length, Func<int> syscall)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            EnsureOwnedOrFree(addr & ~(PageSize - 1), length + (addr & (PageSize - 1)), call);
            return syscall() != 0 ? Fail() : Errno.None;
        }
    }

    /// <summary>Takes the target's record of [start, end) again from what the kernel now maps there.</summary>
    private void Resync(ulong start, ulong end)
    {
        _owned.Remove(start, end);
        foreach (var v in SmapsLayout(start, end))
        {
            var prot = ((v.Flags & VmFlags.Read) != 0 ? Prot.Read : 0) | ((v.Flags & VmFlags.Write) != 0 ? Prot.Write : 0) |
                ((v.Flags & VmFlags.Exec) != 0 ? Prot.Exec : 0);
            _owned.Add(Math.Max(v.Start, start), Math.Min(v.End, end), prot);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// A write stores 1 and a read loads, one volatile byte access at <paramref name="addr"/> and
    /// every 4 KiB after it. A page outside the target's ranges gives SEGV_MAPERR when no VMA holds
    /// it; a page whose recorded protection forbids the access gives SEGV_ACCERR without touching it
    /// (an execute-only page counts as unreadable, and gives SEGV_PKUERR where the host's
    /// execute-only key makes it so).
    /// </remarks>
    public AccessResult TouchPages(ulong addr, ulong length, bool write)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            ulong end = addr + length;
            if (end < addr)
            {
                throw new ArgumentException($"[0x{addr:x}, +0x{length:x}) wraps around the address space", nameof(length));
            }

            ulong va = addr;
            while (va < end)
            {
                if (_owned.Find(va) is not { } range)
                {
                    if (ProcMaps.AnyIn(ProcMaps.ReadSelf(), va, va + 1))
                    {
                        throw new ArgumentException(
                            $"touching 0x{va:x}: the page belongs to the host process, not to this target", nameof(addr));
                    }

                    return new AccessResult(FaultOutcome.SegvMapErr, va);
                }

                bool allowed = write ? (range.Prot & Prot.Write) != 0 : (range.Prot & (Prot.Read | Prot.Write)) != 0;
                if (!allowed)
                {
                    // What the kernel would answer: its execute-only key where it gives one.
                    return new AccessResult(range.Prot == Prot.Exec && ExecOnlyPkeyProbe.ExecOnlyPkey ? FaultOutcome.SegvPkuErr : FaultOutcome.SegvAccErr, va);
                }

                if (_beyondEof.Find(va) is not null)
                {
                    return new AccessResult(FaultOutcome.Bus, va);
                }

                ulong stop = Math.Min(end, range.End);
                if (_beyondEof.Gaps(va, stop) is [var (_, gapEnd), ..] && gapEnd < stop)
                {
                    stop = gapEnd; // stop where a part past end of file begins
                }

                if (write)
                {
                    for (; va < stop; va += PageSize)
                    {
                        Volatile.Write(ref *(byte*)va, 1);
                    }
                }
                else
                {
                    for (; va < stop; va += PageSize)
                    {
                        _ = Volatile.Read(ref *(byte*)va);
                    }
                }
            }

            return AccessResult.Success;
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <see cref="MmStatus.Tables"/> stays zero: /proc reports only the sum of all levels
    /// (<see cref="ProcStatus.TotalTables"/>).
    /// <para>
    /// With <see cref="RssScope"/> set, the RSS counters (RssAnon, RssFile, RssShmem and VmRSS) are
    /// those of the VMAs inside the scope alone, summed from <c>/proc/self/smaps</c> (<see cref="SmapsRss"/>); VmPTE and the
    /// rest stay the process's own, which /proc cannot split by range.
    /// </para>
    /// </remarks>
    public MmStatus Status()
    {
        var status = ProcStatus.ReadSelf();
        if (RssScope is not { } scope)
        {
            return status;
        }

        var (anon, file, shmem) = SmapsRss.In(scope.Start, scope.End);
        return status with { RssAnonKb = anon, RssFileKb = file, RssShmemKb = shmem, VmRssKb = anon + file + shmem };
    }

    /// <summary>
    /// A range whose RSS <see cref="Status"/> reports instead of the whole process's: the runtime
    /// shares this address space, and its heap, JIT code and thread stacks move the process-wide
    /// RSS counters by tens or hundreds of kB while a test runs. A model address space that holds
    /// only what the target maps in the scope compares with it counter for counter.
    /// </summary>
    public (ulong Start, ulong End)? RssScope { get; init; }

    /// <summary>Unmaps everything the target mapped.</summary>
    public void Dispose()
    {
        Release(throwOnFailure: true);
        GC.SuppressFinalize(this);
    }


    private void Release(bool throwOnFailure)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        lock (_lock)
        {
            foreach (var r in _owned.Ranges)
            {
                if (LibC.Munmap((nint)r.Start, (nuint)(r.End - r.Start)) != 0 && throwOnFailure)
                {
                    throw new InvalidOperationException(
                        $"munmap of the target's own range [0x{r.Start:x}, 0x{r.End:x}) failed: {LinuxErrno.Describe(Marshal.GetLastPInvokeError())}");
                }
            }

            _owned.Clear();
            _beyondEof.Clear();
            foreach (var (handle, _) in _files)
            {
                handle.Dispose();
            }

            _files.Clear();
        }
    }

    /// <summary>
    /// A temporary directory on a disk file system, for files whose pages must count as RssFile
    /// (a tmpfs or ramfs file's count as RssShmem). Throws <see cref="KernelUnavailableException"/> when there is none.
    /// </summary>
    public static string DiskBackedTempDirectory()
    {
        const long tmpfsMagic = 0x01021994, ramfsMagic = unchecked((long)0x858458f6);
        byte* buf = stackalloc byte[LibC.StatfsSize];
        foreach (string dir in new[] { Path.GetTempPath(), "/var/tmp" })
        {
            if (LibC.Statfs(dir, buf) == 0 && *(long*)buf is not (tmpfsMagic or ramfsMagic))
            {
                return dir;
            }
        }

        throw new KernelUnavailableException(
            $"no disk-backed temporary directory for test files: {Path.GetTempPath()} and /var/tmp are tmpfs or missing (set TMPDIR)");
    }

    private Errno Fail()
    {
        int raw = Marshal.GetLastPInvokeError();
        LastError = LinuxErrno.Describe(raw);
        return LinuxErrno.ToErrno(raw);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <summary>
    /// Refuses a call that would act on memory the host process mapped: every part of the page
    /// range not owned by the target must be free in /proc/self/maps. Arguments Linux rejects
    /// before acting (an unaligned address, a zero or wrapping length) pass through for Linux's answer.
    /// </summary>
    private void EnsureOwnedOrFree(ulong addr, ulong length, string call)
    {
        ulong len = Geometry.PageAlign(length);
        if ((addr & (PageSize - 1)) != 0 || len == 0 || addr + len < addr)
        {
            return;
        }

        // The common case, a call inside one range the target mapped, must not allocate: every
        // allocation can start a GC, whose decommit (MADV_DONTNEED) on a pt-reclaim kernel frees
        // page tables of the runtime's own in the middle of a measurement.
        if (_owned.Find(addr) is { } owner && owner.End >= addr + len)
        {
            return;
        }

        var gaps = _owned.Gaps(addr, addr + len);
        if (gaps.Count == 0)
        {
            return;
        }

        var maps = ProcMaps.ReadSelf();
        foreach (var (start, end) in gaps)
        {
            if (ProcMaps.AnyIn(maps, start, end))
            {
                throw new ArgumentException(
                    $"{call} of [0x{addr:x}, 0x{addr + len:x}) would reach memory the host process mapped in [0x{start:x}, 0x{end:x}); " +
                    "the kernel target acts only on its own mappings and free space",
                    nameof(addr));
            }
        }
    }
}
