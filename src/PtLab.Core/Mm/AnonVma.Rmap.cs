namespace PtLab.Mm;

// The anon_vma side of the reverse map (mm/rmap.c): which VMAs may map a page whose
// page->mapping is this anon_vma.
public sealed partial class AnonVma
{
    // The anon_vma's interval tree of anon_vma_chain entries, as a list: every VMA whose chain
    // holds this anon_vma. Small in practice (a VMA, its split parts, its forked copies).
    private readonly List<Vma> _vmas = [];

    /// <summary>The anon_vma this one was forked from (<c>anon_vma-&gt;parent</c>); null for a root.</summary>
    public AnonVma? Parent { get; internal init; }

    /// <summary>How many VMAs link to this anon_vma now.</summary>
    public int LinkedVmas
    {
        get
        {
            lock (_vmas)
            {
                return _vmas.Count;
            }
        }
    }

    /// <summary>
    /// <c>anon_vma_chain_link</c>: <paramref name="vma"/> may map pages of this anon_vma from now
    /// on. Linking twice is harmless.
    /// </summary>
    internal void Link(Vma vma)
    {
        lock (vma.AnonVmaChain)
        {
            if (vma.AnonVmaChain.Contains(this))
            {
                return;
            }

            vma.AnonVmaChain.Add(this);
        }

        lock (_vmas)
        {
            _vmas.Add(vma);
        }
    }

    /// <summary>Drops <paramref name="vma"/> from this anon_vma's tree (one step of <c>unlink_anon_vmas</c>).</summary>
    internal void Unlink(Vma vma)
    {
        lock (_vmas)
        {
            _vmas.Remove(vma);
        }
    }

    /// <summary>The VMAs that may map this anon_vma's pages, for an rmap walk (<c>rmap_walk_anon</c>).</summary>
    internal Vma[] Snapshot()
    {
        lock (_vmas)
        {
            return [.. _vmas];
        }
    }
}
