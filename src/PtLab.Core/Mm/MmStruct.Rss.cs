using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Mm;

/// <summary>The <c>mm-&gt;rss_stat</c> counters a mapped page can count in.</summary>
internal enum MmCounter
{
    /// <summary><c>MM_ANONPAGES</c>: anonymous pages (RssAnon).</summary>
    Anon,
    /// <summary><c>MM_FILEPAGES</c>: page-cache pages of regular files (RssFile).</summary>
    File,
    /// <summary><c>MM_SHMEMPAGES</c>: shmem pages (RssShmem).</summary>
    Shmem,
}

// The RSS counters of file and shmem pages, beside RssAnon.
public sealed partial class MmStruct
{
    private readonly PerCpuCounter _rssFile;
    private readonly PerCpuCounter _rssShmem;

    /// <summary><c>mm_counter</c>: which RSS counter a mapped page counts in.</summary>
    internal static MmCounter CounterOf(ref PageDescriptor d) =>
        (d.Flags & (int)PageFlags.Anon) != 0 ? MmCounter.Anon
        : (d.Flags & (int)PageFlags.SwapBacked) != 0 ? MmCounter.Shmem
        : MmCounter.File;

    /// <summary>
    /// <c>mm_counter</c> of the page in frame <paramref name="pfn"/>, read from its folio's head
    /// (a sub-page of a split huge page carries no type of its own).
    /// </summary>
    internal MmCounter CounterOf(long pfn) => CounterOf(ref Phys.Desc(Phys.CompoundHead(pfn)));

    /// <summary><c>add_mm_counter</c>.</summary>
    internal void AddRss(Cpu? cpu, MmCounter counter, long pages)
    {
        switch (counter)
        {
            case MmCounter.Anon:
                AddRssAnon(cpu, pages);
                break;
            case MmCounter.File:
                _rssFile.Add(cpu?.Id ?? -1, pages);
                break;
            default:
                _rssShmem.Add(cpu?.Id ?? -1, pages);
                break;
        }
    }

    /// <summary>Whether the page in frame <paramref name="pfn"/> is anonymous (<c>folio_test_anon</c>).</summary>
    internal bool IsAnonPage(long pfn) => (Phys.Desc(Phys.CompoundHead(pfn)).Flags & (int)PageFlags.Anon) != 0;
}
