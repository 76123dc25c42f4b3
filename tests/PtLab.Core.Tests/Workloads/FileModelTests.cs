using PtLab.Traces;
using PtLab.Workloads.Replay;

namespace PtLab.Core.Tests.Workloads;

/// <summary>How the replay models a mapped file from its recorded file system (<see cref="FileModel.Of"/>).</summary>
public class FileModelTests
{
    private static readonly DeviceNumber Disk = new(0xfe, 0), Shm = new(0, 0x17);

    private static FileModel Of(string type, string options, DeviceNumber? dev = null, string? path = "/data/f", int version = 3) =>
        FileModel.Of(dev ?? Disk, path, version, new Dictionary<DeviceNumber, FileSystemFact> { [dev ?? Disk] = new(type, options, type == "tmpfs" ? null : 512) });

    [Theory]
    [InlineData("xfs", "rw,attr2", true)]
    [InlineData("ext4", "rw,relatime", true)]
    [InlineData("ext4", "rw,nodelalloc,data=journal", false)]
    [InlineData("ext4", "rw,dax=always", false)]
    [InlineData("ext4", "rw,dax=never", true)]
    [InlineData("btrfs", "rw,ssd", false)]
    [InlineData("vfat", "rw", false)]
    [InlineData("erofs", "ro", true)]
    public void ARegularFileGetsLargeFoliosAsItsFileSystemSays(string type, string options, bool large)
    {
        var m = Of(type, options);
        Assert.False(m.Shmem);
        Assert.Equal(large, m.LargeFolios);
        Assert.Equal(512, m.ReadAheadKb);
        Assert.DoesNotContain("assumed", m.Basis, StringComparison.Ordinal);
    }

    [Fact]
    public void AnUnknownFileSystemKeepsLargeFoliosAndSaysItAssumedThem()
    {
        var m = Of("nfs4", "rw,vers=4.2");
        Assert.True(m.LargeFolios);
        Assert.Contains("assumed", m.Basis, StringComparison.Ordinal);
        Assert.Contains("nfs4", m.Basis, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(2, false, "the trace records no file systems (format 2)")]
    [InlineData(3, true, "did not list the file's device")]
    public void AFileWithoutAFactKeepsLargeFoliosAndSaysWhy(int version, bool recorded, string why)
    {
        var m = FileModel.Of(new DeviceNumber(8, 1), "/x", version, recorded ? new Dictionary<DeviceNumber, FileSystemFact>() : null);
        Assert.False(m.Shmem);
        Assert.True(m.LargeFolios);
        Assert.Contains(why, m.Basis, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("rw,size=100k", "huge=never")]
    [InlineData("rw,huge=never", "huge=never")]
    [InlineData("rw,huge=within_size", "small pages")]
    public void ATmpfsFileIsShmemAndItsHugeOptionIsNamed(string options, string said)
    {
        var m = Of("tmpfs", options, Shm);
        Assert.True(m.Shmem);
        Assert.Contains(said, m.Basis, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("/memfd:buffer (deleted)")]
    [InlineData("/SYSV00000000 (deleted)")]
    public void AMemfdOrSysVSegmentIsShmemByItsPath(string path)
    {
        var m = FileModel.Of(new DeviceNumber(0, 1), path, 3, new Dictionary<DeviceNumber, FileSystemFact>());
        Assert.True(m.Shmem);
    }
}
