namespace PtLab.Traces;

/// <summary>
/// Matches the identities that different records give one file. A mapping records its file as
/// <c>/proc/PID/maps</c> and perf's MMAP2 do (<c>file_user_inode(vma-&gt;vm_file)</c>: the super
/// block's device and the inode number), and the residency rows of a trace use that identity
/// too; but <c>stat</c> and the page-cache tracepoints may name the same file otherwise:
/// <list type="bullet">
/// <item>btrfs: <c>stat</c>'s <c>st_dev</c> is the subvolume's anonymous device, not the super
/// block's (the maps device); the inode number is the same;</item>
/// <item>overlayfs: the page cache belongs to the inode of the layer the file lives on, so
/// <c>mm_filemap_add_to_page_cache</c> reports that layer's device (and its inode number, the
/// same as the overlay's when all layers share a file system), while maps reports the overlay's.</item>
/// </list>
/// A name is matched exactly first; otherwise it falls back to the one known file with the same
/// inode number on another device, provided one of the two devices is on a file system whose
/// identities can differ (overlay, btrfs, as the trace's file-system facts say: a trace without
/// them never falls back). A fallback that finds two such files matches neither.
/// </summary>
public sealed class FileKeys
{
    private readonly Func<DeviceNumber, string?> _fileSystemType;
    private readonly Dictionary<(DeviceNumber Dev, ulong Inode), DeviceNumber> _names = [];
    private readonly Dictionary<ulong, List<DeviceNumber>> _byInode = [];

    /// <param name="fileSystemType">The file system type of a device ("ext4", "overlay", "btrfs", …), or null where unknown.</param>
    public FileKeys(Func<DeviceNumber, string?> fileSystemType)
    {
        ArgumentNullException.ThrowIfNull(fileSystemType);
        _fileSystemType = fileSystemType;
    }

    /// <summary>A matcher that knows the file systems a trace's metadata describes.</summary>
    public FileKeys(IReadOnlyDictionary<DeviceNumber, FileSystemFact> fileSystems)
        : this(d => fileSystems.TryGetValue(d, out var f) ? f.Type : null)
    {
    }

    /// <summary>Files known (by their own identity).</summary>
    public int Count => _byInode.Values.Sum(l => l.Count);

    /// <summary>Names matched by the fallback (a device other than the file's own).</summary>
    public long Fallbacks { get; private set; }

    /// <summary>
    /// Makes the file (<paramref name="dev"/>, <paramref name="inode"/>) known under its own
    /// identity, as a mapping or residency row names it. Returns false when it was known already.
    /// </summary>
    public bool Add(DeviceNumber dev, ulong inode)
    {
        if (!_names.TryAdd((dev, inode), dev))
        {
            return false;
        }

        if (!_byInode.TryGetValue(inode, out var devices))
        {
            _byInode[inode] = devices = [];
        }

        devices.Add(dev);
        return true;
    }

    /// <summary>
    /// The device under which the known file that (<paramref name="dev"/>, <paramref name="inode"/>)
    /// names is known: the name itself, or, by the fallback, the one file with that inode whose
    /// device may give it another identity. A name matched by the fallback is remembered.
    /// </summary>
    public bool TryResolve(DeviceNumber dev, ulong inode, out DeviceNumber known)
    {
        if (_names.TryGetValue((dev, inode), out known))
        {
            return true;
        }

        known = default;
        if (inode == 0 || !_byInode.TryGetValue(inode, out var devices))
        {
            return false;
        }

        int found = 0;
        foreach (var d in devices)
        {
            if (d != dev && MayDiffer(d, dev))
            {
                known = d;
                found++;
            }
        }

        if (found != 1)
        {
            known = default;
            return false;
        }

        _names[(dev, inode)] = known;
        Fallbacks++;
        return true;
    }

    /// <summary>Whether two devices may name one file: one of them is on overlayfs or btrfs.</summary>
    public bool MayDiffer(DeviceNumber a, DeviceNumber b) => Stacked(a) || Stacked(b);

    private bool Stacked(DeviceNumber d) => _fileSystemType(d) is "overlay" or "btrfs";
}
