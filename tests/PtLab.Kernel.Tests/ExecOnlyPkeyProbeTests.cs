using PtLab.Kernel;
using Xunit.Abstractions;

namespace PtLab.Tests;

/// <summary>The host probe for execute-only protection keys.</summary>
public class ExecOnlyPkeyProbeTests(ITestOutputHelper output)
{
    [Fact]
    public void TheKeyIsReadFromTheEntryThatStartsAtTheAddress()
    {
        string[] smaps =
        [
            "7f0000000000-7f0000001000 rw-p 00000000 00:00 0",
            "Size:                  4 kB",
            "ProtectionKey:         0",
            "7f0000002000-7f0000003000 --xp 00000000 00:00 0",
            "Size:                  4 kB",
            "VmFlags: ex mr mw me",
            "ProtectionKey:         1",
            "7f0000004000-7f0000005000 --xp 00000000 00:00 0 /lib/x.so",
            "Size:                  4 kB",
        ];
        Assert.Equal(0, ExecOnlyPkeyProbe.KeyOf(0x7f0000000000, smaps));
        Assert.Equal(1, ExecOnlyPkeyProbe.KeyOf(0x7f0000002000, smaps));
        Assert.Null(ExecOnlyPkeyProbe.KeyOf(0x7f0000004000, smaps)); // no key shown: keys are off
        Assert.Null(ExecOnlyPkeyProbe.KeyOf(0x7f0000006000, smaps));
    }

    /// <summary>
    /// The kernel gives execute-only VMAs a key exactly where it enabled protection keys, which
    /// /proc/cpuinfo shows as the <c>ospke</c> flag.
    /// </summary>
    [Fact]
    public void TheProbeAgreesWithTheCpuFlagThatSaysTheKernelEnabledKeys()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo"))
        {
            output.WriteLine("SKIP: not Linux, or no /proc/cpuinfo");
            return;
        }

        bool ospke = File.ReadLines("/proc/cpuinfo").Any(l => l.StartsWith("flags", StringComparison.Ordinal) && l.Split(' ').Contains("ospke"));
        output.WriteLine($"ospke {ospke}, probe {ExecOnlyPkeyProbe.ExecOnlyPkey}");
        Assert.Equal(ospke, ExecOnlyPkeyProbe.ExecOnlyPkey);
    }
}
