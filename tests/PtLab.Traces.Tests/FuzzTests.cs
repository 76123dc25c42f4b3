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
}
