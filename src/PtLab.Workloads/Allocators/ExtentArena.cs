namespace PtLab.Workloads.Allocators;

/// <summary>
/// One arena of a jemalloc-like extent allocator, over a target's address space. Extents are
/// page-multiple runs carved from address space the arena mapped (<c>extent_grow_retained</c>:
/// chunks that grow geometrically, mapped MAP_NORESERVE and never unmapped: the space is
/// retained). A freed extent is dirty: its pages stay resident and it is reused first. Once it has
/// been dirty for the decay period it is purged (MADV_DONTNEED, or MADV_FREE) and joins the clean
/// extents, reused after the dirty ones. Free extents coalesce with free neighbours of the same
/// kind; an allocation takes the best fit (smallest extent that fits, lowest address on a tie) and
/// splits off the rest.
/// </summary>
public sealed class ExtentArena
{
    private readonly ExtentSet _dirty = new();
    private readonly ExtentSet _clean = new();
    private readonly Queue<(long Epoch, ulong Addr)> _decay = new();
    private readonly Dictionary<ulong, long> _dirtySince = [];
    private readonly Func<ulong, ulong> _map;
    private readonly ulong _maxGrow;
    private ulong _nextGrow;

    /// <summary>Creates an arena that maps address space with <paramref name="map"/> (length in, address out).</summary>
    /// <param name="map">Maps a chunk of the given length and returns its address.</param>
    /// <param name="firstGrow">The first chunk's length (a multiple of 2 MiB).</param>
    /// <param name="maxGrow">The largest chunk it maps when an allocation does not ask for more.</param>
    public ExtentArena(Func<ulong, ulong> map, ulong firstGrow = 2UL << 20, ulong maxGrow = 1UL << 30)
    {
        _map = map;
        _nextGrow = firstGrow;
        _maxGrow = maxGrow;
    }

    /// <summary>Address space this arena mapped (its share of VmSize).</summary>
    public ulong Retained { get; private set; }

    /// <summary>Bytes in live extents.</summary>
    public ulong Live { get; private set; }

    /// <summary>Bytes in dirty extents (freed, not yet purged).</summary>
    public ulong Dirty => _dirty.Bytes;

    /// <summary>Allocations served from a dirty extent, from a clean one, and by growing.</summary>
    public (long Dirty, long Clean, long Grown) Reuse => (_fromDirty, _fromClean, _grown);

    private long _fromDirty, _fromClean, _grown;

    /// <summary>Allocates an extent of <paramref name="length"/> bytes (a multiple of 4 KiB).</summary>
    public ulong Alloc(ulong length)
    {
        ulong addr;
        if (_dirty.TakeBestFit(length, out addr, out ulong taken))
        {
            _fromDirty++;
            if (_dirtySince.Remove(addr, out long since) && taken > length)
            {
                // The rest stays dirty since the same time.
                _dirtySince[addr + length] = since;
                _decay.Enqueue((since, addr + length));
            }
        }
        else if (_clean.TakeBestFit(length, out addr, out _))
        {
            _fromClean++;
        }
        else
        {
            ulong grow = Math.Max(_nextGrow, (length + (2UL << 20) - 1) & ~((2UL << 20) - 1));
            _nextGrow = Math.Min(_nextGrow * 2, _maxGrow);
            ulong chunk = _map(grow);
            Retained += grow;
            _grown++;
            _clean.Add(chunk, grow);
            _clean.TakeBestFit(length, out addr, out _);
        }

        Live += length;
        return addr;
    }

    /// <summary>Frees an extent: it becomes dirty, from <paramref name="epoch"/> on.</summary>
    public void Free(ulong addr, ulong length, long epoch)
    {
        Live -= length;
        ulong start = _dirty.Add(addr, length);
        _dirtySince[start] = epoch;
        _decay.Enqueue((epoch, start));
    }

    /// <summary>
    /// Purges every extent dirty since <paramref name="before"/> or earlier with
    /// <paramref name="purge"/> (address, length), then makes it clean. Returns the bytes purged.
    /// </summary>
    public ulong Decay(long before, Action<ulong, ulong> purge)
    {
        ulong purged = 0;
        while (_decay.Count > 0 && _decay.Peek().Epoch <= before)
        {
            var (epoch, addr) = _decay.Dequeue();
            // Stale when the extent was reused or merged into another since (that one has its own entry).
            if (!_dirtySince.TryGetValue(addr, out long since) || since != epoch || !_dirty.TryRemoveAt(addr, out ulong length))
            {
                continue;
            }

            _dirtySince.Remove(addr);
            purge(addr, length);
            _clean.Add(addr, length);
            purged += length;
        }

        return purged;
    }

    /// <summary>Free extents of one kind: coalescing maps by start and end, and a size-ordered set for best fit.</summary>
    private sealed class ExtentSet
    {
        private readonly Dictionary<ulong, ulong> _byStart = [];
        private readonly Dictionary<ulong, ulong> _byEnd = [];
        private readonly SortedSet<(ulong Length, ulong Addr)> _bySize = [];

        public ulong Bytes { get; private set; }

        /// <summary>Adds a free extent, merged with free neighbours; returns the merged extent's start.</summary>
        public ulong Add(ulong addr, ulong length)
        {
            ulong end = addr + length;
            if (_byEnd.TryGetValue(addr, out ulong prevStart))
            {
                Remove(prevStart, addr - prevStart);
                addr = prevStart;
            }

            if (_byStart.TryGetValue(end, out ulong nextEnd))
            {
                Remove(end, nextEnd - end);
                end = nextEnd;
            }

            _byStart[addr] = end;
            _byEnd[end] = addr;
            _bySize.Add((end - addr, addr));
            Bytes += length;
            return addr;
        }

        public bool TakeBestFit(ulong length, out ulong addr, out ulong found)
        {
            // Min of the view walks one path of the tree; Count would walk the whole view.
            var (len, start) = _bySize.GetViewBetween((length, 0), (ulong.MaxValue, ulong.MaxValue)).Min;
            if (len < length)
            {
                addr = found = 0;
                return false; // the view was empty: Min gave the default
            }

            found = len;
            Remove(start, len);
            Bytes -= length;
            if (len > length)
            {
                ulong rest = start + length;
                _byStart[rest] = start + len;
                _byEnd[start + len] = rest;
                _bySize.Add((len - length, rest));
            }

            addr = start;
            return true;
        }

        public bool TryRemoveAt(ulong addr, out ulong length)
        {
            if (!_byStart.TryGetValue(addr, out ulong end))
            {
                length = 0;
                return false;
            }

            length = end - addr;
            Remove(addr, length);
            Bytes -= length;
            return true;
        }

        private void Remove(ulong addr, ulong length)
        {
            _byStart.Remove(addr);
            _byEnd.Remove(addr + length);
            _bySize.Remove((length, addr));
        }
    }
}
