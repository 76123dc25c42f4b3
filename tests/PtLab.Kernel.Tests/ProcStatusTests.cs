using PtLab.Mm;

namespace PtLab.Kernel.Tests;

public sealed class ProcStatusTests
{
    // Trimmed from a Linux 6.18 /proc/self/status.
    private const string Sample = """
        Name:	cover
        Umask:	0022
        State:	R (running)
        Pid:	4242
        VmPeak:	52431276 kB
        VmSize:	52431276 kB
        VmLck:	       0 kB
        VmPin:	       0 kB
        VmHWM:	    3548 kB
        VmRSS:	    1560 kB
        RssAnon:	     104 kB
        RssFile:	    1456 kB
        RssShmem:	       0 kB
        VmData:	52428932 kB
        VmStk:	     132 kB
        VmExe:	       4 kB
        VmLib:	    1764 kB
        VmPTE:	     240 kB
        VmSwap:	       0 kB
        HugetlbPages:	       0 kB
        Threads:	1
        """;

    [Fact]
    public void ParsingSampleStatusTextReadsEveryMemoryFigureInKilobytes()
    {
        var s = ProcStatus.Parse(Sample);
        Assert.Equal(new MmStatus(52431276, 1560, 104, 1456, 0, 0, 240, default), s);
    }

    [Fact]
    public void ParsingLeavesThePerLevelTableCountsAtZeroBecauseProcDoesNotReportThem()
    {
        var s = ProcStatus.Parse(Sample);
        Assert.Equal(default, s.Tables);
        Assert.Equal(60, ProcStatus.TotalTables(s));
    }

    [Fact]
    public void ParsingAcceptsWindowsLineEndings()
    {
        Assert.Equal(240, ProcStatus.Parse(Sample.Replace("\n", "\r\n")).VmPteKb);
    }

    [Fact]
    public void AMissingFieldIsReportedByName()
    {
        string text = Sample.Replace("VmPTE:\t     240 kB\n", "");
        Assert.False(ProcStatus.TryParse(text, out _, out string? error));
        Assert.Contains("VmPTE", error);
        var ex = Assert.Throws<FormatException>(() => ProcStatus.Parse(text));
        Assert.Contains("VmPTE", ex.Message);
    }

    [Fact]
    public void AMalformedFigureIsReportedWithItsLine()
    {
        string text = Sample.Replace("VmRSS:\t    1560 kB", "VmRSS:\t    lots kB");
        Assert.False(ProcStatus.TryParse(text, out _, out string? error));
        Assert.Contains("VmRSS", error);
        Assert.Contains("lots", error);
    }

    [Fact]
    public void KernelThreadStatusWithoutMemoryLinesIsRejectedClearly()
    {
        Assert.False(ProcStatus.TryParse("Name:\tkthreadd\nState:\tS (sleeping)\n", out _, out string? error));
        Assert.Contains("no VmSize line", error);
    }

    [LinuxFact]
    public void ReadingThisProcessGivesPlausibleFigures()
    {
        var s = ProcStatus.ReadSelf();
        Assert.True(s.VmSizeKb > 0);
        Assert.True(s.VmPteKb > 0 && s.VmPteKb % 4 == 0, $"VmPTE {s.VmPteKb} kB is not a whole number of 4 KiB tables");
        Assert.Equal(s.VmRssKb, s.RssAnonKb + s.RssFileKb + s.RssShmemKb);
    }
}
