using System.Text.Json;
using PtLab.Traces;

namespace PtLab.Tests;

public sealed class TraceCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-cli-trace-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = PtLab.Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private string ImportSample()
    {
        string text = Path.Combine(_dir, "sample.txt");
        File.WriteAllLines(text, TraceFuzzer.SamplePerfText());
        string trace = Path.Combine(_dir, "sample.parquet");
        var (code, _, err) = Run("trace", "import", text, "-o", trace);
        Assert.True(code == 0, err);
        return trace;
    }

    [Fact]
    public void ImportThenInfoCountsTheSamplesEvents()
    {
        string trace = ImportSample();
        var (code, output, _) = Run("trace", "info", trace, "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal("import", root.GetProperty("source").GetString());
        Assert.Equal(2, root.GetProperty("events").GetProperty("madvise").GetInt64());
        Assert.Equal(1, root.GetProperty("events").GetProperty("newtask").GetInt64());
        Assert.False(root.GetProperty("truncated").GetBoolean());
        var process = Assert.Single(root.GetProperty("processes").EnumerateArray());
        Assert.Equal("./sample", process.GetProperty("name").GetString());
        Assert.Equal(2, process.GetProperty("threads").GetInt32());

        var (textCode, text, _) = Run("trace", "info", trace);
        Assert.Equal(0, textCode);
        Assert.Contains("madvise", text);
        Assert.Contains("complete", text);
    }

    [Fact]
    public void AMalformedTraceIsOneLineNamingTheFileAndExitTwo()
    {
        string trace = ImportSample();
        byte[] bytes = File.ReadAllBytes(trace);
        File.WriteAllBytes(trace, bytes[..(bytes.Length / 2)]);
        var (code, output, err) = Run("trace", "info", trace);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"ptlab: {trace}: ", line);
    }

    [Fact]
    public void AGarbageLineInPerfTextIsOneLineNamingTheLineAndExitTwo()
    {
        string text = Path.Combine(_dir, "bad.txt");
        var lines = TraceFuzzer.SamplePerfText().ToList();
        lines.Insert(10, "garbage");
        File.WriteAllLines(text, lines);
        var (code, _, err) = Run("trace", "import", text, "-o", Path.Combine(_dir, "bad.parquet"));
        Assert.Equal(2, code);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"ptlab: {text}:11: ", line);
        Assert.False(File.Exists(Path.Combine(_dir, "bad.parquet")));
    }

    [Fact]
    public void AMissingFileIsAUsageError()
    {
        var (code, _, err) = Run("trace", "info", Path.Combine(_dir, "nope.parquet"));
        Assert.Equal(2, code);
        Assert.Contains("nope.parquet", err);
    }

    [Theory]
    [InlineData("record")]
    [InlineData("record", "--interval", "soon", "--", "true")]
    [InlineData("record", "-p", "1", "--", "true")]
    [InlineData("record", "--duration", "1s", "--", "true")]
    public void RecordArgumentErrorsExitTwo(params string[] args)
    {
        var (code, _, err) = Run(args);
        Assert.Equal(2, code);
        Assert.StartsWith("ptlab: ", Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void RecordRefusesAnOutputItCannotWriteBeforeRunningTheProgram()
    {
        string marker = Path.Combine(_dir, "ran");
        var (code, _, err) = Run("record", "-o", Path.Combine(_dir, "missing", "t.parquet"), "--", "touch", marker);
        Assert.Equal(2, code);
        Assert.Contains("the directory of", err);
        Assert.False(File.Exists(marker), "the program ran although its trace could not be written");
    }

    [Fact]
    public void RecordOfAProcessThatDoesNotExistSaysSo()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // the check reads /proc
        }

        int pid = 4_000_000; // above the kernel's pid_max limit (2^22), so never a process
        var (code, _, err) = Run("record", "-p", pid.ToString(System.Globalization.CultureInfo.InvariantCulture), "--duration", "1s", "-o", Path.Combine(_dir, "p.parquet"));
        Assert.Equal(2, code);
        Assert.Contains($"no process {pid}", err);
    }

    [Theory]
    [InlineData("trace", "import", "{dir}", "-o", "{dir}/t.parquet")]
    [InlineData("trace", "import", "{dir}/in.txt", "-o", "{dir}/missing/t.parquet")]
    [InlineData("trace", "info", "{dir}")]
    [InlineData("replay", "{dir}")]
    [InlineData("bench", "replay", "--trace", "{dir}")]
    [InlineData("fuzz", "kernel", "--replay", "{dir}")]
    public void ADirectoryOrAMissingDirectoryIsAUsageErrorNamingIt(params string[] args)
    {
        File.WriteAllText(Path.Combine(_dir, "in.txt"), "");
        var (code, _, err) = Run(args.Select(a => a.Replace("{dir}", _dir, StringComparison.Ordinal)).ToArray());
        Assert.Equal(2, code);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("ptlab: ", line);
        Assert.Contains(_dir, line);
        Assert.DoesNotContain("denied", line);
    }

    [Fact]
    public void FuzzTracesRunsAndCountsNoCrash()
    {
        var (code, output, _) = Run("fuzz", "traces", "--inputs", "60", "--threads", "1");
        Assert.Equal(0, code);
        Assert.Contains("60 inputs", output);
        Assert.Contains("0 crashes", output);
    }
}
