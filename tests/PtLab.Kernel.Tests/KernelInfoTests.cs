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
