using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

/// <summary>
/// A simulated CPU: an id, a TLB, and the memory access path a workload uses. Accesses try the
/// TLB, then walk the tables in an RCU read section as hardware would, then take a page fault.
/// A CPU is driven by one thread at a time.
/// </summary>
public sealed class Cpu
{
    // A fault that returns without progress is retried, as hardware re-executes the access. A
    // racing table free can make that take a while when its freer is descheduled, so the bound
    // is time, generous enough that only a real livelock trips it.
    private static readonly TimeSpan s_livelockBound = TimeSpan.FromSeconds(20);

    private readonly Machine _machine;
    private readonly HardwareWalker _walker;
    private MmStruct? _mm;
    private long _faults;

    /// <summary>
    /// The PTE table this CPU last mapped through a design that counts its visitors, and that
    /// table's <c>pte_ref</c>: a cache the design fills in <c>pte_tryget_map</c> and reads in the
    /// <c>track_pte_set</c> and <c>pte_unmap</c> that follow on this CPU, so one fault looks the
    /// ref up once. A table's ref never changes while the table lives, so an entry is right for
    /// any reference that names the same frame and generation of a table still live; it is only
    /// ever written and read by the thread driving this CPU.
    /// </summary>
    internal TableRef MappedTable = TableRef.None;

    /// <summary>The <c>pte_ref</c> of <see cref="MappedTable"/>.</summary>
    internal PercpuRef? MappedRef;

    /// <summary>
    /// The table store's layout epoch read before <see cref="MappedTable"/> was looked up: while it
    /// still reads this, no table was freed since, so a pmd entry naming the same frame names the
    /// same table (see <c>PteRefReclaim</c>'s <c>pte_tryget_map</c>).
    /// </summary>
    internal long MappedEpoch = -1;

    /// <summary>
    /// An empty page batch for the next <see cref="MmuGather"/> made on this CPU: a gather takes it
    /// with an exchange, so only one gather ever holds it, and gives it back at its finish.
    /// </summary>
    internal List<long>? SpareGatherPages;

    /// <summary>The address space of <see cref="VmaCacheVma"/> (see <see cref="MmStruct.FindVma(Cpu, ulong)"/>).</summary>
    internal MmStruct? VmaCacheMm;

    /// <summary>The VMA this CPU's last fault found, or null.</summary>
    internal Vma? VmaCacheVma;

    /// <summary>The VMA tree's change count when <see cref="VmaCacheVma"/> was cached.</summary>
    internal long VmaCacheSeq;

    internal Cpu(Machine machine, int id)
    {
        _machine = machine;
        Id = id;
        Tlb = new Tlb
        {
            Owner = id,
            Psc = machine.Options.PagingStructureCaches ? new PagingStructureCache() : null,
            OwnerBiased = machine.Sync.IsUniprocessor,
        };
        _walker = new HardwareWalker(machine.Phys, machine.Rcu, Tlb, id, TableCache);
    }

    /// <summary>The machine this CPU belongs to.</summary>
    public Machine Machine => _machine;

    /// <summary>The CPU number.</summary>
    public int Id { get; }

    /// <summary>Where this CPU last found the entries it read at each table level (a host-side shortcut; see <see cref="TableEntryCache"/>).</summary>
    internal TableEntryCache TableCache { get; } = new();

    /// <summary>This CPU's TLB.</summary>
    public Tlb Tlb { get; }

    /// <summary>The address space running on this CPU (<c>current-&gt;mm</c>).</summary>
    public MmStruct? Mm => Volatile.Read(ref _mm);

    /// <summary>Page faults taken by this CPU.</summary>
    public long Faults => Volatile.Read(ref _faults);

    /// <summary>Switches to another address space, flushing the TLB (no ASIDs modelled).</summary>
    public void SwitchMm(MmStruct? mm) => SwitchMm(mm, this);

    /// <summary>
    /// Switches this CPU to another address space at the request of <paramref name="by"/> (exit takes
    /// its address space off every CPU). The flush takes the TLB lock as any flush does, a
    /// scheduling point, since another CPU may be holding it to flush this TLB.
    /// </summary>
    internal void SwitchMm(MmStruct? mm, Cpu by)
    {
        Volatile.Write(ref _mm, mm);
        Tlb.FlushRange(_machine.Sync, by.Id, 0, Geometry.TaskSize);
    }

    /// <summary>Writes bytes at a user address, faulting pages in as needed.</summary>
    public AccessResult Write(ulong va, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            int n = (int)Math.Min(Geometry.PageSize - (va & (Geometry.PageSize - 1)), (ulong)data.Length);
            var r = AccessPage(va, write: true, data[..n], default);
            if (!r.Ok)
            {
                return r;
            }

            va += (ulong)n;
            data = data[n..];
        }

        return AccessResult.Success;
    }

    /// <summary>Reads bytes from a user address, faulting pages in as needed.</summary>
    public AccessResult Read(ulong va, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            int n = (int)Math.Min(Geometry.PageSize - (va & (Geometry.PageSize - 1)), (ulong)destination.Length);
            var r = AccessPage(va, write: false, default, destination[..n]);
            if (!r.Ok)
            {
                return r;
            }

            va += (ulong)n;
            destination = destination[n..];
        }

        return AccessResult.Success;
    }

    /// <summary>Writes one byte: the cheapest way to touch a page for writing.</summary>
    public AccessResult Touch(ulong va, byte value = 1)
    {
        ReadOnlySpan<byte> one = [value];
        return AccessPage(va, write: true, one, default);
    }

    /// <summary>Reads one byte: the cheapest way to touch a page for reading.</summary>
    public AccessResult ReadByte(ulong va, out byte value)
    {
        Span<byte> one = stackalloc byte[1];
        var r = AccessPage(va, write: false, default, one);
        value = one[0];
        return r;
    }

    /// <summary>The content token of the page mapped at <paramref name="va"/>, reading it in if needed.</summary>
    public AccessResult ReadToken(ulong va, out ulong token)
    {
        token = 0;
        Span<byte> probe = stackalloc byte[1];
        var r = AccessPage(va, write: false, default, probe, tokenOut: true);
        if (r.Ok)
        {
            token = _lastToken;
        }

        return r;
    }

    private ulong _lastToken;

    private AccessResult AccessPage(ulong va, bool write, ReadOnlySpan<byte> src, Span<byte> dst, bool tokenOut = false)
    {
        var mm = _mm ?? throw new InvalidOperationException($"CPU {Id} has no address space");
        if (va >= Geometry.TaskSize)
        {
            return new AccessResult(FaultOutcome.SegvMapErr, va);
        }

        if (mm.ExecOnlyKeyed && mm.PkeyDeniesAccess(this, va))
        {
            return new AccessResult(FaultOutcome.SegvPkuErr, va);
        }

        long startTicks = 0;
        var spin = default(SpinWait);
        for (int attempt = 0; ; attempt++)
        {
            if (attempt >= 16)
            {
                if (startTicks == 0)
                {
                    startTicks = Environment.TickCount64;
                }
                else if (_machine.Sync.Scheduler is null
                    ? Environment.TickCount64 - startTicks > s_livelockBound.TotalMilliseconds
                    : attempt > 100_000)
                {
                    // Under a scheduler the bound counts attempts, so a replay never depends on timing.
                    break;
                }

                _machine.Sync.Scheduler?.Reached(Sync.SchedulingPointKind.Wait, this);
                spin.SpinOnce(sleep1Threshold: -1);
            }

            Tlb.Lock(_machine.Sync, Id);
            try
            {
                if (Tlb.Lookup(va, write, out ulong pte) || _walker.Walk(mm.PgdPfn, va, write, out pte))
                {
                    long pfn = Entry.Pfn(pte);
                    var phys = _machine.Phys;
                    var content = phys.Content;
                    int off = (int)(va & (Geometry.PageSize - 1));
                    if (write)
                    {
                        if (phys.Bytes is { } bytes)
                        {
                            bytes.Write(pfn, off, src);
                        }
                        else
                        {
                            content.Write(pfn, off, src);
                        }
                    }
                    else if (tokenOut)
                    {
                        _lastToken = content.Token(pfn);
                    }
                    else
                    {
                        content.Read(pfn, off, dst);
                    }

                    return AccessResult.Success;
                }
            }
            finally
            {
                Tlb.Unlock(_machine.Sync, Id);
            }

            _faults++;
            var outcome = mm.HandleUserFault(this, va, write);
            if (outcome != FaultOutcome.Ok)
            {
                return new AccessResult(outcome, va);
            }
        }

        throw new InvalidOperationException(
            $"CPU {Id}: access to 0x{va:x} still faults after {s_livelockBound.TotalSeconds} s of retries ({mm.DescribeTranslation(va)})");
    }
}
