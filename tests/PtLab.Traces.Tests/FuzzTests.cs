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

    /// <summary>The random rows the fuzzer writes include every kind, the page-cache changes of format 5 among them, and some of those pass the checks.</summary>
    [Fact]
    public void TheFuzzersRowsCoverEveryKindThePageCacheChangesIncluded()
    {
        var kinds = new HashSet<TraceEventKind>();
        int validChanges = 0;
        for (int seed = 0; seed < 400; seed++)
        {
            foreach (var e in TraceFuzzer.RandomEvents(new Random(seed), out _))
            {
                kinds.Add(e.Kind);
                if (TraceKinds.IsPageCacheChange(e.Kind) && new TraceValidator(admitUnknownTasks: false, allowUnfinished: false).Check(e) is null)
                {
                    validChanges++;
                }
            }
        }

        Assert.All(Enumerable.Range(0, TraceKinds.Count).Select(k => (TraceEventKind)k), k => Assert.Contains(k, kinds));
        Assert.True(validChanges > 0, "no well-formed cache_add or cache_delete row among the fuzzer's rows");
    }

    /// <summary>
    /// Inputs of the long fuzz run that hung the reader: mutated trace bytes with a matching
    /// checksum. Parquet.Net reads a Thrift varint byte by byte and takes the end of its input (-1)
    /// for a byte with the continuation bit, so a page header that runs off the end of the file
    /// (103,740) or a footer that runs off its own end (113,133; 120,081) looped for ever. The reader
    /// must reject each, promptly, naming the file and what is wrong.
    /// </summary>
    [Theory]
    [InlineData(103_740, "row group 0 (rows from 0), column")]
    [InlineData(113_133, "the Parquet footer cannot be read")]
    [InlineData(120_081, "the Parquet footer cannot be read")]
    public async Task AFooterOrPageHeaderRunningOffItsEndIsRejectedNotLoopedOn(ulong seed, string expected)
    {
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
        Assert.StartsWith("fuzz.parquet: " + expected, e.Message);
        var outcome = Fuzzer.Run(seed);
        Assert.Null(outcome.Crash);
        Assert.False(outcome.Accepted);
    }
}
