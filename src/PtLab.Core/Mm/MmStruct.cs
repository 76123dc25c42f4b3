using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

/// <summary>
/// One address space (<c>mm_struct</c>): the VMAs, the 4-level page tables rooted at the PGD, the
/// locks, and the counters <c>/proc/PID/status</c> reports. Faults, zap and the system calls are
/// in the other parts of this partial class.
/// </summary>
public sealed partial class MmStruct
{
    /// <summary><c>mmap_min_addr</c>.</summary>
    public const ulong MmapMinAddr = 0x10000;

    /// <summary>
    /// <c>mmap_base</c> without address-space randomisation: TASK_SIZE less the 128 MiB minimum
    /// stack gap (<c>mmap_base()</c> clamps the 8 MiB stack rlimit plus guard gap up to 128 MiB).
    /// </summary>
    public const ulong DefaultMmapBase = Geometry.TaskSize - (128UL << 20);

    /// <summary>The default of <c>sysctl_max_map_count</c>.</summary>
    public const int DefaultMaxMapCount = 65530;

    /// <summary><c>vm.max_map_count</c>: the most VMAs an address space may hold.</summary>
    public int MaxMapCount { get; set; } = DefaultMaxMapCount;

    private readonly VmaTree _vmas = new();
    private long _nrPtes;
    private long _nrPmds;
    private long _nrPuds;
    private readonly long[] _tablesAllocated = new long[5];
    private readonly long[] _tablesFreed = new long[5];
    private long _tlbFlushes;
    private long _committedPages;
    private bool _dead;

    // mm->rss_stat and friends: per-CPU, as the kernel's percpu_counter.
    private readonly PerCpuCounter _rssAnon;
    private readonly PerCpuCounter _swapEnts;
    private readonly PerCpuCounter _faults;
    private readonly PerCpuCounter _pagesAllocated;
    private readonly PerCpuCounter _pagesFreed;

    // Whether the design's entry tracking does anything (see IPageTableReclaim.TracksEntries).
    private readonly bool _tracksEntries;
    private readonly bool _plainPteMap;

    // The design's percpu fast path of pte_tryget_map, run before its hooks (see IPageTableReclaim.PercpuPteMap).
    private readonly PercpuPteMap? _percpuMap;

    // Whether the machine has one CPU and no hooks: every taker of a split table lock is then that
    // CPU's thread (see PtlLock), and the only thing that writes a PTE without its lock is that
    // CPU's own walker setting accessed and dirty bits, on the thread that holds the lock, so a
    // clear under the lock needs no locked exchange (see LocalGetAndClear).
    private readonly bool _uniprocessor;

    /// <summary>The id of <paramref name="anonVma"/> in the page descriptors' rmap word, kept on the anon_vma after its first use.</summary>
    internal int AnonOwnerId(AnonVma anonVma)
    {
        int id = Volatile.Read(ref anonVma.RmapOwnerId);
        if (id == 0)
        {
            id = Phys.OwnerId(anonVma);
            Volatile.Write(ref anonVma.RmapOwnerId, id);
        }

        return id;
    }

    /// <summary>This address space's id in the page descriptors' rmap word.</summary>
    internal int OwnerId { get; }

    /// <summary>Whether a fault fills the faulting CPU's TLB (<see cref="UpdateMmuCache"/>): without a scheduler plugged in.</summary>
    private readonly bool _preloadTlb;

    internal MmStruct(Machine machine, IPageTableReclaim design)
    {
        Machine = machine;
        Phys = machine.Phys;
        Rcu = machine.Rcu;
        Design = design;
        OwnerId = Phys.RegisterOwner(this);
        _tracksEntries = design.TracksEntries;
        _plainPteMap = design.PlainPteMap;
        _percpuMap = design.PercpuPteMap;
        _uniprocessor = machine.Sync.IsUniprocessor;
        _preloadTlb = machine.Sync.Scheduler is null;
        int cpus = machine.Options.Cpus;
        MmapLock = new RwSemaphore(machine.Sync, LockClass.MmapLock) { BiasedTo = _uniprocessor ? 0 : -1 };
        RmapLock = new RwSemaphore(machine.Sync, AnonVmaLockClass);
        PageTableLock = new SpinLockObject(machine.Sync, LockClass.PageTableLock);
        _rssAnon = new PerCpuCounter(cpus);
        _rssFile = new PerCpuCounter(cpus);
        _rssShmem = new PerCpuCounter(cpus);
        _swapEnts = new PerCpuCounter(cpus);
        _faults = new PerCpuCounter(cpus);
        _pagesAllocated = new PerCpuCounter(cpus);
        _pagesFreed = new PerCpuCounter(cpus);
        PgdPfn = Phys.AllocTable(4);
        if (PgdPfn < 0)
        {
            throw new InvalidOperationException("no memory for the PGD of a new address space");
        }
    }

    /// <summary>The machine this address space lives on.</summary>
    public Machine Machine { get; }

    /// <summary>Physical memory.</summary>
    public PhysMemory Phys { get; }

    /// <summary>RCU.</summary>
    public Rcu Rcu { get; }

    /// <summary>The page-table reclaim design in force.</summary>
    public IPageTableReclaim Design { get; }

    /// <summary><c>mmap_lock</c>.</summary>
    public RwSemaphore MmapLock { get; }

    /// <summary>
    /// Stands for the anon_vma locks: the rmap walk of reclaim holds it for read, and
    /// <c>free_pgtables</c> for write, so reclaim never walks a table munmap or exit is freeing.
    /// </summary>
    public RwSemaphore RmapLock { get; }

    /// <summary><c>page_table_lock</c>: guards populating PGD and PUD entries.</summary>
    public SpinLockObject PageTableLock { get; }

    /// <summary>The lock class of <see cref="RmapLock"/>, between mmap_lock and the page-table locks.</summary>
    public static LockClass AnonVmaLockClass { get; } = new("anon_vma", LockKind.Sleeping);

    /// <summary>The PGD's frame (<c>mm-&gt;pgd</c>).</summary>
    public long PgdPfn { get; }

    /// <summary>Where top-down placement starts (<c>mm-&gt;mmap_base</c>).</summary>
    public ulong MmapBase { get; internal set; } = DefaultMmapBase;

    /// <summary>
    /// Sets <c>mm-&gt;mmap_base</c>, which exec randomises (<c>arch_pick_mmap_layout</c>): a replay
    /// gives the address space the recorded process's base, so that the model's own top-down
    /// placement lands where the kernel's did. The address is rounded down to a page.
    /// </summary>
    public void SetMmapBase(Cpu cpu, ulong mmapBase)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        mmapBase &= Geometry.PageMask;
        if (mmapBase <= MmapMinAddr || mmapBase > Geometry.TaskSize)
        {
            throw new ArgumentOutOfRangeException(nameof(mmapBase), $"0x{mmapBase:x} is outside user space");
        }

        MmapLock.DownWrite(cpu.Id);
        MmapBase = mmapBase;
        MmapLock.UpWrite(cpu.Id);
    }

    /// <summary>A snapshot of the VMAs, in address order. Callers that need a stable view hold <see cref="MmapLock"/>.</summary>
    public IReadOnlyList<Vma> Vmas => _vmas.Snapshot();

    /// <summary>The counters and figures of <c>/proc/PID/status</c>.</summary>
    public MmStatus Status()
    {
        ulong vmSize = _vmas.TotalBytes;
        long anon = _rssAnon.Sum() * 4, file = _rssFile.Sum() * 4, shmem = _rssShmem.Sum() * 4;
        var tables = new TableCounts(Volatile.Read(ref _nrPtes), Volatile.Read(ref _nrPmds), Volatile.Read(ref _nrPuds));
        return new MmStatus(
            VmSizeKb: (long)(vmSize >> 10),
            VmRssKb: anon + file + shmem,
            RssAnonKb: anon,
            RssFileKb: file,
            RssShmemKb: shmem,
            VmSwapKb: _swapEnts.Sum() * 4,
            VmPteKb: (tables.Pte + tables.Pmd + tables.Pud) * 4,
            Tables: tables)
        {
            VmLckKb = LockedVmKb,
        };
    }

    /// <summary>Event counters since the address space was created.</summary>
    public MmCounters Counters() => new(
        Faults: _faults.Sum(),
        PteTablesAllocated: Volatile.Read(ref _tablesAllocated[1]),
        PteTablesFreed: Volatile.Read(ref _tablesFreed[1]),
        PmdTablesAllocated: Volatile.Read(ref _tablesAllocated[2]),
        PmdTablesFreed: Volatile.Read(ref _tablesFreed[2]),
        PudTablesAllocated: Volatile.Read(ref _tablesAllocated[3]),
        PudTablesFreed: Volatile.Read(ref _tablesFreed[3]),
        TlbFlushes: Volatile.Read(ref _tlbFlushes),
        PagesAllocated: _pagesAllocated.Sum(),
        PagesFreed: _pagesFreed.Sum(),
        GracePeriods: Rcu.GracePeriods);

    internal void AddRssAnon(Cpu? cpu, long pages) => _rssAnon.Add(cpu?.Id ?? -1, pages);

    internal void AddSwapEnts(Cpu? cpu, long entries) => _swapEnts.Add(cpu?.Id ?? -1, entries);

    internal void CountPageAllocated(Cpu? cpu) => _pagesAllocated.Add(cpu?.Id ?? -1, 1);

    internal void CountPageFreed(Cpu? cpu, long n) => _pagesFreed.Add(cpu?.Id ?? -1, n);

    internal void CountFault(Cpu cpu)
    {
        _faults.Add(cpu.Id, 1);
        Machine.Sync.Profile?.Count(cpu.Id, ProfileOp.Fault);
    }

    /// <summary><c>mm_inc_nr_ptes</c> / <c>mm_inc_nr_pmds</c> / <c>mm_inc_nr_puds</c>.</summary>
    internal void IncTables(int level)
    {
        Interlocked.Increment(ref TableCounter(level));
        Interlocked.Increment(ref _tablesAllocated[level]);
    }

    /// <summary><c>mm_dec_nr_ptes</c> and friends: the table left the page tables (freeing may be deferred).</summary>
    internal void DecTables(int level)
    {
        if (Interlocked.Decrement(ref TableCounter(level)) < 0)
        {
            throw new BadPageException($"level-{level} table count went negative");
        }

        Interlocked.Increment(ref _tablesFreed[level]);
    }

    private ref long TableCounter(int level)
    {
        switch (level)
        {
            case 1: return ref _nrPtes;
            case 2: return ref _nrPmds;
            case 3: return ref _nrPuds;
            default: throw new ArgumentOutOfRangeException(nameof(level), level, "only PTE, PMD and PUD tables are counted");
        }
    }

    /// <summary><c>flush_tlb_range</c>: flushes every CPU this address space runs on.</summary>
    public void FlushTlbRange(ulong start, ulong end) => FlushTlbRange(null, start, end);

    /// <summary>
    /// <c>flush_tlb_range</c> issued by <paramref name="cpu"/>, which the lock checker sees take each
    /// TLB's lock: leaf entries and the paging-structure cache entries for the range.
    /// </summary>
    public void FlushTlbRange(Cpu? cpu, ulong start, ulong end) => FlushTlbRange(cpu, start, end, lastLevel: false);

    /// <summary>
    /// The <c>mmu_gather</c>'s <c>tlb_flush</c>: last-level only unless the gather freed tables
    /// (<c>tlb-&gt;freed_tables</c>), when the paging-structure caches for the range go too.
    /// </summary>
    internal void TlbFlushMmu(Cpu? cpu, ulong start, ulong end, bool freedTables) => FlushTlbRange(cpu, start, end, lastLevel: !freedTables);

    private void FlushTlbRange(Cpu? cpu, ulong start, ulong end, bool lastLevel)
    {
        if (end <= start)
        {
            return;
        }

        Interlocked.Increment(ref _tlbFlushes);
        foreach (var target in Machine.Cpus)
        {
            if (ReferenceEquals(target.Mm, this))
            {
                target.Tlb.FlushRange(Machine.Sync, cpu?.Id ?? -1, start, end, lastLevel);
            }
        }
    }

    /// <summary>
    /// Walks the upper levels without allocating: the PMD table and index covering
    /// <paramref name="addr"/>, or -1 when a PGD or PUD entry is none. Caller holds <c>mmap_lock</c>.
    /// </summary>
    internal long PmdTableOf(ulong addr)
    {
        ulong pgde = Volatile.Read(ref Phys.Table(PgdPfn)[Geometry.Index(addr, 4)]);
        if (Entry.IsNone(pgde))
        {
            return -1;
        }

        ulong pude = Volatile.Read(ref Phys.Table(Entry.Pfn(pgde))[Geometry.Index(addr, 3)]);
        if (Entry.IsNone(pude) || Entry.IsHuge(pude))
        {
            return -1;
        }

        return Entry.Pfn(pude);
    }

    /// <summary>The leaf entry mapping <paramref name="addr"/>, or 0 (for tests and reports; no locks taken).</summary>
    public ulong PeekPte(ulong addr)
    {
        long pmdTable = PmdTableOf(addr);
        if (pmdTable < 0)
        {
            return 0;
        }

        ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[Geometry.Index(addr, 2)]);
        if (Entry.IsNone(pmd))
        {
            return 0;
        }

        if (Entry.IsHuge(pmd))
        {
            // The 4 KiB entry the leaf stands for; the huge zero page's is special, as the small one's.
            return Entry.HugeSubPte(pmd, addr) | (Entry.Pfn(pmd) == Phys.HugeZeroPfn ? Entry.Special : 0);
        }

        return Volatile.Read(ref Phys.Table(Entry.Pfn(pmd))[Geometry.PteIndex(addr)]);
    }

    /// <summary>The pmd and PTE entries for an address, and the PTE table's state, for diagnostics.</summary>
    internal string DescribeTranslation(ulong addr)
    {
        long pmdTable = PmdTableOf(addr);
        if (pmdTable < 0)
        {
            return "no PMD table";
        }

        ulong pmd = Volatile.Read(ref Phys.Table(pmdTable)[Geometry.Index(addr, 2)]);
        if (Entry.IsNone(pmd))
        {
            return "pmd none";
        }

        if (Entry.IsHuge(pmd))
        {
            return $"huge pmd {pmd:x}";
        }

        long pteTable = Entry.Pfn(pmd);
        ref var d = ref Phys.Desc(pteTable);
        return $"pmd {pmd:x}, PTE table {pteTable:x} flags {(PageFlags)d.Flags} {Phys.TableState(pteTable)?.ToString() ?? "no table state"}, pte {PeekPte(addr):x}";
    }

    /// <summary>Counts the tables reachable from the PGD, per level, deposited ones included (to check VmPTE against).</summary>
    public TableCounts CountTablesPresent()
    {
        long ptes = 0, pmds = 0, puds = 0;
        var pgd = Phys.Table(PgdPfn);
        for (int i = 0; i < PhysMemory.EntriesPerTable; i++)
        {
            ulong e = Volatile.Read(ref pgd[i]);
            if (Entry.IsNone(e))
            {
                continue;
            }

            puds++;
            var pud = Phys.Table(Entry.Pfn(e));
            for (int j = 0; j < PhysMemory.EntriesPerTable; j++)
            {
                ulong pe = Volatile.Read(ref pud[j]);
                if (Entry.IsNone(pe))
                {
                    continue;
                }

                pmds++;
                var pmd = Phys.Table(Entry.Pfn(pe));
                for (int k = 0; k < PhysMemory.EntriesPerTable; k++)
                {
                    ulong me = Volatile.Read(ref pmd[k]);
                    if (!Entry.IsNone(me) && !Entry.IsHuge(me))
                    {
                        ptes++;
                    }
                }
            }
        }

        // Each PMD leaf keeps a deposited PTE table beside it: counted in VmPTE, reachable through its PMD table.
        return new TableCounts(ptes + DepositedTables, pmds, puds);
    }
}

/// <summary>Page-table pages per level (the PGD is not counted, as in VmPTE).</summary>
/// <param name="Pte">PTE tables (each maps 2 MiB).</param>
/// <param name="Pmd">PMD tables (each maps 1 GiB).</param>
/// <param name="Pud">PUD tables (each maps 512 GiB).</param>
public readonly record struct TableCounts(long Pte, long Pmd, long Pud);

/// <summary>What <c>/proc/PID/status</c> reports for an address space. All sizes in kB.</summary>
/// <param name="VmSizeKb">Total size of all VMAs.</param>
/// <param name="VmRssKb">RssAnon + RssFile + RssShmem.</param>
/// <param name="RssAnonKb">Resident anonymous memory.</param>
/// <param name="RssFileKb">Resident file mappings.</param>
/// <param name="RssShmemKb">Resident shared memory.</param>
/// <param name="VmSwapKb">Swap entries.</param>
/// <param name="VmPteKb"><c>mm-&gt;pgtables_bytes</c>: PTE, PMD and PUD tables.</param>
/// <param name="Tables">Tables per level.</param>
public readonly record struct MmStatus(
    long VmSizeKb, long VmRssKb, long RssAnonKb, long RssFileKb, long RssShmemKb, long VmSwapKb, long VmPteKb, TableCounts Tables)
{
    /// <summary>VmLck: <c>mm-&gt;locked_vm</c>, memory in VM_LOCKED VMAs, in kB.</summary>
    public long VmLckKb { get; init; }
}

/// <summary>Event counters of an address space.</summary>
/// <param name="Faults">Page faults handled (<c>handle_mm_fault</c> calls).</param>
/// <param name="PteTablesAllocated">PTE tables installed.</param>
/// <param name="PteTablesFreed">PTE tables removed.</param>
/// <param name="PmdTablesAllocated">PMD tables installed.</param>
/// <param name="PmdTablesFreed">PMD tables removed.</param>
/// <param name="PudTablesAllocated">PUD tables installed.</param>
/// <param name="PudTablesFreed">PUD tables removed.</param>
/// <param name="TlbFlushes">Range flushes issued (each reaches every CPU running the mm).</param>
/// <param name="PagesAllocated">User pages allocated.</param>
/// <param name="PagesFreed">User pages freed.</param>
/// <param name="GracePeriods">RCU grace periods completed on the machine.</param>
public readonly record struct MmCounters(
    long Faults, long PteTablesAllocated, long PteTablesFreed, long PmdTablesAllocated, long PmdTablesFreed,
    long PudTablesAllocated, long PudTablesFreed, long TlbFlushes, long PagesAllocated, long PagesFreed, long GracePeriods);
