namespace PtLab.Traces.Tests;

public sealed class RoundTripTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-traces-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ATraceReadsBackRowForRowWithItsMetadata()
    {
        string path = Path.Combine(_dir, "t.parquet");
        var written = SyntheticTrace.Events(200_000, seed: 3, threads: 3).ToList();
        using (var w = TraceWriter.Create(path))
        {
            foreach (var e in written)
            {
                w.Append(e);
            }

            w.Complete(SyntheticTrace.Metadata());
        }

        using var r = TraceReader.Open(path);
        Assert.Equal(written.Count, r.Rows);
        Assert.Equal(["synthetic", "cover"], r.Metadata.Command);
        Assert.Equal("6.18.0-synthetic", r.Metadata.Host[HostFacts.KernelRelease]);
        Assert.False(r.Metadata.Truncated);
        var read = r.ReadEvents().ToList();
        Assert.Equal(written.Count, read.Count);
        for (int i = 0; i < read.Count; i++)
        {
            Assert.True(written[i] == read[i], $"row {i}: wrote {written[i]}, read {read[i]}");
        }
    }
}
