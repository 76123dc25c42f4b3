using PtLab.Kernel.Fuzz;
using PtLab.Mm;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>A theory that needs Linux x86-64 and a C compiler (the fuzzer's executor is built from source).</summary>
public sealed class NativeTheoryAttribute : TheoryAttribute
{
    public NativeTheoryAttribute()
    {
        if (!KernelExecutor.IsAvailable(out string reason))
        {
            Skip = reason;
        }
    }
}

/// <summary>
/// The differences the kernel fuzzer found, kept as case files (FuzzCases/*.case) with the kernel's
/// recorded answers: each replays on the model always, and on the host kernel where one can run.
/// </summary>
// Serialized with the other host tests: one of them switches a swap area on for the whole
// machine for a few seconds, which would change what MADV_PAGEOUT does here.
[Collection(HostKernelCollection.Name)]
public sealed class FuzzCaseTests(ITestOutputHelper output)
{
    private static readonly string CaseFolder = Path.Combine(AppContext.BaseDirectory, "FuzzCases");

    public static TheoryData<string> Cases()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(CaseFolder, "*.case").Order(StringComparer.Ordinal))
        {
            data.Add(Path.GetFileName(f));
        }

        return data;
    }

    [Fact]
    public void TheRegressionCasesArePresent() => Assert.NotEmpty(Directory.GetFiles(CaseFolder, "*.case"));

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheModelGivesTheRecordedKernelAnswers(string name)
    {
        var c = FuzzCase.Load(Path.Combine(CaseFolder, name));
        Assert.All(c.Steps, s => Assert.NotNull(s.Expected));
        var problems = c.CheckOnModel();
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [NativeTheory]
    [MemberData(nameof(Cases))]
    public void TheHostKernelAndTheModelAgree(string name)
    {
        var c = FuzzCase.Load(Path.Combine(CaseFolder, name));
        using var fuzzer = new KernelFuzzer(KernelInfo.Probe().MatchingDesign);
        if (!fuzzer.BrkAvailable && c.Ops.Any(o => o.Kind.Name == "brk"))
        {
            output.WriteLine($"SKIP {name} on the host: the executor cannot move its heap into the slot (prctl PR_SET_MM_MAP was refused); the model side ran in TheModelGivesTheRecordedKernelAnswers");
            return;
        }

        if (!KernelInfo.Probe().HasGuardRegions && c.Ops.Any(o => o.Kind.Name == "madvise" && o.Args[2] is (ulong)Advice.GuardInstall or (ulong)Advice.GuardRemove))
        {
            output.WriteLine($"SKIP {name} on the host: it has no guard regions as the model has them (Linux {KernelInfo.GuardRegionsSince}+); the model side ran in TheModelGivesTheRecordedKernelAnswers");
            return;
        }

        // The host is not deterministic everywhere the model is: MADV_PAGEOUT skips a page someone
        // holds at that moment, MADV_WILLNEED's readahead completes asynchronously and fault-around
        // passes over a page still under I/O. A case passes when the host gives the model's answer
        // in one of three runs; a difference the host repeats every time fails it.
        var run = fuzzer.Replay(c.Ops, c.Slot);
        for (int attempt = 2; attempt <= 3 && run.Difference is { } earlier; attempt++)
        {
            output.WriteLine($"run {attempt - 1} of {name} differed at operation {run.Steps.Count} ({earlier.Op.Format(run.Slot)}) in {string.Join(", ", earlier.Differences)}; running it again");
            run = fuzzer.Replay(c.Ops, c.Slot);
        }

        Assert.True(run.Difference is null, run.Difference is { } d
            ? $"operation {run.Steps.Count} ({d.Op.Format(run.Slot)}) differs in {string.Join(", ", d.Differences)} in three runs: " +
              $"kernel {FuzzText.FormatOutcome(d.Kernel, run.Slot)}; model {FuzzText.FormatOutcome(d.Model, run.Slot)}"
            : "");
        Assert.Equal(c.Steps.Count, run.Steps.Count);
    }
}
