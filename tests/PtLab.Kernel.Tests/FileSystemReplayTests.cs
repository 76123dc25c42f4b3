using System.Diagnostics;
using System.Globalization;
using PtLab.Kernel.Record;
using PtLab.Reclaim;
using PtLab.Traces;
using PtLab.Workloads.Replay;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>
/// Recorded programs whose file mappings depend on the file system and on the open file: a file
/// on tmpfs (shmem pages, no readahead), a file on an ext4 that journals data (no large folios),
/// and a file opened twice and read through both opens at once (a readahead state per open).
/// Each is replayed on the host's design and must give the kernel's exit VmPTE and file RSS within
/// the replay's tolerances; where the host lacks what a test needs, it says so and returns.
/// </summary>
public sealed class FileSystemReplayTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-fs-replay-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Record(string program, string dir)
    {
        string exe = TestPrograms.Build(program);
        string trace = Path.Combine(_dir, program + ".parquet");
        var recorded = Recorder.Run(
            new RecordOptions { Output = trace, Command = [exe, dir], CommandStdout = Path.Combine(_dir, program + ".out"), Interval = TimeSpan.FromMilliseconds(20) },
            TextWriter.Null, default);
        Assert.Equal(0, recorded.ExitCode);
        return trace;
    }

    private ReplayResult Replay(string trace, Func<ReplayOptions, ReplayOptions>? change = null)
    {
        using var reader = TraceReader.Open(trace);
        string design = reader.Metadata.Host[HostFacts.MatchingDesign];
        var options = new ReplayOptions { Design = design, DesignFactory = Designs.Factory(design)!, RamBytes = 8L << 30, Cpus = 2 }.WithHostOf(reader.Metadata);
        options = change?.Invoke(options) ?? options;
        var r = new TraceReplayer(trace, options);
        foreach (var batch in reader.ReadBatches())
        {
            r.Apply(batch);
        }

        var result = r.Finish();
        output.WriteLine("file models: " + string.Join("; ", result.FileModels.Select(f => $"{f.Value} × {f.Key}")));
        return result;
    }

    /// <summary>The main process's exit sample: the kernel's figures and the model's.</summary>
    private ReplaySample Exit(ReplayResult r, string label)
    {
        var exit = r.Processes.Single().Samples.Last(s => s.Kind == TraceEventKind.StatusExit);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{label}: VmPTE {exit.Compared.VmPteKb}/{exit.Kernel.VmPteKb} kB, RssFile {exit.Compared.RssFileKb}/{exit.Kernel.RssFileKb} kB, RssShmem {exit.Compared.RssShmemKb}/{exit.Kernel.RssShmemKb} kB (model/kernel)"));
        return exit;
    }

    private static void WithinExit(long kernel, long model, string what) =>
        Assert.True(ReplayFidelity.Within(kernel, model, ReplayFidelity.ExitPercent), $"exit {what} {model} kB in the model, {kernel} kB in the kernel");

    /// <summary>
    /// seqfile's 48 MiB file on tmpfs (huge=never): shmem pages, each allocated by its fault,
    /// counted as RssShmem. The trace's file system fact makes the replay model it so; without it
    /// the model read the file ahead in large folios as a disk file and counted RssFile.
    /// </summary>
    [RecordFact]
    public void AFileOnTmpfsIsShmem()
    {
        const string shm = "/dev/shm";
        // The last mount on the directory is the one a path there reaches.
        var mount = File.ReadLines("/proc/self/mountinfo").Where(l => l.Split(' ') is { Length: > 4 } f && f[4] == shm)
            .Select(FileSystemProbe.ParseMountInfoLine).LastOrDefault();
        if (mount is not { Type: "tmpfs" } m)
        {
            output.WriteLine($"SKIP: {shm} is not a tmpfs mount here");
            return;
        }

        if (m.Options.Split(',').FirstOrDefault(o => o.StartsWith("huge=", StringComparison.Ordinal)) is { } huge && huge != "huge=never")
        {
            output.WriteLine($"SKIP: {shm} is mounted {huge}; the model has no shmem huge pages");
            return;
        }

        string dir = Directory.CreateDirectory(Path.Combine(shm, $"ptlab-fs-{Guid.NewGuid():N}")).FullName;
        string trace;
        try
        {
            trace = Record("seqfile", dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        var r = Replay(trace);
        Assert.Contains(r.FileModels.Keys, k => k.StartsWith("shmem (tmpfs", StringComparison.Ordinal));
        var exit = Exit(r, "tmpfs");
        WithinExit(exit.Kernel.VmPteKb, exit.Compared.VmPteKb, "VmPTE");
        WithinExit(exit.Kernel.RssShmemKb, exit.Compared.RssShmemKb, "RssShmem");
        Assert.True(exit.Kernel.RssShmemKb >= 48 << 10, $"the kernel counted {exit.Kernel.RssShmemKb} kB of shmem: the file was not on tmpfs");

        var assumed = Exit(Replay(trace, o => o with { FileSystems = null }), "tmpfs, file systems ignored");
        Assert.False(ReplayFidelity.Within(assumed.Kernel.RssShmemKb, assumed.Compared.RssShmemKb, ReplayFidelity.ExitPercent), "without the file system fact the file should replay as a disk file");
    }

    /// <summary>
    /// seqfile's file on an ext4 mounted data=journal (a loop device), where Linux 6.18 gives the
    /// page cache no large folios: readahead brings order-0 pages only, so no fault maps a PMD
    /// and every 2 MiB of the mapping keeps its PTE table. Replayed with the recorded file system,
    /// the model does the same; with the assumption of large folios (and without the recorded
    /// page-cache changes, which bring the host's order-0 pages in) it maps PMD-sized folios by
    /// PMD entries and misses the kernel's tables.
    /// </summary>
    [RecordFact]
    public void AFileWithoutLargeFolios()
    {
        if (KernelInfo.Probe().ReleaseVersion is not { } v || v < new Version(6, 16))
        {
            output.WriteLine("SKIP: the host kernel is older than 6.16, whose ext4 reads other files in large folios");
            return;
        }

        string image = Path.Combine(_dir, "ext4.img"), mnt = Directory.CreateDirectory(Path.Combine(_dir, "mnt")).FullName;
        using (var f = File.Create(image))
        {
            f.SetLength(96L << 20);
        }

        if (Run("mkfs.ext4", $"-q -F {image}") is { } mkfsError)
        {
            output.WriteLine($"SKIP: mkfs.ext4 failed: {mkfsError}");
            return;
        }

        if (Run("mount", $"-o loop,data=journal {image} {mnt}") is { } mountError)
        {
            output.WriteLine($"SKIP: cannot loop-mount an ext4 image with data=journal: {mountError}");
            return;
        }

        string trace;
        try
        {
            trace = Record("seqfile", mnt);
        }
        finally
        {
            Run("umount", mnt);
        }

        var r = Replay(trace);
        Assert.Contains("no large folios (ext4 with data=journal or dax)", r.FileModels.Keys);
        var exit = Exit(r, "ext4 data=journal");
        WithinExit(exit.Kernel.VmPteKb, exit.Compared.VmPteKb, "VmPTE");
        WithinExit(exit.Kernel.RssFileKb, exit.Compared.RssFileKb, "RssFile");

        // The assumption alone: without the file system fact and without the page-cache changes,
        // which would otherwise bring the host's order-0 pages in before the model's own readahead.
        var assumed = Exit(Replay(trace, o => o with { FileSystems = null, PageCacheState = false }), "ext4 data=journal, large folios assumed");
        Assert.True(assumed.Compared.VmPteKb < exit.Kernel.VmPteKb, "with large folios assumed the model should map PMD folios and keep fewer tables than the kernel");
    }

    /// <summary>
    /// twoopens: one 64 MiB file opened twice, each open mapped, the halves read in order through
    /// the two mappings at once. With a readahead state per open each stream grows its folios as a
    /// lone reader does, and the replay gives the kernel's exit VmPTE and RssFile.
    /// </summary>
    [RecordFact]
    public void TwoOpensReadAheadIndependently()
    {
        if (KernelInfo.Probe().ReleaseVersion is not { } v || v < new Version(6, 16))
        {
            output.WriteLine("SKIP: the host kernel is older than 6.16, whose ext4 reads files in large folios");
            return;
        }

        var dir = Directory.CreateDirectory(Path.Combine(KernelTarget.DiskBackedTempDirectory(), $"ptlab-fs-{Guid.NewGuid():N}"));
        string trace;
        try
        {
            trace = Record("twoopens", dir.FullName);
        }
        finally
        {
            dir.Delete(recursive: true);
        }

        var r = Replay(trace);
        var exit = Exit(r, "two opens");
        WithinExit(exit.Kernel.VmPteKb, exit.Compared.VmPteKb, "VmPTE");
        WithinExit(exit.Kernel.RssFileKb, exit.Compared.RssFileKb, "RssFile");

        // One readahead state for the file: the streams take each other's marks for misses.
        var shared = Exit(Replay(trace, o => o with { ReadAheadPerOpen = false }), "two opens, one readahead state per file");
        output.WriteLine($"per file instead of per open: VmPTE {shared.Compared.VmPteKb - exit.Compared.VmPteKb:+0;-0;0} kB, RssFile {shared.Compared.RssFileKb - exit.Compared.RssFileKb:+0;-0;0} kB");
        Assert.False(ReplayFidelity.Within(shared.Kernel.VmPteKb, shared.Compared.VmPteKb, ReplayFidelity.ExitPercent), "with one readahead state per file the streams should have missed the kernel's tables");
    }

    /// <summary>Runs a command; null when it succeeded, else what it said.</summary>
    private static string? Run(string file, string args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            string err = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? null : $"exit {p.ExitCode}: {err.Trim()}";
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return e.Message;
        }
    }
}

/// <summary>The recorder's reading of the mount table (<see cref="FileSystemProbe"/>).</summary>
public sealed class FileSystemProbeTests
{
    [Theory]
    [InlineData("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard", 254u, 0u, "ext4", "rw,discard")]
    [InlineData("36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue", 98u, 0u, "ext3", "rw,errors=continue")]
    [InlineData("30 25 0:27 / /dev/shm rw,relatime shared:5 - tmpfs tmpfs rw,size=24684092k,huge=always", 0u, 27u, "tmpfs", "rw,size=24684092k,huge=always")]
    public void AMountInfoLineGivesDeviceTypeAndSuperOptions(string line, uint major, uint minor, string type, string options)
    {
        var m = FileSystemProbe.ParseMountInfoLine(line);
        Assert.Equal((new DeviceNumber(major, minor), type, options), m);
    }

    [Theory]
    [InlineData("")]
    [InlineData("27 1 254:0 / / rw,relatime ext4 /dev/vda rw")]
    [InlineData("27 1 x:0 / / rw - ext4 /dev/vda rw")]
    public void ALineOfAnotherShapeIsSkipped(string line) => Assert.Null(FileSystemProbe.ParseMountInfoLine(line));

    [Fact]
    public void TheRootFileSystemIsFoundByItsDevice()
    {
        if (!File.Exists("/proc/self/mountinfo"))
        {
            Console.WriteLine("SKIP: no /proc/self/mountinfo (not Linux)");
            return;
        }

        // The device of / as stat gives it, looked up in the mount table.
        var root = FileSystemProbe.ParseMountInfoLine(File.ReadLines("/proc/self/mountinfo").Last(l => l.Split(' ') is { Length: > 4 } f && f[4] == "/"))!.Value;
        var facts = FileSystemProbe.For([root.Device]);
        Assert.Equal(root.Type, facts[root.Device].Type);
    }
}
