using System.Text.Json;
using PtLab.Kernel.Fuzz;

namespace PtLab.Tests;

/// <summary><c>ptlab fuzz kernel</c>: its arguments, case replay, and a short run where a host kernel side exists.</summary>
public class FuzzKernelCommandTests
{
    private const string IssueCase = """
        # the mprotect unaccounting case
        slot 0x7e0000000000
        design pt-reclaim
        memtotal 24684092
        mmap S+0x2c5e000 0x600000 PROT_READ MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS => S+0x2c5e000 pte=0 anon=0 | S+0x2c5e000-S+0x325e000:r--p
        mmap S+0x2e87000 0x244000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS => S+0x2e87000 pte=0 anon=0 | S+0x2c5e000-S+0x2e87000:r--p S+0x2e87000-S+0x30cb000:rw-p S+0x30cb000-S+0x325e000:r--p
        mprotect S+0x2e00000 0x54f000 PROT_READ => ENOMEM pte=0 anon=0 | S+0x2c5e000-S+0x325e000:r--p
        read S+0x2e9a000 0x400000 => SIGSEGV:SEGV_MAPERR@S+0x325e000 pte=20 anon=0 | S+0x2c5e000-S+0x325e000:r--p
        madvise S+0x2c0b000 0x400000 MADV_DONTNEED => ENOMEM pte=16 anon=0 | S+0x2c5e000-S+0x325e000:r--p
        """;

    [Theory]
    [InlineData("--sequences", "fuzz", "kernel", "--sequences", "0")]
    [InlineData("--sequences", "fuzz", "kernel", "--sequences", "many")]
    [InlineData("--ops", "fuzz", "kernel", "--ops", "0")]
    [InlineData("--design", "fuzz", "kernel", "--design", "magic")]
    [InlineData("--format", "fuzz", "kernel", "--format", "csv")]
    [InlineData("--replay", "fuzz", "kernel", "--replay", "no-such-file.case")]
    public void BadArgumentsGetOneLineNamingTheOptionAndExitCodeTwo(string option, params string[] args)
    {
        var (code, output, err) = CommandTests.Run(args);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
        Assert.Contains(option, line);
    }

    [Fact]
    public void ABadCaseFileIsNamedWithItsLine()
    {
        string file = Path.Combine(Path.GetTempPath(), $"ptlab-fuzz-{Guid.NewGuid():N}.case");
        File.WriteAllText(file, "slot 0x7e0000000000\nmunmap S+0x1000\n");
        try
        {
            var (code, output, err) = CommandTests.Run("fuzz", "kernel", "--replay", file);
            Assert.Equal(2, code);
            Assert.Equal("", output);
            Assert.Contains($"{file}:2: munmap takes 2 arguments", err);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void ARecordedCaseReplaysAndTheModelGivesEveryRecordedAnswer()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"ptlab-fuzz-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        string file = Path.Combine(dir, "issue.case");
        File.WriteAllText(file, IssueCase);
        try
        {
            var (code, output, err) = CommandTests.Run("fuzz", "kernel", "--replay", file, "--out", dir, "--format", "json");
            Assert.True(code == 0, err + output);
            using var doc = JsonDocument.Parse(output);
            var root = doc.RootElement;
            Assert.Equal(5, root.GetProperty("operations").GetInt32());
            Assert.Equal(JsonValueKind.Null, root.GetProperty("difference").ValueKind);
            Assert.Empty(root.GetProperty("modelAgainstRecorded").EnumerateArray());
            Assert.Equal(KernelExecutor.IsAvailable(out _), root.GetProperty("hostKernel").GetBoolean());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void AShortRunReportsItsOperationsAndCoverage()
    {
        if (!KernelExecutor.IsAvailable(out string why))
        {
            var (c, _, e) = CommandTests.Run("fuzz", "kernel", "--sequences", "1", "--ops", "10");
            Assert.Equal(1, c);
            Assert.Contains(why, e); // the reason, on one line, instead of a run
            return;
        }

        string dir = Path.Combine(Path.GetTempPath(), $"ptlab-fuzz-{Guid.NewGuid():N}");
        try
        {
            var (code, output, err) = CommandTests.Run("fuzz", "kernel", "--seed", "5", "--sequences", "2", "--ops", "60", "--out", dir, "--format", "json");
            Assert.True(code == 0, err + output);
            using var doc = JsonDocument.Parse(output);
            var root = doc.RootElement;
            Assert.Equal(120, root.GetProperty("operations").GetInt64());
            Assert.Equal(0, root.GetProperty("differences").GetInt32());
            Assert.Equal(2, root.GetProperty("sequences").GetInt32());
            Assert.True(root.GetProperty("coverage").EnumerateObject().Any());
            Assert.False(Directory.Exists(dir)); // no difference, no case file
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
