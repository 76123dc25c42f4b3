namespace PtLab.Traces.Tests;

/// <summary>A folder of its own per test class, removed afterwards.</summary>
public abstract class TempDir : IDisposable
{
    protected string Dir { get; } = Directory.CreateTempSubdirectory("ptlab-traces-").FullName;

    public void Dispose()
    {
        Directory.Delete(Dir, recursive: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Asserts that <paramref name="r"/> reads back <paramref name="written"/> row for row.</summary>
    protected static void AssertReadsBack(TraceReader r, IReadOnlyList<TraceEvent> written)
    {
        int i = 0;
        foreach (var e in r.ReadEvents())
        {
            Assert.True(written[i] == e, $"row {i}: wrote {written[i]}, read {e}");
            i++;
        }

        Assert.Equal(written.Count, i);
    }

    protected string Write(IEnumerable<TraceEvent> rows, TraceMetadata? metadata = null, string name = "t.parquet")
    {
        string path = Path.Combine(Dir, name);
        using var w = TraceWriter.Create(path);
        foreach (var e in rows)
        {
            w.Append(e);
        }

        w.Complete(metadata ?? SyntheticTrace.Metadata());
        return path;
    }

    /// <summary>Rows written with no checks at all: a well-formed file whose rows the reader must judge.</summary>
    protected string WriteUnchecked(IEnumerable<TraceEvent> rows, TraceMetadata? metadata = null, Dictionary<string, string>? keys = null)
    {
        string path = Path.Combine(Dir, "bad.parquet");
        using var ms = new MemoryStream();
        using (var w = TraceWriter.CreateUnchecked(ms))
        {
            foreach (var e in rows)
            {
                w.Append(e);
            }

            w.OverrideKeyValues = keys;
            w.Complete(metadata ?? SyntheticTrace.Metadata());
        }

        File.WriteAllBytes(path, ms.ToArray());
        return path;
    }

    protected static TraceFormatException ReadFails(string path)
    {
        return Assert.Throws<TraceFormatException>(() =>
        {
            using var r = TraceReader.Open(path);
            foreach (var _ in r.ReadEvents())
            {
            }
        });
    }
}
