namespace PtLab.Traces.Tests;

/// <summary>
/// Matching the identities records give one file: maps and MMAP2 name the super block's device
/// (file_user_inode), the page-cache tracepoints the device of the inode that owns the cache, and
/// stat a btrfs subvolume's own device. The devices and inode numbers below are those such a
/// host reports.
/// </summary>
public sealed class FileKeysTests
{
    private static readonly DeviceNumber Ext4 = new(0xfe, 0), Tmpfs = new(0, 0x1a), Overlay = new(0, 0x2f), Btrfs = new(0, 0x23), Subvolume = new(0, 0x31);

    private static FileKeys Keys() => new(new Dictionary<DeviceNumber, FileSystemFact>
    {
        [Ext4] = new("ext4", "rw,relatime", 128),
        [Tmpfs] = new("tmpfs", "rw", null),
        [Overlay] = new("overlay", "rw,lowerdir=/l,upperdir=/u,workdir=/w", null),
        [Btrfs] = new("btrfs", "rw,subvol=/home", 128),
    });

    /// <summary>The known file a name resolves to, or null.</summary>
    private static DeviceNumber? Resolve(FileKeys keys, DeviceNumber dev, ulong inode) => keys.TryResolve(dev, inode, out var known) ? known : null;

    [Fact]
    public void AFileIsFoundByTheIdentityItWasAddedUnder()
    {
        var keys = Keys();
        Assert.True(keys.Add(Ext4, 1234));
        Assert.False(keys.Add(Ext4, 1234));
        Assert.Equal(Ext4, Resolve(keys, Ext4, 1234));
        Assert.Null(Resolve(keys, Ext4, 1235));
        Assert.Equal(0, keys.Fallbacks);
    }

    /// <summary>
    /// An overlay file: maps and the residency row say 00:2f (the overlay) with the overlay's inode
    /// number, the tracepoint fe:00 (the upper layer, ext4) with the same number (all layers on one
    /// file system). The tracepoint's name falls back to the overlay's file, and stays matched.
    /// </summary>
    [Fact]
    public void AnOverlayFilesPageCacheChangesMatchTheMappingByInode()
    {
        var keys = Keys();
        keys.Add(Overlay, 1234);
        Assert.Equal([Overlay, Overlay], new[] { Resolve(keys, Ext4, 1234), Resolve(keys, Ext4, 1234) });
        Assert.Equal(1, keys.Fallbacks);
    }

    /// <summary>
    /// A btrfs file in a subvolume: a version 4 residency row named stat's device (00:31, the
    /// subvolume's, which no mount table lists), maps the super block's (00:23). The mapping finds
    /// the residency's file.
    /// </summary>
    [Fact]
    public void ABtrfsFileRecordedUnderTheSubvolumesDeviceMatchesItsMapping()
    {
        var keys = Keys();
        keys.Add(Subvolume, 77);
        Assert.Equal(Subvolume, Resolve(keys, Btrfs, 77));
    }

    /// <summary>Two plain file systems (ext4, tmpfs) never share a file, whatever the inode numbers; nor do files of a trace without file-system facts.</summary>
    [Fact]
    public void TheSameInodeNumberOnTwoPlainFileSystemsIsTwoFiles()
    {
        var keys = Keys();
        keys.Add(Tmpfs, 5);
        Assert.Null(Resolve(keys, Ext4, 5));
        var bare = new FileKeys(new Dictionary<DeviceNumber, FileSystemFact>());
        bare.Add(Overlay, 5);
        Assert.Null(Resolve(bare, Ext4, 5));
    }

    /// <summary>Two overlay mounts with a file of the same inode number: a layer's name could be either, so it matches neither.</summary>
    [Fact]
    public void AnAmbiguousFallbackMatchesNothing()
    {
        var keys = new FileKeys(d => d == Ext4 ? "ext4" : "overlay");
        keys.Add(Overlay, 9);
        keys.Add(new DeviceNumber(0, 0x30), 9);
        Assert.Null(Resolve(keys, Ext4, 9));
        Assert.Equal(0, keys.Fallbacks);
    }
}
