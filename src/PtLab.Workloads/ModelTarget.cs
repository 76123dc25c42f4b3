using PtLab.Mm;
using PtLab.Phys;

namespace PtLab.Workloads;

/// <summary>
/// The model as a <see cref="IMemoryTarget"/>: one address space on a fresh machine, driven by CPU 0;
/// <see cref="OnCpu"/> gives views driven by the machine's other CPUs.
/// </summary>
public sealed class ModelTarget : IMultiCpuTarget, IDataTarget, IFileTarget
{
    private readonly bool _isView;
    private readonly List<SimFile> _files;
    private bool _exited;

    /// <summary>Creates a machine and an address space on it.</summary>
    public ModelTarget(MachineOptions options)
    {
        Machine = new Machine(options);
        Mm = Machine.CreateAddressSpace();
        Cpu = Machine.Cpus[0];
        Name = "model:" + Mm.Design.Name;
        _files = [];
    }

    private ModelTarget(ModelTarget owner, Cpu cpu)
    {
        Machine = owner.Machine;
        Mm = owner.Mm;
        Cpu = cpu;
        Name = owner.Name;
        _files = owner._files;
        _isView = true;
    }

    /// <inheritdoc/>
    public string Name { get; }

    /// <summary>The simulated machine.</summary>
    public Machine Machine { get; }

    /// <summary>The address space.</summary>
    public MmStruct Mm { get; }

    /// <summary>The CPU the scenario runs on.</summary>
    public Cpu Cpu { get; }

    /// <inheritdoc/>
    public int CpuCount => Machine.Cpus.Count;

    /// <inheritdoc/>
    public IMemoryTarget OnCpu(int cpu)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(cpu);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(cpu, CpuCount);
        return new ModelTarget(this, Machine.Cpus[cpu]);
    }

    /// <inheritdoc/>
    public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags) => Mm.Mmap(Cpu, addr, length, prot, flags);

    /// <inheritdoc/>
    public Errno Munmap(ulong addr, ulong length) => Mm.Munmap(Cpu, addr, length);

    /// <inheritdoc/>
    public Errno Mprotect(ulong addr, ulong length, Prot prot) => Mm.Mprotect(Cpu, addr, length, prot);

    /// <inheritdoc/>
    public Errno Madvise(ulong addr, ulong length, Advice advice) => Mm.Madvise(Cpu, addr, length, advice);

    /// <inheritdoc/>
    public MmapResult Mremap(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr) =>
        Mm.Mremap(Cpu, addr, oldLen, newLen, flags, newAddr);

    /// <inheritdoc/>
    public Errno Mlock(ulong addr, ulong length) => Mm.Mlock(Cpu, addr, length);

    /// <inheritdoc/>
    public Errno Mlock2(ulong addr, ulong length, MlockFlags flags) => Mm.Mlock2(Cpu, addr, length, flags);

    /// <inheritdoc/>
    public Errno Munlock(ulong addr, ulong length) => Mm.Munlock(Cpu, addr, length);

    /// <inheritdoc/>
    public Errno Mlockall(MlockallFlags flags) => Mm.Mlockall(Cpu, flags);

    /// <inheritdoc/>
    public Errno Munlockall() => Mm.Munlockall(Cpu);

    /// <inheritdoc/>
    public ulong Brk(ulong addr) => Mm.Brk(Cpu, addr);

    /// <inheritdoc/>
    public Errno Mseal(ulong addr, ulong length, ulong flags) => Mm.Mseal(Cpu, addr, length, flags);

    /// <inheritdoc/>
    public IReadOnlyList<VmaView> Layout(ulong start, ulong end) =>
        [.. Mm.Vmas.Where(v => v.Start < end && v.End > start).Select(v => new VmaView(v.Start, v.End, v.Flags & VmaView.Modelled))];

    /// <inheritdoc/>
    public long AnonKbIn(ulong start, ulong end) => Mm.Smaps(Cpu).Where(v => v.Start < end && v.End > start).Sum(v => v.AnonymousKb);

    /// <inheritdoc/>
    public AccessResult TouchPages(ulong addr, ulong length, bool write)
    {
        ulong end = addr + length;
        for (ulong va = addr; va < end; va += Paging.Geometry.PageSize)
        {
            var r = write ? Cpu.Touch(va) : Cpu.ReadByte(va, out _);
            if (!r.Ok)
            {
                return r;
            }
        }

        return AccessResult.Success;
    }

    /// <inheritdoc/>
    public AccessResult WriteByte(ulong va, byte value) => Cpu.Touch(va, value);

    /// <inheritdoc/>
    /// <remarks>With page data the fingerprint is the byte at <paramref name="va"/>; without, the page's content token.</remarks>
    public AccessResult Fingerprint(ulong va, out ulong fingerprint)
    {
        if (Machine.Options.PageData)
        {
            var r = Cpu.ReadByte(va, out byte b);
            fingerprint = b;
            return r;
        }

        return Cpu.ReadToken(va, out fingerprint);
    }

    /// <inheritdoc/>
    public ulong FingerprintAfterWrite(ulong previous, ulong va, byte value) =>
        Machine.Options.PageData ? value : ContentToken.AfterWrite(previous, (int)(va & (Paging.Geometry.PageSize - 1)), [value]);

    /// <inheritdoc/>
    /// <remarks>A model file: identity (1, handle + 1), every page brought into the page cache.</remarks>
    public int CreateFile(ulong size)
    {
        lock (_files)
        {
            var f = Machine.Files.GetOrCreate(new FileId(1, (ulong)_files.Count + 1), size);
            if (!f.Populate(0, size))
            {
                throw new ScenarioException($"no memory to bring a {size}-byte file into the model's page cache");
            }

            _files.Add(f);
            return _files.Count - 1;
        }
    }

    /// <inheritdoc/>
    public MmapResult MmapFile(ulong addr, ulong length, Prot prot, MapFlags flags, int file, ulong offset)
    {
        SimFile f;
        lock (_files)
        {
            f = _files[file];
        }

        return Mm.Mmap(Cpu, addr, length, prot, flags, f, offset);
    }

    /// <inheritdoc/>
    public void ReadFile(int file, ulong offset, ulong length)
    {
        SimFile f;
        lock (_files)
        {
            f = _files[file];
        }

        for (ulong done = 0; done < length; done += IFileTarget.ReadChunk)
        {
            if (!f.Read(offset + done, Math.Min(IFileTarget.ReadChunk, length - done), Cpu.Id))
            {
                throw new ScenarioException($"no memory to read {length} bytes of a file into the model's page cache");
            }
        }
    }

    /// <inheritdoc/>
    public void DropFileCache(int file)
    {
        lock (_files)
        {
            _files[file].Sync(); // fdatasync, then POSIX_FADV_DONTNEED drops the clean pages
            _files[file].DropCache();
        }
    }

    /// <inheritdoc/>
    public bool[] PresentPages(ulong addr, int pages)
    {
        var present = new bool[pages];
        for (int i = 0; i < pages; i++)
        {
            present[i] = Paging.Entry.IsPresent(Mm.PeekPte(addr + ((ulong)i * Paging.Geometry.PageSize)));
        }

        return present;
    }

    /// <inheritdoc/>
    public ulong[] Pagemap(ulong addr, int pages) => Mm.Pagemap(Cpu, addr, addr + ((ulong)pages * Paging.Geometry.PageSize));

    /// <inheritdoc/>
    public MmStatus Status() => Mm.Status();

    /// <summary>Tears the address space down (exit_mmap); a per-CPU view does nothing.</summary>
    public void Dispose()
    {
        if (!_isView && !_exited)
        {
            _exited = true;
            Mm.Exit(Cpu);
        }
    }
}
