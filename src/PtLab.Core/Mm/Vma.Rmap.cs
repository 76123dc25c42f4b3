using PtLab.Phys;

namespace PtLab.Mm;

// What a VMA needs for the reverse map, file mappings and fork: its mm, its page offset, its file,
// and its anon_vma chain.
public sealed partial class Vma
{
    /// <summary>The address space the VMA belongs to (<c>vm_mm</c>).</summary>
    public MmStruct Mm { get; internal set; } = null!;

    /// <summary>
    /// <c>vm_pgoff</c>: the page index <see cref="Start"/> maps. For a file mapping, the offset in
    /// the file in pages; for a private anonymous mapping, <c>Start &gt;&gt; PAGE_SHIFT</c> at mmap
    /// time (kept when mremap moves a VMA that has pages), so that an anonymous page's index finds
    /// its address in every VMA that maps it, the forked copies included. Splits keep it
    /// continuous, a stack that grows down lowers it, and VMAs merge only when it runs on without
    /// a jump.
    /// </summary>
    public ulong PgOff { get; internal set; }

    /// <summary>The mapped file (<c>vm_file</c>): a regular file, or the shmem file behind a shared anonymous mapping. Null for private anonymous memory.</summary>
    public SimFile? File { get; internal set; }

    /// <summary>
    /// The readahead state of the open file the VMA was mapped from (<c>vma-&gt;vm_file-&gt;f_ra</c>),
    /// or null where the mapping named no open file of its own (the file's shared state is used).
    /// Splits, copies and forks keep it; VMAs of different opens of one file do not merge. It is
    /// set before the VMA is published (inserted in the tree, linked into i_mmap) and never
    /// changed, so a fault reads it without a lock; the state's own fields are read and written
    /// under its file's lock only, as the page cache's are.
    /// </summary>
    public FileRaState? Ra { get; internal set; }

    /// <summary>The kernel's mapping this VMA is (<c>vm_private_data</c> of a special mapping), or null.</summary>
    public SpecialMapping? Special { get; internal set; }

    /// <summary><c>vma_is_anonymous</c>: no file and no vm_ops, i.e. private anonymous memory.</summary>
    public bool IsAnonymous => File is null && Special is null;

    /// <summary><c>is_cow_mapping</c>: private and may be written, so a write must copy.</summary>
    public bool IsCowMapping => (Flags & (VmFlags.Shared | VmFlags.MayWrite)) == VmFlags.MayWrite;

    /// <summary>
    /// The <c>anon_vma_chain</c>: every anon_vma whose pages this VMA may map (its own and those it
    /// inherited through fork and split). Guarded by locking the list itself.
    /// </summary>
    internal List<AnonVma> AnonVmaChain { get; } = [];

    /// <summary><c>linear_page_index</c>: the page index <paramref name="addr"/> maps.</summary>
    internal ulong LinearPageIndex(ulong addr) => PgOff + ((addr - Start) >> PhysMemory.PageShift);

    /// <summary>
    /// <c>vma_address</c>: where page index <paramref name="index"/> is mapped in this VMA, if the
    /// VMA covers it. Start and page offset are read without the mmap lock; a torn read gives an
    /// address the caller's entry check rejects.
    /// </summary>
    internal bool TryAddressOf(ulong index, out ulong addr)
    {
        ulong start = Start, end = End, pgoff = PgOff;
        addr = 0;
        if (index < pgoff)
        {
            return false;
        }

        ulong off = index - pgoff;
        if (off >= (end - start) >> PhysMemory.PageShift)
        {
            return false;
        }

        addr = start + (off << PhysMemory.PageShift);
        return true;
    }

    /// <summary>
    /// The new upper part of a <c>__split_vma</c> at <paramref name="addr"/>: same flags, file and
    /// anon_vma, the page offset moved on, linked into the same reverse maps (<c>anon_vma_clone</c>,
    /// <c>vma_link_file</c>). The caller shortens this VMA.
    /// </summary>
    internal Vma SplitUpper(ulong addr)
    {
        var upper = new Vma(addr, End, Flags, AnonVma)
        {
            Mm = Mm,
            PgOff = LinearPageIndex(addr),
            File = File,
            Ra = Ra,
            Special = Special,
        };
        upper.CloneRmapLinksFrom(this);
        return upper;
    }

    /// <summary><c>anon_vma_clone</c> + <c>vma_link_file</c>: links this VMA wherever <paramref name="src"/> is linked.</summary>
    internal void CloneRmapLinksFrom(Vma src)
    {
        AnonVma[] chain;
        lock (src.AnonVmaChain)
        {
            chain = [.. src.AnonVmaChain];
        }

        foreach (var av in chain)
        {
            av.Link(this);
        }

        File?.LinkVma(this);
    }

    /// <summary>
    /// <c>unlink_anon_vmas</c> + <c>unlink_file_vma</c>: the VMA leaves every reverse map, as it is
    /// unmapped or merged away. After this no rmap walk reaches it.
    /// </summary>
    internal void UnlinkRmap()
    {
        UnlinkAnonVmas();
        File?.UnlinkVma(this);
    }

    /// <summary>
    /// <c>unlink_anon_vmas</c> alone: the VMA leaves its anon_vmas (it keeps its file link), as
    /// mremap's MREMAP_DONTUNMAP leaves the emptied source.
    /// </summary>
    internal void UnlinkAnonVmas()
    {
        AnonVma[] chain;
        lock (AnonVmaChain)
        {
            chain = [.. AnonVmaChain];
            AnonVmaChain.Clear();
        }

        foreach (var av in chain)
        {
            av.Unlink(this);
        }
    }

    /// <summary>
    /// <c>vma_merge</c>'s bookkeeping when this VMA absorbs <paramref name="removed"/>: it takes over
    /// the other's reverse-map links (<c>dup_anon_vma</c>), then the other leaves them all.
    /// </summary>
    internal void AbsorbRmapLinks(Vma removed)
    {
        AnonVma[] chain;
        lock (removed.AnonVmaChain)
        {
            chain = [.. removed.AnonVmaChain];
        }

        foreach (var av in chain)
        {
            av.Link(this);
        }

        removed.UnlinkRmap();
    }
}
