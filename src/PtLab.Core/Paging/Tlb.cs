using System.Runtime.CompilerServices;
using PtLab.Sync;

namespace PtLab.Paging;

/// <summary>
/// A per-CPU TLB: direct-mapped, caching leaf entries by virtual page. The owning CPU holds the TLB
/// lock for the whole of one memory access (lookup, walk and data transfer), and a remote flush
/// takes the same lock, so a flush that returns guarantees no access through a stale entry is still
/// in flight. That is what the IPI of a real shootdown guarantees.
/// </summary>
public sealed class Tlb
{
    /// <summary>Entries in the TLB.</summary>
    public const int Size = 256;

    /// <summary>
    /// Above this many pages a range flush drops everything, as the kernel's
    /// <c>tlb_single_page_flush_ceiling</c> (33) decides.
    /// </summary>
    public const int SinglePageFlushCeiling = 33;

    private readonly ulong[] _tags = new ulong[Size]; // virtual page number + 1; 0 = invalid
    private readonly ulong[] _entries = new ulong[Size];
    private int _lock;
    private OwnerBias _bias; // see OwnerBiased

    /// <summary>Test-only mutation: a remote flush of a biased TLB waits for the owner without the process-wide barrier (see <c>PtLab.Systematic.LockStepLitmus</c>).</summary>
    internal bool SkipBarrierForTesting
    {
        get => _bias.SkipBarrierForTesting;
        init => _bias.SkipBarrierForTesting = value;
    }
    private long _flushes;
    private long _hits;
    private long _misses;

    /// <summary>Range or full flushes applied to this TLB.</summary>
    public long Flushes => Volatile.Read(ref _flushes);

    /// <summary>Lookups that hit.</summary>
    public long Hits => _hits;

    /// <summary>Lookups that missed.</summary>
    public long Misses => _misses;

    /// <summary>The owner CPU, for the lock checker's instance key.</summary>
    internal int Owner { get; init; }

    /// <summary>
    /// The CPU's paging-structure caches, or null when the machine does not model them (they cost
    /// a lookup per walk; the checkers turn them on). Covered by the TLB lock.
    /// </summary>
    public PagingStructureCache? Psc { get; init; }

    /// <summary>
    /// Whether the TLB lock is biased to its owner (see <see cref="OwnerBias"/>): on a machine of
    /// one CPU without hooks, where nearly every taking of the lock is the owner's own access. A
    /// caller that names the owner CPU is the thread driving it (one thread at a time), and is
    /// not inside an access of its own.
    /// </summary>
    internal bool OwnerBiased { get; init; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Lock(SyncHooks hooks, int cpu)
    {
        if (OwnerBiased && cpu == Owner)
        {
            if (!_bias.TryOwnerEnter())
            {
                RawSpinLock.Lock(ref _lock);
            }
        }
        else if (cpu < 0)
        {
            Lock();
        }
        else
        {
            RawSpinLock.Lock(ref _lock, hooks, cpu, LockClass.TlbLock, Owner);
            if (OwnerBiased)
            {
                _bias.OthersEnter();
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Unlock(SyncHooks hooks, int cpu)
    {
        if (OwnerBiased && cpu == Owner)
        {
            if (_bias.OwnerIn)
            {
                _bias.OwnerExit();
            }
            else
            {
                RawSpinLock.Unlock(ref _lock);
            }
        }
        else if (cpu < 0)
        {
            Unlock();
        }
        else
        {
            if (OwnerBiased)
            {
                _bias.OthersExit();
            }

            RawSpinLock.Unlock(ref _lock, hooks, cpu, LockClass.TlbLock, Owner);
        }
    }

    private void Lock()
    {
        RawSpinLock.Lock(ref _lock);
        if (OwnerBiased)
        {
            _bias.OthersEnter();
        }
    }

    private void Unlock()
    {
        if (OwnerBiased)
        {
            _bias.OthersExit();
        }

        RawSpinLock.Unlock(ref _lock);
    }

    /// <summary>Looks up a translation usable for the access. Caller holds the TLB lock.</summary>
    internal bool Lookup(ulong va, bool write, out ulong entry)
    {
        ulong vpn = va >> 12;
        int i = (int)(vpn & (Size - 1));
        if (_tags[i] == vpn + 1)
        {
            entry = _entries[i];
            // A write through an entry cached clean must go back to the walker to set the dirty bit.
            if (!write || (entry & (Entry.Writable | Entry.Dirty)) == (Entry.Writable | Entry.Dirty))
            {
                _hits++;
                return true;
            }
        }

        _misses++;
        entry = 0;
        return false;
    }

    /// <summary>Caches a translation. Caller holds the TLB lock.</summary>
    internal void Insert(ulong va, ulong entry)
    {
        ulong vpn = va >> 12;
        int i = (int)(vpn & (Size - 1));
        _tags[i] = vpn + 1;
        _entries[i] = entry;
    }

    /// <summary>
    /// The frames the cached entries map, read without the lock (for checks made while every CPU
    /// is stopped, as under the deterministic scheduler).
    /// </summary>
    public IEnumerable<(ulong Va, long Pfn)> CachedFramesUnlocked()
    {
        for (int i = 0; i < Size; i++)
        {
            ulong tag = Volatile.Read(ref _tags[i]);
            if (tag != 0)
            {
                yield return ((tag - 1) << 12, Entry.Pfn(Volatile.Read(ref _entries[i])));
            }
        }
    }

    /// <summary>Whether any entry for the page is cached (for invariant checks).</summary>
    public bool Holds(ulong va)
    {
        Lock();
        try
        {
            ulong vpn = va >> 12;
            return _tags[(int)(vpn & (Size - 1))] == vpn + 1;
        }
        finally
        {
            Unlock();
        }
    }

    /// <summary><c>flush_tlb_range</c> on this CPU: waits for its access in flight.</summary>
    public void FlushRange(ulong start, ulong end) => FlushRange(null, -1, start, end);

    /// <summary>
    /// <c>flush_tlb_range</c> on this CPU, requested by CPU <paramref name="cpu"/> (-1: unknown).
    /// Unless <paramref name="lastLevel"/> (the <c>mmu_gather</c>'s flush when it freed no table),
    /// the paging-structure cache entries for the range go too, all of them above the ceiling.
    /// </summary>
    public void FlushRange(SyncHooks? hooks, int cpu, ulong start, ulong end, bool lastLevel = false)
    {
        if (hooks is null || cpu < 0)
        {
            Lock();
        }
        else
        {
            Lock(hooks, cpu);
        }

        try
        {
            ulong pages = (end - start) >> 12;
            if (pages > SinglePageFlushCeiling)
            {
                Array.Clear(_tags);
                if (!lastLevel)
                {
                    Psc?.Clear();
                }
            }
            else
            {
                for (ulong va = start; va < end; va += Geometry.PageSize)
                {
                    ulong vpn = va >> 12;
                    int i = (int)(vpn & (Size - 1));
                    if (_tags[i] == vpn + 1)
                    {
                        _tags[i] = 0;
                    }
                }

                if (!lastLevel)
                {
                    Psc?.Invalidate(start, end);
                }
            }

            _flushes++;
        }
        finally
        {
            if (hooks is null || cpu < 0)
            {
                Unlock();
            }
            else
            {
                Unlock(hooks, cpu);
            }
        }
    }

    /// <summary><c>flush_tlb_all</c> on this CPU.</summary>
    public void FlushAll()
    {
        Lock();
        Array.Clear(_tags);
        Psc?.Clear();
        _flushes++;
        Unlock();
    }
}
