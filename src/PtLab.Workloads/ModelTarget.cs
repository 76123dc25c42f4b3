using PtLab.Mm;

namespace PtLab.Workloads;

/// <summary>The model as a <see cref="IMemoryTarget"/>: one address space on a fresh machine, driven by CPU 0.</summary>
public sealed class ModelTarget : IMemoryTarget
{
    private bool _exited;

    /// <summary>Creates a machine and an address space on it.</summary>
    public ModelTarget(MachineOptions options)
    {
        Machine = new Machine(options);
        Mm = Machine.CreateAddressSpace();
        Cpu = Machine.Cpus[0];
        Name = "model:" + Mm.Design.Name;
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
    public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags) => Mm.Mmap(Cpu, addr, length, prot, flags);

    /// <inheritdoc/>
    public Errno Munmap(ulong addr, ulong length) => Mm.Munmap(Cpu, addr, length);

    /// <inheritdoc/>
    public Errno Mprotect(ulong addr, ulong length, Prot prot) => Mm.Mprotect(Cpu, addr, length, prot);

    /// <inheritdoc/>
    public Errno Madvise(ulong addr, ulong length, Advice advice) => Mm.Madvise(Cpu, addr, length, advice);

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
    public MmStatus Status() => Mm.Status();

    /// <summary>Tears the address space down (exit_mmap).</summary>
    public void Dispose()
    {
        if (!_exited)
        {
            _exited = true;
            Mm.Exit(Cpu);
        }
    }
}
