using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

/// <summary>Options for a simulated machine.</summary>
public sealed record MachineOptions
{
    /// <summary>Simulated CPUs.</summary>
    public int Cpus { get; init; } = 1;

    /// <summary>RAM in bytes.</summary>
    public long RamBytes { get; init; } = 24L << 30;

    /// <summary>Keep real page bytes (true) or a 64-bit content token per page (false).</summary>
    public bool PageData { get; init; } = true;

    /// <summary>Swap device size in bytes; 0 for none (the default, like the measured machine).</summary>
    public long SwapBytes { get; init; }

    /// <summary>
    /// Whether the swap device is a block device, whose cluster allocator gives a PMD-sized folio
    /// 512 slots of one free cluster, so reclaim writes a huge page out whole (<c>thp_swpout</c>);
    /// false (the default) for a swap file, where 6.18 falls back to splitting it
    /// (<c>thp_swpout_fallback</c>), as measured.
    /// </summary>
    public bool SwapBlockDevice { get; init; }

    /// <summary>
    /// <c>read_ahead_kb</c> of the device regular files live on: the mmap read-around window a
    /// cold file fault reads in (128, the kernel's default; 0 for none).
    /// </summary>
    public int ReadAheadKb { get; init; } = 128;

    /// <summary>A deterministic scheduler to plug into every scheduling point, or null for OS scheduling.</summary>
    public ISchedulingPoint? Scheduler { get; init; }

    /// <summary>Count operations per CPU (faults, shared atomics, locks, tables zeroed): <see cref="SyncHooks.Profile"/>.</summary>
    public bool Profile { get; init; }

    /// <summary>Check lock order and sleeping in atomic context (lockdep-lite); on in tests.</summary>
    public bool LockDep { get; init; }

    /// <summary>
    /// Model each CPU's paging-structure caches (the PML4E, PDPTE and PDE caches a walk fills and
    /// starts from), so that a table freed without the flush that drops them is caught. Off by
    /// default: a workload run does not pay the lookup per walk; the checkers turn it on.
    /// </summary>
    public bool PagingStructureCaches { get; init; }

    /// <summary>The transparent huge page mode (the host's <c>/sys/kernel/mm/transparent_hugepage/</c>).</summary>
    public ThpSettings Thp { get; init; } = ThpSettings.Default;

    /// <summary>
    /// Whether a read fault on private anonymous memory maps the shared zero page (4 KiB, or the
    /// huge zero page where <see cref="ThpSettings.UseZeroPage"/>): true as the kernel ships. False
    /// models a host whose fault path takes a private zeroed page instead, as a write fault does,
    /// as measured on the host by <c>KernelInfo.Probe</c> and recorded in a trace's host facts.
    /// Only the fault path changes: a huge page split still maps its zero-filled subpages to the
    /// zero page, as such a host was measured to do.
    /// </summary>
    public bool ZeroPage { get; init; } = true;

    /// <summary>
    /// The host's hugetlb page sizes, the default one first, and how many pages of each a
    /// reservation may take (<see cref="HugetlbPool"/>): what a <c>MAP_HUGETLB</c> mmap is checked
    /// against. The model maps no hugetlb memory: a call that the kernel would refuse is refused
    /// with the kernel's errno; one it would grant is reported as not modelled
    /// (<see cref="MmapResult.NotModelled"/>). By default 2 MiB and 1 GiB, both empty
    /// (<see cref="HugetlbPool.Empty"/>).
    /// </summary>
    public IReadOnlyList<HugetlbPool> HugetlbPools { get; init; } = HugetlbPool.Empty;

    /// <summary>
    /// Whether the host gives PROT_EXEC-only mappings an execute-only protection key, as x86 Linux
    /// does on a CPU with protection keys enabled (<c>ospke</c> in <c>/proc/cpuinfo</c>): mmap and
    /// mprotect with exactly PROT_EXEC tag the VMA with a key whose PKRU bits deny data access
    /// (<see cref="VmFlags.PkeyExecOnly"/>), so
    /// a user read or write there is SIGSEGV with <c>SEGV_PKUERR</c> instead of a fault served (a
    /// read) or <c>SEGV_ACCERR</c> (a write), and <c>get_user_pages</c> from the process itself
    /// fails there (<c>arch_vma_access_permitted</c>): mlock returns ENOMEM and MAP_POPULATE
    /// leaves such a VMA empty. False (a CPU without protection keys) by default.
    /// </summary>
    public bool ExecOnlyPkey { get; init; }

    /// <summary>
    /// Creates the page-table reclaim design for each address space. Required: a machine runs one
    /// design, built by name with <c>Designs.Factory</c> in the layer above.
    /// </summary>
    public required Func<IPageTableReclaim> Design { get; init; }
}

/// <summary>
/// One simulated machine: physical memory, RCU, and the CPUs. Everything is per instance, so many
/// machines can live in one process.
/// </summary>
public sealed partial class Machine
{
    private readonly Cpu[] _cpus;
    private readonly List<MmStruct> _mms = [];

    /// <summary>Creates a machine.</summary>
    public Machine(MachineOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Options = options;
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.Cpus, 1);
        Phys = new PhysMemory(Options.RamBytes, Options.PageData);
        if (Options.SwapBytes > 0)
        {
            Phys.Swap = new SwapDevice(Phys, Options.SwapBytes) { LargeFolios = Options.SwapBlockDevice };
        }
        Sync = new SyncHooks(Options.Cpus, Options.Scheduler, Options.LockDep, profile: Options.Profile);
        Phys.Profile = Sync.Profile;
        Phys.EnablePerCpuLists(Options.Cpus, ownerBiased: Sync.IsUniprocessor);
        Rcu = new Rcu(Options.Cpus, Sync);
        Vmscan = new Vmscan(this);
        Phys.Reclaim = Vmscan.Reclaim;
        _cpus = new Cpu[Options.Cpus];
        for (int i = 0; i < _cpus.Length; i++)
        {
            _cpus[i] = new Cpu(this, i);
        }
    }

    /// <summary>The options it was built with.</summary>
    public MachineOptions Options { get; }

    /// <summary>Physical memory.</summary>
    public PhysMemory Phys { get; }

    /// <summary>RCU.</summary>
    public Rcu Rcu { get; }

    /// <summary>The scheduling-point hook and lock checker every primitive of this machine reports to.</summary>
    public SyncHooks Sync { get; }

    /// <summary>Page reclaim.</summary>
    internal Vmscan Vmscan { get; }

    /// <summary>Reclaim figures: pages scanned, lazy-free pages discarded, redirtied, and kept as referenced.</summary>
    public (long Scanned, long Discarded, long Redirtied, long Referenced) ReclaimStats =>
        (Vmscan.Scanned, Vmscan.Discarded, Vmscan.Redirtied, Vmscan.Referenced);

    /// <summary>Anonymous pages reclaim wrote to swap.</summary>
    public long SwappedOut => Vmscan.SwappedOut;

    /// <summary>
    /// Huge pages written to swap whole (<c>thp_swpout</c>), and huge pages split because no huge
    /// swap slot could be had (<c>thp_swpout_fallback</c>).
    /// </summary>
    public (long SwpOut, long SwpOutFallback) ThpSwapStats => (Vmscan.ThpSwpOut, Vmscan.ThpSwpOutFallback);

    /// <summary>The CPUs.</summary>
    public IReadOnlyList<Cpu> Cpus => _cpus;

    /// <summary>Address spaces created on this machine and not yet torn down.</summary>
    public IReadOnlyList<MmStruct> AddressSpaces
    {
        get
        {
            lock (_mms)
            {
                return [.. _mms];
            }
        }
    }

    /// <summary>Creates an address space (<c>mm_alloc</c>) and makes it current on every CPU.</summary>
    public MmStruct CreateAddressSpace()
    {
        var mm = NewAddressSpace();
        foreach (var cpu in _cpus)
        {
            cpu.SwitchMm(mm);
        }

        return mm;
    }

    /// <summary><c>mm_alloc</c>: a new empty address space, registered but current on no CPU.</summary>
    internal MmStruct NewAddressSpace(ulong mmapBase = MmStruct.DefaultMmapBase)
    {
        var mm = new MmStruct(this, Options.Design()) { MmapBase = mmapBase };
        lock (_mms)
        {
            _mms.Add(mm);
        }

        return mm;
    }

    internal void Forget(MmStruct mm)
    {
        lock (_mms)
        {
            _mms.Remove(mm);
        }
    }
}
