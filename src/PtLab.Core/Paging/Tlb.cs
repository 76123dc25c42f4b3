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
    private long _flushes;
    private long _hits;
    private long _misses;

    /// <summary>Range or full flushes applied to this TLB.</summary>
    public long Flushes => Volatile.Read(ref _flushes);

    /// <summary>Lookups that hit.</summary>
    public long Hits => _hits;

    /// <summary>Lookups that missed.</summary>
    public long Misses => _misses;

    internal void Lock() => RawSpinLock.Lock(ref _lock);

    internal void Unlock() => RawSpinLock.Unlock(ref _lock);

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
    public void FlushRange(ulong start, ulong end)
    {
        Lock();
        try
        {
            ulong pages = (end - start) >> 12;
            if (pages > SinglePageFlushCeiling)
            {
                Array.Clear(_tags);
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
            }

            _flushes++;
        }
        finally
        {
            Unlock();
        }
    }

    /// <summary><c>flush_tlb_all</c> on this CPU.</summary>
    public void FlushAll()
    {
        Lock();
        Array.Clear(_tags);
        _flushes++;
        Unlock();
    }
}
