using PtLab.Kernel.Fuzz;

namespace PtLab.Kernel.Tests;

/// <summary>
/// Telling a model difference from the host's own timing: a differing sequence is replayed, and a
/// replay on which kernel and model agree throughout makes it a transient, not a finding. Also the
/// probe that names the host's DAMON workers, the usual cause.
/// </summary>
public sealed class FuzzRecheckTests : IDisposable
{
    private const ulong Slot = 0x7e00_0000_0000;
    private readonly string _dir = Directory.CreateTempSubdirectory("ptlab-damon-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly FuzzOp[] Ops =
    [
        FuzzText.ParseOp("mmap S+0x0 0x200000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|MAP_LOCKED", Slot),
        FuzzText.ParseOp("write S+0x0 0x4000", Slot),
        FuzzText.ParseOp("madvise S+0x0 0x200000 MADV_PAGEOUT", Slot),
    ];

    private static FuzzStep Step(FuzzOp op, string kernel, string model) =>
        new(op, FuzzText.ParseOutcome(kernel, Slot), FuzzText.ParseOutcome(model, Slot));

    /// <summary>The three operations, the last one's Referenced figure as given (the model's is 16 kB).</summary>
    private static FuzzSequence Run(int kernelRefKb) => new(
        [
            Step(Ops[0], "S+0x0 pte=0 anon=0", "S+0x0 pte=0 anon=0"),
            Step(Ops[1], "0 pte=4 anon=16", "0 pte=4 anon=16"),
            Step(Ops[2], $"0 pte=4 anon=16 ref={kernelRefKb}", "0 pte=4 anon=16 ref=16"),
        ],
        Slot);

    [Fact]
    public void ADifferenceThatTheFirstReplayDoesNotGiveAgainIsTheHostsTiming()
    {
        var found = Run(12);
        Assert.Equal(["Referenced"], found.Difference!.Differences);
        var replayed = new List<IReadOnlyList<FuzzOp>>();
        int agreed = FuzzCampaign.Recheck(found, ops => { replayed.Add(ops); return Run(16); }, 2);
        Assert.Equal(1, agreed);
        var only = Assert.Single(replayed);
        Assert.Equal(Ops.Select(o => o.Format(Slot)), only.Select(o => o.Format(Slot)));
    }

    [Fact]
    public void OnlyTheSecondReplayAgreeingIsStillTheHostsTiming()
    {
        int calls = 0;
        int agreed = FuzzCampaign.Recheck(Run(12), _ => ++calls == 1 ? Run(8) : Run(16), 2);
        Assert.Equal(2, agreed);
        Assert.Equal(2, calls);
    }

    [Fact]
    public void ADifferenceEveryReplayGivesAgainIsAFinding()
    {
        var order = new List<string>();
        Assert.Equal(0, FuzzCampaign.Recheck(Run(12), _ => { order.Add("replay"); return Run(12); }, 3, n => order.Add($"pause {n}")));
        Assert.Equal(["pause 1", "replay", "pause 2", "replay", "pause 3", "replay"], order);
        Assert.Equal([TimeSpan.Zero, TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(2)], new[] { 1, 2, 3 }.Select(FuzzCampaign.RecheckPause));
    }

    [Fact]
    public void AReplayThatDiffersEarlierDoesNotClearTheDifference()
    {
        // A replay that stops at another difference before the last operation has not shown the
        // host giving the model's answers to these operations.
        var early = new FuzzSequence([Step(Ops[0], "S+0x0 pte=0 anon=0", "S+0x0 pte=0 anon=0"), Step(Ops[1], "0 pte=4 anon=12", "0 pte=4 anon=16")], Slot);
        Assert.Equal(0, FuzzCampaign.Recheck(Run(12), _ => early, 1));
    }

    [Fact]
    public void NoRechecksCountsEveryDifference() =>
        Assert.Equal(0, FuzzCampaign.Recheck(Run(12), _ => throw new InvalidOperationException("no replay was asked for"), 0));

    private void Write(string relative, string text)
    {
        string path = Path.Combine(_dir, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text + "\n");
    }

    [Fact]
    public void TheProbeReadsRunningWorkersTheirOperationsAndSchemesFromSysfs()
    {
        Write("admin/0/state", "on");
        Write("admin/0/pid", "78");
        Write("admin/0/contexts/nr_contexts", "1");
        Write("admin/0/contexts/0/operations", "paddr");
        Write("admin/0/contexts/0/schemes/0/action", "pageout");
        Write("admin/0/contexts/0/schemes/1/action", "lru_prio");
        Write("admin/1/state", "off");
        Write("admin/1/contexts/0/operations", "vaddr");
        Write("admin/2/state", "on");
        Write("admin/2/contexts/0/operations", "vaddr");
        Write("proc/78/comm", "kdamond.0");
        Write("proc/90/comm", "kdamond.3");
        Write("proc/91/comm", "bash");

        var found = DamonProbe.Running(Path.Combine(_dir, "admin"), Path.Combine(_dir, "proc"));

        Assert.Equal(3, found.Count);
        Assert.Equal("kdamond.0 (paddr monitoring, scheme pageout, lru_prio)", found[0].ToString());
        Assert.True(found[0].TouchesEveryProcess);
        Assert.Equal("kdamond.2 (vaddr monitoring, no scheme)", found[1].ToString());
        Assert.False(found[1].TouchesEveryProcess);
        // A thread the sysfs interface does not list (DAMON_RECLAIM started it): its setup is unknown.
        Assert.Equal("kdamond.3 (set up without the sysfs interface)", found[2].ToString());
        Assert.True(found[2].TouchesEveryProcess);
    }

    [Fact]
    public void WithoutDamonTheProbeFindsNothing() =>
        Assert.Empty(DamonProbe.Running(Path.Combine(_dir, "no-such-dir"), Path.Combine(_dir, "no-proc")));
}
