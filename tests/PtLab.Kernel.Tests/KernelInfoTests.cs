namespace PtLab.Kernel.Tests;

public sealed class KernelInfoTests
{
    private static KernelInfo Linux(string release, ConfigState ptReclaim) =>
        new() { IsLinux = true, IsX64 = true, Release = release, PtReclaim = ptReclaim };

    [Theory]
    [InlineData("6.18.44-fc-v669", 6, 18, 44)]
    [InlineData("6.14.0-rc3", 6, 14, 0)]
    [InlineData("5.18-rc2", 5, 18, -1)]
    public void ReleaseStringsGiveTheirVersion(string release, int major, int minor, int patch)
    {
        var v = KernelInfo.ParseRelease(release);
        Assert.Equal(patch < 0 ? new Version(major, minor) : new Version(major, minor, patch), v);
    }

    [Fact]
    public void AReleaseWithoutANumberHasNoVersion()
    {
        Assert.Null(KernelInfo.ParseRelease("unknown"));
    }

    [Fact]
    public void ConfigTextSaysWhetherAnOptionIsEnabled()
    {
        const string config = "CONFIG_ARCH_SUPPORTS_PT_RECLAIM=y\nCONFIG_PT_RECLAIM=y\n# CONFIG_FOO is not set\nCONFIG_BAR=m\n";
        Assert.Equal(ConfigState.Enabled, KernelInfo.ConfigOption(config, "CONFIG_PT_RECLAIM"));
        Assert.Equal(ConfigState.Disabled, KernelInfo.ConfigOption(config, "CONFIG_FOO"));
        Assert.Equal(ConfigState.Disabled, KernelInfo.ConfigOption(config, "CONFIG_BAR"));
        Assert.Equal(ConfigState.Disabled, KernelInfo.ConfigOption(config, "CONFIG_ABSENT"));
    }

    [Fact]
    public void AnOptionIsNotMistakenForALongerOneWithTheSamePrefix()
    {
        Assert.Equal(ConfigState.Disabled, KernelInfo.ConfigOption("CONFIG_PT_RECLAIM_EXTRA=y\n", "CONFIG_PT_RECLAIM"));
    }

    [Fact]
    public void PtReclaimMatchesOnlyLinuxSixFourteenOrLaterWithTheOptionOn()
    {
        Assert.Equal("pt-reclaim", Linux("6.14.0", ConfigState.Enabled).MatchingDesign);
        Assert.Equal("pt-reclaim", Linux("6.18.44-fc-v669", ConfigState.Enabled).MatchingDesign);
        Assert.Equal("none", Linux("6.13.9", ConfigState.Enabled).MatchingDesign);
        Assert.Equal("none", Linux("6.18.0", ConfigState.Disabled).MatchingDesign);
        Assert.Equal("none", Linux("6.18.0", ConfigState.Unknown).MatchingDesign);
        Assert.Equal("none", (Linux("6.18.0", ConfigState.Enabled) with { IsX64 = false }).MatchingDesign);
    }

    [Fact]
    public void AnUnknownConfigurationIsReportedAsUnknown()
    {
        Assert.Equal("unknown", Linux("6.18.0", ConfigState.Unknown).PtReclaimText);
    }

    [Fact]
    public void ANonLinuxHostSaysTheKernelTargetCannotRun()
    {
        var info = new KernelInfo { IsLinux = false, IsX64 = true, Release = "Microsoft Windows 10.0.26100", PtReclaim = ConfigState.Unknown };
        Assert.False(info.IsLinuxX64);
        Assert.Equal("none", info.MatchingDesign);
        Assert.Contains("not Linux x86-64", info.ToString());
    }

    [LinuxFact]
    public void ProbingThisHostReadsTheRunningKernel()
    {
        var info = KernelInfo.Probe();
        Assert.True(info.IsLinuxX64);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), info.Release);
        Assert.NotNull(info.ReleaseVersion);
        if (File.Exists("/proc/config.gz"))
        {
            Assert.Equal("/proc/config.gz", info.ConfigSource);
            Assert.NotEqual(ConfigState.Unknown, info.PtReclaim);
        }
    }
}

public sealed class KernelConfigSourceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-config-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TheCompressedProcConfigIsReadFirst()
    {
        string gz = Path.Combine(_dir, "config.gz");
        using (var file = File.Create(gz))
        using (var zip = new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionLevel.Fastest))
        {
            zip.Write("CONFIG_PT_RECLAIM=y\n"u8);
        }

        File.WriteAllText(Path.Combine(_dir, "config-6.18.0"), "# CONFIG_PT_RECLAIM is not set\n");
        var info = KernelInfo.ForLinux("6.18.0", isX64: true, gz, _dir);
        Assert.Equal(ConfigState.Enabled, info.PtReclaim);
        Assert.Equal(gz, info.ConfigSource);
        Assert.Equal("pt-reclaim", info.MatchingDesign);
    }

    [Fact]
    public void TheBootConfigOfTheRunningReleaseIsTheFallback()
    {
        File.WriteAllText(Path.Combine(_dir, "config-6.18.0"), "# CONFIG_PT_RECLAIM is not set\n");
        var info = KernelInfo.ForLinux("6.18.0", isX64: true, Path.Combine(_dir, "absent.gz"), _dir);
        Assert.Equal(ConfigState.Disabled, info.PtReclaim);
        Assert.Equal("n", info.PtReclaimText);
        Assert.Equal("none", info.MatchingDesign);
    }

    [Fact]
    public void WithNeitherConfigurationThePtReclaimAnswerIsUnknown()
    {
        var info = KernelInfo.ForLinux("6.18.0", isX64: true, Path.Combine(_dir, "absent.gz"), _dir);
        Assert.Equal("unknown", info.PtReclaimText);
        Assert.Null(info.ConfigSource);
        Assert.Equal("none", info.MatchingDesign);
    }

    [Fact]
    public void AConfigGzThatIsNotGzipCountsAsAbsent()
    {
        string gz = Path.Combine(_dir, "config.gz");
        File.WriteAllText(gz, "plain text, not gzip");
        Assert.Equal(ConfigState.Unknown, KernelInfo.ForLinux("6.18.0", isX64: true, gz, _dir).PtReclaim);
    }

    [Fact]
    public void HugetlbPoolsAreReadFromSysfsWithTheDefaultSizeFirst()
    {
        string sys = Path.Combine(_dir, "hugepages");
        void Size(long kb, long free, long resv, long overcommit, long surplus)
        {
            string d = Directory.CreateDirectory(Path.Combine(sys, $"hugepages-{kb}kB")).FullName;
            File.WriteAllText(Path.Combine(d, "free_hugepages"), $"{free}\n");
            File.WriteAllText(Path.Combine(d, "resv_hugepages"), $"{resv}\n");
            File.WriteAllText(Path.Combine(d, "nr_overcommit_hugepages"), $"{overcommit}\n");
            File.WriteAllText(Path.Combine(d, "surplus_hugepages"), $"{surplus}\n");
        }

        Size(1048576, 2, 0, 0, 0);
        Size(2048, 10, 4, 3, 1);
        string meminfo = Path.Combine(_dir, "meminfo");
        File.WriteAllText(meminfo, "MemTotal:       24000000 kB\nHugepagesize:       2048 kB\nHugetlb:               0 kB\n");
        var pools = KernelInfo.ReadHugetlbPools(sys, meminfo);
        Assert.NotNull(pools);
        Assert.Equal("21:8,30:2", PtLab.Mm.HugetlbPool.Format(pools)); // 10 free less 4 reserved, plus 3 less 1 surplus

        File.WriteAllText(meminfo, "Hugepagesize:    1048576 kB\n"); // booted with default_hugepagesz=1G
        Assert.Equal("30:2,21:8", PtLab.Mm.HugetlbPool.Format(KernelInfo.ReadHugetlbPools(sys, meminfo)!));

        File.WriteAllText(Path.Combine(sys, "hugepages-2048kB", "free_hugepages"), "many\n");
        Assert.Null(KernelInfo.ReadHugetlbPools(sys, meminfo));
        Assert.Null(KernelInfo.ReadHugetlbPools(Path.Combine(_dir, "none"), meminfo));
    }
}
