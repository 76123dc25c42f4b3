using PtLab.Traces;

namespace PtLab.Workloads.Replay;

/// <summary>
/// How a replay models a mapped file, from what the recording said of its file system
/// (<see cref="TraceMetadata.FileSystems"/>): a shmem file or a regular one, whether its page
/// cache gets large folios (<c>mapping_large_folio_support</c>), its readahead window, and the
/// basis of that choice, which the replay reports.
/// </summary>
/// <param name="Shmem">A tmpfs (shmem) file: RssShmem, pages allocated by their faults, no readahead.</param>
/// <param name="LargeFolios">Readahead builds large folios (<c>page_cache_ra_order</c> goes above order 0).</param>
/// <param name="ReadAheadKb">The device's <c>read_ahead_kb</c>, or null for the trace's default.</param>
/// <param name="Basis">Why: the file system named, or the assumption made where nothing was recorded.</param>
public sealed record FileModel(bool Shmem, bool LargeFolios, int? ReadAheadKb, string Basis)
{
    /// <summary>
    /// The model of a file on <paramref name="device"/> at <paramref name="path"/>, in a trace of
    /// format <paramref name="version"/> whose file system facts are <paramref name="fileSystems"/>
    /// (null: none to use).
    /// </summary>
    /// <remarks>
    /// The rules, as Linux 6.18 sets them on x86-64 with 4 KiB pages: xfs, bcachefs, erofs and
    /// zonefs call <c>mapping_set_large_folios</c> for every regular file; ext4 does (through
    /// <c>ext4_set_inode_mapping_order</c>) unless the file system journals data
    /// (<c>data=journal</c>) or maps it directly (<c>dax</c>), and, per file, unless the file has
    /// the journal-data flag or the file system verity or encryption (per-file facts a mount
    /// table does not show: such files replay with large folios); btrfs only in experimental
    /// builds, and vfat, msdos, exfat, ntfs3, iso9660 and hfsplus not at all. tmpfs is shmem:
    /// its pages come from their faults, not from readahead, at the sizes its <c>huge=</c>
    /// option allows (the model has no shmem huge pages: a tmpfs mounted with huge= other than
    /// never replays with small pages, and the basis says so). The internal shm mount behind a
    /// memfd, a SysV segment or a shared mapping of /dev/zero is in no mount table: those are recognised by their path. A file
    /// system the rules do not name, or a file whose device the trace has no fact for, keeps the
    /// model's assumption of large folios, and the basis says so.
    /// </remarks>
    public static FileModel Of(DeviceNumber? device, string? path, int version, IReadOnlyDictionary<DeviceNumber, FileSystemFact>? fileSystems)
    {
        if (path is { } p && (p.StartsWith("/memfd:", StringComparison.Ordinal) || p.StartsWith("/SYSV", StringComparison.Ordinal) || p == "/dev/zero (deleted)"))
        {
            return new(true, false, null, "shmem (memfd, SysV segment or shared /dev/zero, by its path)");
        }

        if (device is not { } dev || fileSystems is null || !fileSystems.TryGetValue(dev, out var fs))
        {
            return new(false, true, null, fileSystems is null
                ? $"large folios assumed: the trace records no file systems{(version < 3 ? $" (format {version})" : " (an import, or not used)")}"
                : "large folios assumed: the recorded mount table did not list the file's device");
        }

        var options = fs.Options.Split(',');
        string? Option(string name) => options.FirstOrDefault(o => o.StartsWith(name + "=", StringComparison.Ordinal))?[(name.Length + 1)..];
        switch (fs.Type)
        {
            case "tmpfs" or "devtmpfs":
                string huge = Option("huge") ?? "never";
                return new(true, false, null, huge == "never"
                    ? $"shmem ({fs.Type}, huge=never)"
                    : $"shmem ({fs.Type}, huge={huge}: replayed with small pages, the model has no shmem huge pages)");
            case "xfs" or "bcachefs" or "erofs" or "zonefs":
                return new(false, true, fs.ReadAheadKb, $"large folios ({fs.Type})");
            case "ext4":
                return Option("data") == "journal" || options.Any(o => o == "dax" || o.StartsWith("dax=", StringComparison.Ordinal) && o != "dax=never")
                    ? new(false, false, fs.ReadAheadKb, "no large folios (ext4 with data=journal or dax)")
                    : new(false, true, fs.ReadAheadKb, "large folios (ext4)");
            case "btrfs" or "vfat" or "msdos" or "exfat" or "ntfs3" or "iso9660" or "hfsplus":
                return new(false, false, fs.ReadAheadKb, $"no large folios ({fs.Type})");
            default:
                return new(false, true, fs.ReadAheadKb, $"large folios assumed: no rule for file system '{fs.Type}'");
        }
    }
}
