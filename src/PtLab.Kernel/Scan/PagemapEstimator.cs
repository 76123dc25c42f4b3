using System.Runtime.InteropServices;
using PtLab.Mm;
using PtLab.Reclaim;

namespace PtLab.Kernel.Scan;

/// <summary>
/// The fallback for kernels without <c>PAGEMAP_SCAN</c>: reads <c>/proc/PID/pagemap</c> (one 64-bit
/// entry per page: bit 63 present, 62 swapped, 61 file or shared, 58 guard marker, bits 0-54 the PFN,
/// zeroed without CAP_SYS_ADMIN) over every VMA. Pagemap reports an empty slot of a table and an
/// address with no table identically, so only populated 2 MiB slots are seen; VmPTE bounds the rest.
/// </summary>
internal static unsafe class PagemapEstimator
{
    private const int ChunkPages = 64 * 512;          // 128 MiB of address space per read: 256 KiB of entries

    /// <summary>
    /// The shared zero page's PFN, learnt from this process's own pagemap after a read fault on fresh
    /// anonymous memory; 0 when PFNs are hidden (no CAP_SYS_ADMIN) or the host maps no zero page,
    /// and zero-page tables are then unknown (or, on such a host, there are none).
    /// </summary>
    public static ulong ZeroPfn() => ZeroPageProbe.SmallZeroPage == true ? ZeroPageProbe.ZeroPfn : 0;

    /// <summary>Reads the pagemap entries of every VMA into <paramref name="census"/>.</summary>
    public static void Read(int pid, string path, int fd, IReadOnlyList<MapsEntry> vmas, EstimateCensus census)
    {
        var entries = new ulong[ChunkPages];
        for (int v = 0; v < vmas.Count; v++)
        {
            var vma = vmas[v];
            for (ulong a = vma.Start; a < vma.End;)
            {
                int pages = (int)Math.Min((ulong)ChunkPages, (vma.End - a) >> 12);
                int got = ReadEntries(pid, path, fd, a, entries.AsSpan(0, pages));
                for (int i = 0; i < got; i++)
                {
                    census.Add(v, (a >> 12) + (ulong)i, entries[i]);
                }

                if (got < pages)
                {
                    throw new ScanException(ScanFailure.Vanished, pid, path, "the process exited during the scan (pagemap read ended early)");
                }

                a += (ulong)pages << 12;
            }
        }

        census.Finish();
    }

    private static int ReadEntries(int pid, string path, int fd, ulong address, Span<ulong> into)
    {
        int done = 0;
        fixed (ulong* buf = into)
        {
            while (done < into.Length)
            {
                nint n = LibC.Pread(fd, (byte*)(buf + done), (nuint)((into.Length - done) * 8), (long)(((address >> 12) + (ulong)done) * 8));
                if (n < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == 4)
                    {
                        continue; // EINTR
                    }

                    throw ProcFs.Failure(pid, path, e, firstOpen: false);
                }

                if (n == 0)
                {
                    break;
                }

                done += (int)(n / 8);
            }
        }

        return done;
    }

    /// <summary>Pagemap entry bits of one page, for the census.</summary>
    internal static (bool Present, bool Swapped, bool Guard, ulong Pfn) Decode(ulong entry) =>
        ((entry & PagemapBits.Present) != 0, (entry & PagemapBits.Swapped) != 0, (entry & PagemapBits.GuardRegion) != 0, entry & PagemapBits.PfnMask);
}

/// <summary>Populated 2 MiB slots seen through pagemap, merged across the VMAs that share a slot.</summary>
internal sealed class EstimateCensus(int vmaCount, ulong zeroPfn)
{
    private readonly Dictionary<string, long> _frees = [];
    private bool _pending;
    private ulong _slot;
    private int _present, _zero, _swapped, _guard;
    private readonly List<int> _vmas = [];
    private long _lastGib = -1, _lastPud = -1;

    public bool ZeroPageKnown => zeroPfn != 0;
    public long PopulatedSlots { get; private set; }
    public long PopulatedEntries { get; private set; }
    public long ZeroPageTables { get; private set; }
    public long MarkerOnlyTables { get; private set; }
    public long SharedSlots { get; private set; }
    public long PmdTablesNeeded { get; private set; }
    public long PudTablesNeeded { get; private set; }
    public long[] PerVmaSlots { get; } = new long[vmaCount];
    public long[] PerVmaEntries { get; } = new long[vmaCount];
    public long[] PerVmaZero { get; } = new long[vmaCount];
    public long[] PerVmaMarker { get; } = new long[vmaCount];
    public long[] PerVmaShared { get; } = new long[vmaCount];

    /// <summary>Populated slots the rule frees now.</summary>
    public long Frees(FreeNowRule rule) => _frees.GetValueOrDefault(rule.Design);

    public void Add(int vma, ulong page, ulong entry)
    {
        var (present, swapped, guard, pfn) = PagemapEstimator.Decode(entry);
        if (!present && !swapped)
        {
            return;
        }

        ulong slot = page >> 9;
        if (!_pending || slot != _slot)
        {
            Flush();
            _pending = true;
            _slot = slot;
            _vmas.Clear();
        }

        if (!_vmas.Contains(vma))
        {
            _vmas.Add(vma);
        }

        PopulatedEntries++;
        PerVmaEntries[vma]++;
        _present += present ? 1 : 0;
        _zero += present && zeroPfn != 0 && pfn == zeroPfn ? 1 : 0;
        _swapped += swapped ? 1 : 0;
        _guard += swapped && guard ? 1 : 0;
    }

    public void Finish() => Flush();

    private void Flush()
    {
        if (!_pending)
        {
            return;
        }

        _pending = false;
        PopulatedSlots++;
        var table = new ScannedTable(_present, _zero, _swapped, _guard, IsThpDeposit: false);
        ZeroPageTables += table.State == ScannedTableState.ZeroPageOnly ? 1 : 0;
        MarkerOnlyTables += table.State == ScannedTableState.MarkerOnly ? 1 : 0;
        SharedSlots += _vmas.Count > 1 ? 1 : 0;
        foreach (var rule in FreeNowRules.All)
        {
            if (rule.FreesNow(table))
            {
                _frees[rule.Design] = _frees.GetValueOrDefault(rule.Design) + 1;
            }
        }

        foreach (int v in _vmas)
        {
            PerVmaSlots[v]++;
            PerVmaZero[v] += table.State == ScannedTableState.ZeroPageOnly ? 1 : 0;
            PerVmaMarker[v] += table.State == ScannedTableState.MarkerOnly ? 1 : 0;
            PerVmaShared[v] += _vmas.Count > 1 ? 1 : 0;
        }

        long gib = (long)(_slot >> 9), pud = (long)(_slot >> 18);
        PmdTablesNeeded += gib != _lastGib ? 1 : 0;
        PudTablesNeeded += pud != _lastPud ? 1 : 0;
        _lastGib = gib;
        _lastPud = pud;
        _present = _zero = _swapped = _guard = 0;
    }
}
