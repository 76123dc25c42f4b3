using PtLab.Reclaim;

namespace PtLab.Kernel.Scan;

/// <summary>
/// Turns the two <c>PAGEMAP_SCAN</c> passes of a process into per-table counts: one observation per
/// 2 MiB slot (the span of one PTE table), classified once per process and credited to every VMA that
/// overlaps the slot (a table covers its whole 2 MiB, so every VMA in the slot shares it).
/// </summary>
/// <remarks>
/// The scanner feeds the address space in windows of at most <see cref="WindowBytes"/>, aligned to
/// the window size and in address order, each scanned with one call per pass whatever the number of
/// VMAs inside. Memory stays bounded by one window's slots.
/// </remarks>
internal sealed class TableCensus
{
    /// <summary>The span scanned per window: 32 GiB, 16,384 slots.</summary>
    public const ulong WindowBytes = 32UL << 30;

    private const int SlotShift = 21;                 // a PTE table maps 2 MiB: 9 + 12 bits
    private const int WindowSlots = (int)(WindowBytes >> SlotShift);

    private readonly IReadOnlyList<MapsEntry> _vmas;
    private readonly VmaCensus[] _perVma;
    private readonly FreeNowRule[] _rules;
    private readonly long[] _frees;

    // One window's slots, indexed from _windowFirstSlot.
    private readonly bool[] _hasTable = new bool[WindowSlots];
    private readonly int[] _present = new int[WindowSlots];
    private readonly int[] _zero = new int[WindowSlots];
    private readonly int[] _swapped = new int[WindowSlots];
    private readonly int[] _guard = new int[WindowSlots];
    private readonly int[] _huge = new int[WindowSlots];
    private readonly int[] _file = new int[WindowSlots];
    private ulong _windowFirstSlot;
    private int _windowSlots;
    private int _entryCursor;                          // first VMA that may hold the next populated range
    private int _slotCursor;                           // first VMA that may overlap the next slot
    private readonly List<int> _slotVmas = [];

    private long _lastGiB = -1;
    private long _last512GiB = -1;

    /// <summary>A census over <paramref name="vmas"/> (in address order), applying <paramref name="rules"/> to every table.</summary>
    public TableCensus(IReadOnlyList<MapsEntry> vmas, IReadOnlyList<FreeNowRule> rules)
    {
        _vmas = vmas;
        _perVma = new VmaCensus[vmas.Count];
        for (int i = 0; i < _perVma.Length; i++)
        {
            _perVma[i] = new VmaCensus();
        }

        _rules = [.. rules];
        _frees = new long[_rules.Length];
    }

    public long PteTables { get; private set; }
    public long EmptyPteTables { get; private set; }
    public long ZeroPageTables { get; private set; }
    public long MarkerOnlyTables { get; private set; }
    public long ThpDeposits { get; private set; }
    public long OtherLeaves { get; private set; }
    public long PopulatedEntries { get; private set; }
    public long SharedTables { get; private set; }

    /// <summary>1 GiB spans that hold a PTE table or a PMD leaf: each needs a PMD table.</summary>
    public long PmdTablesNeeded { get; private set; }

    /// <summary>512 GiB spans that hold a PTE table or a PMD leaf: each needs a PUD table.</summary>
    public long PudTablesNeeded { get; private set; }

    public IReadOnlyList<VmaCensus> PerVma => _perVma;

    /// <summary>Tables each rule frees now, in the order of the rules given.</summary>
    public IReadOnlyList<long> Frees => _frees;

    /// <summary>
    /// The windows to scan, in order: [start, end) pairs inside one aligned window each, covering every
    /// VMA and nothing between VMAs that a window does not already span.
    /// </summary>
    public static IEnumerable<(ulong Start, ulong End)> Windows(IReadOnlyList<MapsEntry> vmas)
    {
        int v = 0;
        ulong cursor = 0;
        while (v < vmas.Count)
        {
            ulong start = Math.Max(cursor, vmas[v].Start);
            ulong windowEnd = (start & ~(WindowBytes - 1)) + WindowBytes;
            ulong end = start;
            while (v < vmas.Count && vmas[v].Start < windowEnd)
            {
                end = Math.Min(windowEnd, vmas[v].End);
                if (vmas[v].End > windowEnd)
                {
                    break; // the VMA goes on into the next window
                }

                v++;
            }

            yield return (start, end);
            cursor = end;
        }
    }

    /// <summary>Starts a window [start, end): both lie in one aligned window.</summary>
    public void BeginWindow(ulong start, ulong end)
    {
        _windowFirstSlot = start >> SlotShift;
        _windowSlots = (int)(((end - 1) >> SlotShift) - _windowFirstSlot + 1);
        if (end <= start || _windowSlots > WindowSlots)
        {
            throw new ArgumentException($"window 0x{start:x}-0x{end:x} is empty or spans more than {WindowSlots} slots");
        }

        Array.Clear(_hasTable, 0, _windowSlots);
        Array.Clear(_present, 0, _windowSlots);
        Array.Clear(_zero, 0, _windowSlots);
        Array.Clear(_swapped, 0, _windowSlots);
        Array.Clear(_guard, 0, _windowSlots);
        Array.Clear(_huge, 0, _windowSlots);
        Array.Clear(_file, 0, _windowSlots);
    }

    /// <summary>A range of pass A: every slot it touches holds a PTE table or a PMD leaf.</summary>
    public void AddTableRange(ulong start, ulong end)
    {
        if (end <= start)
        {
            return;
        }

        for (ulong s = start >> SlotShift; s <= (end - 1) >> SlotShift; s++)
        {
            _hasTable[Index(s)] = true;
        }
    }

    /// <summary>A range of pass B: populated entries (or a leaf) with their categories. Ranges arrive in address order.</summary>
    public void AddPopulated(PageRegion r)
    {
        if (r.End <= r.Start)
        {
            return;
        }

        bool present = (r.Categories & PagemapScanIoctl.PageIsPresent) != 0;
        bool zero = (r.Categories & PagemapScanIoctl.PageIsPfnZero) != 0;
        bool swapped = (r.Categories & PagemapScanIoctl.PageIsSwapped) != 0;
        bool guard = (r.Categories & PagemapScanIoctl.PageIsGuard) != 0;
        bool huge = (r.Categories & PagemapScanIoctl.PageIsHuge) != 0;
        bool file = (r.Categories & PagemapScanIoctl.PageIsFile) != 0;
        for (ulong s = r.Start >> SlotShift; s <= (r.End - 1) >> SlotShift; s++)
        {
            ulong lo = Math.Max(r.Start, s << SlotShift);
            ulong hi = Math.Min(r.End, (s + 1) << SlotShift);
            int pages = (int)((hi - lo) >> 12);
            int i = Index(s);
            if (huge)
            {
                _huge[i] += pages;
            }
            else
            {
                _present[i] += present ? pages : 0;
                _zero[i] += present && zero ? pages : 0;
                _swapped[i] += swapped ? pages : 0;
                _guard[i] += guard ? pages : 0;
            }

            _file[i] += file ? pages : 0;
        }

        if (!huge)
        {
            CreditEntries(r.Start, r.End);
        }
    }

    /// <summary>The 2 MiB slots of the window mapped by leaves so far, for <see cref="PagemapScanIoctl.LeafFilePass"/>.</summary>
    public IEnumerable<ulong> LeafSlots()
    {
        for (int i = 0; i < _windowSlots; i++)
        {
            if (_huge[i] > 0)
            {
                yield return (_windowFirstSlot + (ulong)i) << SlotShift;
            }
        }
    }

    /// <summary>A range of the leaf pass: file pages of a leaf.</summary>
    public void AddLeafFile(PageRegion r)
    {
        if (r.End <= r.Start || (r.Categories & PagemapScanIoctl.PageIsFile) == 0)
        {
            return;
        }

        for (ulong s = r.Start >> SlotShift; s <= (r.End - 1) >> SlotShift; s++)
        {
            ulong lo = Math.Max(r.Start, s << SlotShift), hi = Math.Min(r.End, (s + 1) << SlotShift);
            _file[Index(s)] += (int)((hi - lo) >> 12);
        }
    }

    /// <summary>Ends the window: its slots join the census in address order.</summary>
    public void EndWindow()
    {
        for (int i = 0; i < _windowSlots; i++)
        {
            if (!_hasTable[i] && _present[i] + _swapped[i] + _huge[i] == 0)
            {
                continue;
            }

            var c = new SlotCounts(_present[i], _zero[i], _swapped[i], _guard[i], _huge[i], _file[i]);
            Classify(_windowFirstSlot + (ulong)i, c);
        }
    }

    private int Index(ulong slot)
    {
        long i = (long)(slot - _windowFirstSlot);
        return i >= 0 && i < _windowSlots ? (int)i : throw new ArgumentOutOfRangeException(nameof(slot), $"slot 0x{slot:x} lies outside the window");
    }

    /// <summary>Adds the pages of [start, end) to the VMAs they lie in.</summary>
    private void CreditEntries(ulong start, ulong end)
    {
        while (_entryCursor < _vmas.Count && _vmas[_entryCursor].End <= start)
        {
            _entryCursor++;
        }

        for (int v = _entryCursor; v < _vmas.Count && _vmas[v].Start < end; v++)
        {
            ulong lo = Math.Max(start, _vmas[v].Start), hi = Math.Min(end, _vmas[v].End);
            _perVma[v].PopulatedEntries += hi > lo ? (long)((hi - lo) >> 12) : 0;
        }
    }

    private void Classify(ulong slot, SlotCounts c)
    {
        ulong slotStart = slot << SlotShift, slotEnd = slotStart + (1UL << SlotShift);
        while (_slotCursor < _vmas.Count && _vmas[_slotCursor].End <= slotStart)
        {
            _slotCursor++;
        }

        _slotVmas.Clear();
        for (int v = _slotCursor; v < _vmas.Count && _vmas[v].Start < slotEnd; v++)
        {
            _slotVmas.Add(v);
        }

        long gib = (long)(slot >> 9);
        long g512 = (long)(slot >> 18);
        if (gib != _lastGiB)
        {
            PmdTablesNeeded++;
            _lastGiB = gib;
        }

        if (g512 != _last512GiB)
        {
            PudTablesNeeded++;
            _last512GiB = g512;
        }

        bool shared = _slotVmas.Count > 1;
        if (c.Huge > 0)
        {
            // A PMD leaf: no PTE table in use. An anonymous one (a THP, the huge zero page) keeps a
            // deposited table counted in VmPTE; file and hugetlb leaves have none on x86-64.
            bool deposit = c.File == 0 && _slotVmas.Count > 0 && _slotVmas.TrueForAll(v => _vmas[v].IsAnonymous);
            if (deposit)
            {
                ThpDeposits++;
                Credit(new ScannedTable(0, 0, 0, 0, IsThpDeposit: true), shared);
            }
            else
            {
                OtherLeaves++;
            }

            return;
        }

        PteTables++;
        PopulatedEntries += c.Present + c.Swapped;
        SharedTables += shared ? 1 : 0;
        var table = new ScannedTable(c.Present, c.Zero, c.Swapped, c.Guard, IsThpDeposit: false);
        switch (table.State)
        {
            case ScannedTableState.Empty:
                EmptyPteTables++;
                break;
            case ScannedTableState.ZeroPageOnly:
                ZeroPageTables++;
                break;
            case ScannedTableState.MarkerOnly:
                MarkerOnlyTables++;
                break;
        }

        Credit(table, shared);
    }

    private void Credit(ScannedTable table, bool shared)
    {
        for (int r = 0; r < _rules.Length; r++)
        {
            if (_rules[r].FreesNow(table))
            {
                _frees[r]++;
            }
        }

        foreach (int v in _slotVmas)
        {
            var vc = _perVma[v];
            if (table.IsThpDeposit)
            {
                vc.ThpDeposits++;
                continue;
            }

            vc.PteTables++;
            vc.SharedTables += shared ? 1 : 0;
            switch (table.State)
            {
                case ScannedTableState.Empty:
                    vc.EmptyPteTables++;
                    break;
                case ScannedTableState.ZeroPageOnly:
                    vc.ZeroPageTables++;
                    break;
                case ScannedTableState.MarkerOnly:
                    vc.MarkerOnlyTables++;
                    break;
            }
        }
    }

    private readonly record struct SlotCounts(int Present, int Zero, int Swapped, int Guard, int Huge, int File);
}

/// <summary>One VMA's share of the census; a table shared with a neighbour VMA is credited to both and counted in <see cref="SharedTables"/>.</summary>
internal sealed class VmaCensus
{
    public long PteTables { get; set; }
    public long EmptyPteTables { get; set; }
    public long ZeroPageTables { get; set; }
    public long MarkerOnlyTables { get; set; }
    public long ThpDeposits { get; set; }
    public long SharedTables { get; set; }
    public long PopulatedEntries { get; set; }
}
