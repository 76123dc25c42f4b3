namespace PtLab.Mm;

/// <summary>
/// <c>struct file_ra_state</c>: the readahead state of one open file (<c>file-&gt;f_ra</c>). The
/// kernel keeps one in every <c>struct file</c>, so two opens of one file, or two processes that
/// opened it each, read ahead independently, and a mapping's faults use the state of the file
/// it was mapped from (<c>vma-&gt;vm_file-&gt;f_ra</c>); a forked child shares its parent's open
/// files and so their states. Its fields are read and written under the lock of the file it
/// belongs to (<see cref="SimFile"/>), as the page cache's other state is.
/// </summary>
public sealed class FileRaState
{
    internal FileRaState(SimFile file) => File = file;

    /// <summary>The file this state reads ahead in.</summary>
    public SimFile File { get; }

    /// <summary>The last window's first page (<c>start</c>).</summary>
    internal ulong Start;

    /// <summary>The last window's pages (<c>size</c>).</summary>
    internal ulong Size;

    /// <summary>The window's asynchronous part, from its end (<c>async_size</c>).</summary>
    internal ulong AsyncSize;

    /// <summary>The folio order the last window used (<c>order</c>).</summary>
    internal int Order;

    /// <summary>Faults that missed the cache, less fault-around's hits (<c>mmap_miss</c>).</summary>
    internal int MmapMiss;

    /// <summary>The end of the last <c>read()</c> in bytes (<c>prev_pos</c>; all ones before any).</summary>
    internal ulong PrevPos = ulong.MaxValue;

    /// <summary>The last window: first page, pages, asynchronous part, folio order (for tests and reports).</summary>
    public (ulong Start, ulong Size, ulong AsyncSize, int Order) Window
    {
        get
        {
            lock (File.RaLock)
            {
                return (Start, Size, AsyncSize, Order);
            }
        }
    }
}
