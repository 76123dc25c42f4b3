using CsCheck;

namespace PtLab.Traces.Tests;

public sealed class FuzzTests
{
    private static readonly TraceFuzzer Fuzzer = new(TraceFuzzer.SamplePerfText());

    [Fact]
    public void MutatedTracesAndPerfTextsAreAcceptedOrRejectedButNeverCrashTheReader()
    {
        // 3,000 inputs: mutated trace bytes, well-formed files of random rows, mutated perf text (a third each).
        Gen.ULong.Sample(seed =>
        {
            var outcome = Fuzzer.Run(seed);
            return outcome.Crash is null;
        }, iter: 3000, threads: 1);
    }

    [Fact]
    public void TheFuzzerReachesEveryKindOfInputAndBothVerdicts()
    {
        var outcomes = Enumerable.Range(0, 300).Select(i => Fuzzer.Run((ulong)i)).ToList();
        Assert.All(outcomes, o => Assert.Null(o.Crash));
        foreach (var kind in Enum.GetValues<FuzzInputKind>())
        {
            Assert.Contains(outcomes, o => o.Kind == kind && !o.Accepted);
        }

        // Some mutations leave a valid input (a changed address, a duplicated fault).
        Assert.Contains(outcomes, o => o.Accepted);
        Assert.All(outcomes.Where(o => !o.Accepted), o => Assert.Matches(@"^fuzz\.(parquet|txt)[:]", o.Message!));
    }

    /// <summary>
    /// Input 103,740 of the long fuzz run: mutated trace bytes with a matching checksum whose page
    /// header's statistics field runs into the end of the file. Parquet.Net reads a varint there
    /// byte by byte and takes end of stream (-1) for a byte with the continuation bit: it looped for
    /// ever. The reader must reject it, promptly, naming the file and where.
    /// </summary>
    [Fact]
    public async Task APageHeaderRunningOffTheEndOfItsChunkIsRejectedNotLoopedOn()
    {
        const ulong seed = 103_740;
        Assert.Equal(FuzzInputKind.TraceBytes, (FuzzInputKind)(seed % 3));
        byte[] bytes = Fuzzer.MutateBytes(new Random((int)(seed ^ (seed >> 32))));
        var run = Task.Run(() => Assert.Throws<TraceFormatException>(() =>
        {
            using var reader = TraceReader.Open(new MemoryStream(bytes, writable: false), "fuzz.parquet");
            foreach (var _ in reader.ReadEvents())
            {
            }
        }));
        var e = await run.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.StartsWith("fuzz.parquet: row group 0", e.Message);
        Assert.Contains("column", e.Message);
        var outcome = Fuzzer.Run(seed);
        Assert.Null(outcome.Crash);
        Assert.False(outcome.Accepted);
    }
}
