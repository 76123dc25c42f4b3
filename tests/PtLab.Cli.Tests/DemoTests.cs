using System.Text.Json;

namespace PtLab.Tests;

/// <summary>ptlab demo (what ptlab alone runs): the seed's experiment on every design, its summary line and its plot.</summary>
public sealed class DemoTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-demo-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TheDemoShowsEveryDesignTheSummaryLineAndWritesAPlot()
    {
        string png = Path.Combine(_dir, "demo.png");
        var (code, output, err) = CommandTests.Run("demo", "--size", "64M", "--plot", png);
        Assert.True(code == 0, err);
        foreach (var d in PtLab.Reclaim.Designs.Names)
        {
            Assert.Contains(d, output);
        }

        Assert.Contains("before: right after the mmap", output);
        Assert.Contains("0 → 32", output); // none keeps the 32 PTE tables of 64 MiB
        // 32 PTE + 1 PMD + 1 PUD tables of 4 kB under none; the PMD and PUD stay under every design.
        Assert.Contains("free all 32 PTE tables: VmPTE 136 → 8 kB, −94.1%", output);
        Assert.Contains("plot: " + png, output);
        byte[] head = File.ReadAllBytes(png)[..8];
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, head);
    }

    [Fact]
    public void TheDemoJsonCarriesTheSummaryAndEveryDesignsFigures()
    {
        var (code, output, err) = CommandTests.Run("demo", "--size", "32M", "--no-plot", "--format", "json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Contains("free all 16 PTE tables", root.GetProperty("summary").GetString());
        var designs = root.GetProperty("designs").EnumerateArray().ToList();
        Assert.Equal(PtLab.Reclaim.Designs.Names, designs.Select(d => d.GetProperty("design").GetString()!));
        Assert.Equal(16, designs[0].GetProperty("after").GetProperty("pteTables").GetInt64());
        Assert.All(designs.Skip(1), d => Assert.Equal(0, d.GetProperty("after").GetProperty("pteTables").GetInt64()));
        Assert.Equal("off", root.GetProperty("parameters").GetProperty("pageData").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("plot").ValueKind);
    }

    [Fact]
    public void HelpListsTheDemoFirst()
    {
        var (code, output, _) = CommandTests.Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("demo", output);
        Assert.True(output.IndexOf("demo", StringComparison.Ordinal) < output.IndexOf("compare", StringComparison.Ordinal));
    }
}
