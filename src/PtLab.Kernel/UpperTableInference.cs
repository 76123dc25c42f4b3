using PtLab.Mm;
using PtLab.Paging;
using PtLab.Workloads;

namespace PtLab.Kernel;

/// <summary>
/// Splits a target's VmPTE into PTE, PMD and PUD tables where only the total is measurable (the
/// host kernel): the PMD and PUD tables of the target's own mappings are inferred from what the
/// workload did, and every other table page counts as a PTE table.
/// </summary>
/// <remarks>
/// <para>The inference holds when the target's mappings sit in 512 GiB slots (PGD entries) that no
/// other mapping of the process uses, as <c>ptlab compare --kernel</c> arranges. Then:</para>
/// <list type="bullet">
/// <item>A PMD table exists for a 1 GiB span once a page in it was touched (a fault allocates the
/// upper tables on its way down), and goes away only when a munmap leaves no VMA in that GiB:
/// <c>free_pgtables</c> then has floor and ceiling outside the GiB, so <c>free_pmd_range</c> frees
/// the table. DONTNEED never frees a PMD table, under any design.</item>
/// <item>A PUD table exists for a 512 GiB slot under the same rule one level up.</item>
/// </list>
/// <para>PTE = VmPTE / 4 kB − inferred PMD − inferred PUD, so deltas of the PTE figure carry every
/// measured change that the upper-table rule does not explain. Applied to the model, whose levels are
/// counted, the inference can be checked (see <c>ptlab compare --kernel</c>'s method check).</para>
/// </remarks>
public sealed class UpperTableInference : IFileTarget
{
    private const ulong OneGiB = 1UL << 30;
    private const int PgdShift = 39;

    private readonly IMemoryTarget _inner;
    private readonly MappingSet _mapped = new();
    private readonly HashSet<ulong> _pmdTables = [];   // GiB numbers
    private readonly HashSet<ulong> _pudTables = [];   // 512 GiB slot numbers
    private readonly Lock _lock = new();

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    public UpperTableInference(IMemoryTarget inner) => _inner = inner ?? throw new ArgumentNullException(nameof(inner));

    /// <inheritdoc/>
    public string Name => _inner.Name;

    /// <summary>The inferred PMD and PUD tables of the target's own mappings now.</summary>
    public (long Pmd, long Pud) UpperTables
    {
        get
        {
            lock (_lock)
            {
                return (_pmdTables.Count, _pudTables.Count);
            }
        }
    }

    /// <inheritdoc/>
    public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags)
    {
        var r = _inner.Mmap(addr, length, prot, flags);
        if (r.Ok)
        {
            lock (_lock)
            {
                _mapped.Add(r.Address, r.Address + Geometry.PageAlign(length), prot);
            }
        }

        return r;
    }

    /// <inheritdoc/>
    public int CreateFile(ulong size) => Files.CreateFile(size);

    /// <inheritdoc/>
    public MmapResult MmapFile(ulong addr, ulong length, Prot prot, MapFlags flags, int file, ulong offset)
    {
        var r = Files.MmapFile(addr, length, prot, flags, file, offset);
        if (r.Ok)
        {
            lock (_lock)
            {
                _mapped.Add(r.Address, r.Address + Geometry.PageAlign(length), prot);
            }
        }

        return r;
    }

    /// <inheritdoc/>
    public bool[] PresentPages(ulong addr, int pages) => Files.PresentPages(addr, pages);

    /// <inheritdoc/>
    public void DropFileCache(int file) => Files.DropFileCache(file);

    /// <inheritdoc/>
    public Errno Munmap(ulong addr, ulong length)
    {
        var e = _inner.Munmap(addr, length);
        if (e == Errno.None && length > 0)
        {
            lock (_lock)
            {
                ulong end = addr + Geometry.PageAlign(length);
                _mapped.Remove(addr, end);
                for (ulong g = addr / OneGiB; g <= (end - 1) / OneGiB; g++)
                {
                    if (!_mapped.AnyIn(g * OneGiB, (g + 1) * OneGiB))
                    {
                        _pmdTables.Remove(g);
                    }
                }

                for (ulong s = addr >> PgdShift; s <= (end - 1) >> PgdShift; s++)
                {
                    if (!_mapped.AnyIn(s << PgdShift, (s + 1) << PgdShift))
                    {
                        _pudTables.Remove(s);
                    }
                }
            }
        }

        return e;
    }

    /// <inheritdoc/>
    public Errno Mprotect(ulong addr, ulong length, Prot prot) => _inner.Mprotect(addr, length, prot);

    /// <inheritdoc/>
    public Errno Madvise(ulong addr, ulong length, Advice advice) => _inner.Madvise(addr, length, advice);

    /// <inheritdoc/>
    public AccessResult TouchPages(ulong addr, ulong length, bool write)
    {
        var r = _inner.TouchPages(addr, length, write);
        if (length > 0)
        {
            // Pages before a failing one were touched; the failing page itself allocated nothing
            // only if no VMA holds it, which leaves no table behind either way for these scenarios.
            ulong end = r.Ok ? addr + length : r.Address;
            lock (_lock)
            {
                for (ulong g = addr / OneGiB; end > addr && g <= (end - 1) / OneGiB; g++)
                {
                    _pmdTables.Add(g);
                    _pudTables.Add(g * OneGiB >> PgdShift);
                }
            }
        }

        return r;
    }

    /// <inheritdoc/>
    /// <remarks>Refused: a move carries tables to other slots, which this inference does not follow.</remarks>
    public MmapResult Mremap(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr) =>
        throw new NotSupportedException("the upper-table inference does not follow mremap's table moves; compare VmPTE without it");

    /// <inheritdoc/>
    public IReadOnlyList<VmaView> Layout(ulong start, ulong end) => _inner.Layout(start, end);

    /// <inheritdoc/>
    public MmStatus Status()
    {
        var s = _inner.Status();
        var (pmd, pud) = UpperTables;
        return s with { Tables = new TableCounts((s.VmPteKb / 4) - pmd - pud, pmd, pud) };
    }

    /// <summary>Disposes the wrapped target.</summary>
    public void Dispose() => _inner.Dispose();


    private IFileTarget Files => _inner as IFileTarget ?? throw new ScenarioException($"{Name} cannot map files");
}
