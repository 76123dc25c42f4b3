using PtLab.Kernel.Fuzz;
using Xunit.Abstractions;

namespace PtLab.Kernel.Tests;

/// <summary>A fact that needs the fuzzer's executor (Linux x86-64, a C compiler) and a pt-reclaim host kernel.</summary>
public sealed class PtReclaimExecutorFactAttribute : FactAttribute
{
    public PtReclaimExecutorFactAttribute()
    {
        if (!KernelExecutor.IsAvailable(out string reason))
        {
            Skip = reason;
        }
        else if (KernelInfo.Probe() is { MatchingDesign: not "pt-reclaim" } info)
        {
            Skip = $"needs Linux 6.14+ with CONFIG_PT_RECLAIM=y; the host is {info}";
        }
    }
}

/// <summary>A fact that needs the fuzzer's executor and mseal as the model has it (Linux 6.12+).</summary>
public sealed class MsealExecutorFactAttribute : FactAttribute
{
    public MsealExecutorFactAttribute()
    {
        if (!KernelExecutor.IsAvailable(out string reason))
        {
            Skip = reason;
        }
        else if (!KernelInfo.Probe().HasMseal)
        {
            Skip = $"needs Linux {KernelInfo.MsealSince}+ on x86-64 (mseal checked VMA by VMA); the host runs {KernelInfo.Probe().Release}";
        }
    }
}

/// <summary>The executor's protocol and the differential runs against the host kernel.</summary>
// Serialized with the other host tests: one of them switches a swap area on for the whole
// machine for a few seconds, which would change what MADV_PAGEOUT does here.
[Collection(HostKernelCollection.Name)]
public sealed class KernelFuzzerTests(ITestOutputHelper output)
{
    private const ulong M2 = 2UL << 20;

    private static FuzzOp Op(string text, ulong slot) => FuzzText.ParseOp(text, slot);

    private static string Describe(FuzzSequence run) => run.Difference is { } d
        ? $"operation {run.Steps.Count} ({d.Op.Format(run.Slot)}) differs in {string.Join(", ", d.Differences)}: " +
          $"kernel {FuzzText.FormatOutcome(d.Kernel, run.Slot)}; model {FuzzText.FormatOutcome(d.Model, run.Slot)}"
        : "no difference";

    [NativeFact]
    public void TheExecutorStartsInAnEmptySlotAndCountsOnlyItsTables()
    {
        using var ex = KernelExecutor.Start();
        ulong s = ex.SlotStart;
        Assert.Equal(0UL, s % FuzzText.SlotSize);
        Assert.Equal(s + FuzzText.SlotSize, ex.SlotEnd);
        Assert.True(ex.MemTotalKb > 0);
        var clean = ex.Reset();
        Assert.Equal((0L, 0L), (clean.PteKb, clean.AnonKb));
        Assert.Empty(clean.Layout!);

        // 4 MiB straddling the first GiB boundary; one page written on each side: two PTE tables,
        // two PMD tables (one per GiB) and the slot's PUD table, all of the slot's own.
        ulong at = s + (1UL << 30) - M2;
        var mapped = ex.Run(Op($"mmap {FuzzText.Hex(at)} 0x400000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE", s));
        Assert.Equal(OpResult.Returned(at), mapped.Result);
        Assert.Equal([new VmaLine(at, at + (2 * M2), "rw-p")], mapped.Layout!);
        var touched = ex.Run(Op($"write {FuzzText.Hex(at + M2 - 4096)} 0x2000", s));
        Assert.Equal(OpResult.Returned(0), touched.Result);
        Assert.Equal((5L * 4, 2L * 4), (touched.PteKb, touched.AnonKb));
        var gone = ex.Run(Op($"munmap {FuzzText.Hex(at)} 0x400000", s));
        Assert.Equal((0L, 0L), (gone.PteKb, gone.AnonKb));
    }

    /// <summary>
    /// mlockall(MCL_CURRENT) populates every VMA, the executor's own too: in about one start in
    /// five its stack kept a page its warm-up had not faulted, and the reply read 4 kB of RssAnon
    /// that no mapping of the slot holds. Fresh executors, one call each, with the slot empty: the
    /// reply must stay at zero.
    /// </summary>
    [NativeFact]
    public void MlockallOfTheExecutorsOwnMappingsLeavesTheSlotsFiguresAlone()
    {
        var seen = new List<string>();
        for (int i = 0; i < 24; i++)
        {
            using var ex = KernelExecutor.Start(withFile: false);
            var locked = ex.Run(Op("mlockall 0x1", ex.SlotStart));
            Assert.Equal(OpResult.Returned(0), locked.Result);
            seen.Add($"pte={locked.PteKb} anon={locked.AnonKb} file={locked.FileKb} shmem={locked.ShmemKb}");
        }

        output.WriteLine(string.Join('\n', seen.GroupBy(s => s).Select(g => $"{g.Count(),3} x {g.Key}")));
        Assert.All(seen, s => Assert.Equal("pte=0 anon=0 file=0 shmem=0", s));
    }

    [NativeFact]
    public void TheExecutorReportsSignalsWithTheirCodeAndAddress()
    {
        using var ex = KernelExecutor.Start();
        ulong s = ex.SlotStart;
        ex.Reset();
        ex.Run(Op("mmap S+0x0 0x1000 PROT_NONE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", s));
        Assert.Equal(new OpResult(OpResultKind.Signal, s + 0x10, OpResult.SigSegv, 2), ex.Run(Op("read S+0x10 0x1", s)).Result);
        Assert.Equal(new OpResult(OpResultKind.Signal, s + 0x1000, OpResult.SigSegv, 1), ex.Run(Op("write S+0x1000 0x1", s)).Result);
        Assert.Equal(new OpResult(OpResultKind.Error, 22), ex.Run(Op("munmap S+0x1 0x1000", s)).Result); // EINVAL
    }

    [NativeFact]
    public void TheExecutorRefusesRangesThatLeaveItsSlotButAnswersWrappingOnes()
    {
        using var ex = KernelExecutor.Start();
        ulong s = ex.SlotStart;
        ex.Reset();
        var e = Assert.Throws<FuzzHarnessException>(() => ex.Run(Op("madvise S+0x1000 0x10000000000 MADV_DONTNEED", s)));
        Assert.Contains("leaves the slot", e.Message);
        Assert.Throws<FuzzHarnessException>(() => ex.Run(Op("munmap 0x10000 0x1000", s)));
        Assert.Throws<FuzzHarnessException>(() => ex.Run(Op("write S+0x7ffffff000 0x2000", s)));
        // A length that wraps past 2^64 is rejected by the kernel before it acts: EINVAL.
        Assert.Equal(new OpResult(OpResultKind.Error, 22), ex.Run(Op("madvise S+0x1000 0xfffffffffffff000 MADV_DONTNEED", s)).Result);
        Assert.Equal(0, ex.Reset().PteKb); // still alive and clean
    }

    /// <summary>Runs each sequence in turn on one fuzzer (one executor, reset between them) and asserts that every one agrees with the model.</summary>
    private static FuzzSequence[] ReplayInTurn(params string[][] sequences)
    {
        using var fuzzer = new KernelFuzzer(KernelInfo.Probe().MatchingDesign);
        ulong s = fuzzer.Slot;
        var runs = new FuzzSequence[sequences.Length];
        for (int i = 0; i < sequences.Length; i++)
        {
            runs[i] = fuzzer.Replay([.. sequences[i].Select(text => Op(text, s))], s);
            Assert.True(runs[i].Difference is null, $"sequence {i}: {Describe(runs[i])}");
            Assert.Equal(sequences[i].Length, runs[i].Steps.Count);
        }

        return runs;
    }

    [NativeFact]
    public void ASequenceFindsNoStateLeftByTheOneBefore() =>
        // A written VMA at the top of the slot made PROT_NONE merges with the placeholder above and
        // hands it its anon_vma; the reset must not leave that behind for the next sequence.
        ReplayInTurn(
            ["mmap S+0x7fffc00000 0x400000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|MAP_NORESERVE",
             "write S+0x7fffc00000 0x1000",
             "mprotect S+0x7fffc00000 0x400000 PROT_NONE"],
            ["mmap 0 0x400000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE",
             "mprotect S+0x7fffe00000 0xc000 PROT_WRITE",
             "write S+0x7fffe00000 0x5c000",
             "mmap 0 0x3dd5000 PROT_READ MAP_PRIVATE|MAP_ANONYMOUS",
             "mprotect S+0x7ffdcba000 0x2346000 PROT_NONE"]);

    /// <summary>
    /// A sealed VMA refuses munmap, mprotect, mremap, MAP_FIXED and, read-only, MADV_DONTNEED on
    /// both sides; the executor cannot empty a slot that holds one (its reset answers EPERM), so
    /// the next sequence runs on a new executor and finds the slot empty, with the same
    /// addresses free again.
    /// </summary>
    [MsealExecutorFact]
    public void ASealedSequenceIsFollowedByAnEmptySlot()
    {
        string[] sealing =
        [
            "mmap S+0x200000 0x400000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED",
            "write S+0x200000 0x400000",
            "mprotect S+0x400000 0x200000 PROT_READ",
            "mseal S+0x300000 0x200000 0x0",
            "munmap S+0x200000 0x400000",
            "munmap S+0x200000 0x100000",
            "mprotect S+0x300000 0x1000 PROT_READ|PROT_WRITE",
            "madvise S+0x400000 0x1000 MADV_DONTNEED",
            "madvise S+0x300000 0x1000 MADV_DONTNEED",
            "mremap S+0x300000 0x100000 0x200000 0x1 0x0",
            "mmap S+0x380000 0x1000 PROT_READ MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED",
            "mseal S+0x5ff000 0x2000 0x0",
        ];
        var runs = ReplayInTurn(sealing, sealing);
        foreach (var run in runs)
        {
            var results = run.Steps.Select(st => st.Kernel.Result).ToList();
            Assert.Equal(new OpResult(OpResultKind.Error, 1), results[4]);  // EPERM
            Assert.Equal(OpResult.FromErrno(PtLab.Mm.Errno.None), results[5]); // the unsealed part goes
            Assert.Equal(new OpResult(OpResultKind.Error, 1), results[6]);
            Assert.Equal(new OpResult(OpResultKind.Error, 1), results[7]);  // read-only and sealed
            Assert.Equal(OpResult.FromErrno(PtLab.Mm.Errno.None), results[8]); // writable
            Assert.Equal(new OpResult(OpResultKind.Error, 1), results[9]);
            Assert.Equal(new OpResult(OpResultKind.Error, 1), results[10]);
            Assert.Equal(new OpResult(OpResultKind.Error, 12), results[11]); // ENOMEM: it runs on past the mapping
        }
    }

    /// <summary>
    /// MREMAP_DONTUNMAP of part of a locked shared file VMA clears VM_LOCKED on the whole old VMA
    /// without munlocking the pages it kept, so those page-cache folios stay mlocked after
    /// munlockall and munmap, until they are freed. A reset that only wrote the test file again
    /// kept them: the next sequence's MADV_PAGEOUT put them back unevictable and left 28 kB
    /// mapped where the model, starting afresh, had none. Every reset now puts a new file in place.
    /// </summary>
    [RootNativeFact]
    public void MlockedPagesOfTheTestFileDoNotOutliveTheirSequence()
    {
        var runs = ReplayInTurn(
            // Fault-around maps offsets 0x5b7000-0x5bd000 locked; the mremap moves what follows them.
            ["mmapf S+0x9cf78000 0x730000 PROT_READ|PROT_WRITE MAP_SHARED|MAP_FIXED 0x4ef000",
             "mlockall 0x5",
             "read S+0x9d04be07 0x1c000",
             "mremap S+0x9d047000 0x661000 0x661000 0x7 S+0x7ffe2a8000"],
            ["mmapf S+0x9cf78000 0x730000 PROT_READ|PROT_WRITE MAP_SHARED|MAP_FIXED 0x4ef000",
             "write S+0x9d040000 0x7000",
             "madvise S+0x9d040000 0x7000 MADV_PAGEOUT"]);
        Assert.Equal(OpResult.Returned(0), runs[0].Steps[1].Kernel.Result);
        Assert.Equal(0, runs[1].Steps[2].Kernel.FileKb);
    }

    [PtReclaimExecutorFact]
    public void MinimizingADesignMismatchLeavesTheThreeOperationsThatMatter()
    {
        // The model without page-table reclaim against a pt-reclaim kernel: a DONTNEED over a whole
        // written 2 MiB frees its table on the kernel only.
        using var fuzzer = new KernelFuzzer("none");
        ulong s = fuzzer.Slot;
        var ops = new[]
        {
            "mmap S+0x10000000 0x10000 PROT_READ MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED",
            "mmap S+0x200000 0x200000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED",
            "read S+0x10000000 0x2000",
            "mprotect S+0x10000000 0x1000 PROT_NONE",
            "write S+0x201000 0x3000",
            "madvise S+0x10000000 0x10000 MADV_NORMAL",
            "munmap S+0x10008000 0x1000",
            "madvise S+0x200000 0x200000 MADV_DONTNEED",
            "read S+0x200000 0x1000",
        }.Select(t => Op(t, s)).ToList();
        var found = fuzzer.Replay(ops, s);
        Assert.Equal(8, found.Steps.Count);
        Assert.Equal(["VmPTE"], found.Difference!.Differences);

        var (min, replays) = Minimizer.Minimize(fuzzer, found);
        Assert.Equal(["VmPTE"], min.Difference!.Differences);
        Assert.Equal(["mmap", "write", "madvise"], min.Ops.Select(o => o.Kind.Name));
        Assert.InRange(replays, 2, Minimizer.MaxReplays + 1);

        // Its case file replays on the model to the kernel's recorded answers up to the difference.
        var c = FuzzCase.FromSequence(min, "none", fuzzer.MemTotalKb, ["minimized"]);
        var problems = FuzzCase.Parse(c.Format(), "min.case").CheckOnModel();
        Assert.StartsWith("operation 3 (madvise S+0x200000 0x200000 MADV_DONTNEED) differs in VmPTE", Assert.Single(problems));
    }

    /// <summary>
    /// The default run's share of fuzzing: a few thousand generated operations from fixed seeds, the
    /// model against the host kernel after every one. Longer runs: <c>ptlab fuzz kernel</c>.
    /// </summary>
    [NativeFact]
    public void FixedSeedsAgreeWithTheHostKernelAfterEveryOperation()
    {
        string design = KernelInfo.Probe().MatchingDesign;
        long ops = 0, cutShort = 0;
        foreach (int seed in new[] { 1, 2, 3, 4, 5 })
        {
            var r = FuzzCampaign.Run(new FuzzCampaignOptions(seed, Sequences: 2, Ops: 500, design));
            ops += r.Operations;
            foreach (var t in r.Transients)
            {
                // The host's own reclaim or aging between two operations: the replay agreed.
                output.WriteLine($"seed {seed}, sequence {t.Sequence}: not a finding, replay {t.AgreedOnReplay} agreed; first run: {Describe(t.Found)}");
                cutShort += 500 - t.Found.Steps.Count;
            }

            Assert.True(r.Findings.Count == 0, r.Findings.Count == 0 ? "" :
                $"seed {seed}, sequence {r.Findings[0].Sequence}: {Describe(r.Findings[0].Found)}; " +
                $"rerun: ptlab fuzz kernel --seed {seed} --first {r.Findings[0].Sequence} --sequences 1 --ops 500 --minimize");
            Assert.Contains("mmap fixed", r.Coverage.Keys);
            Assert.Contains("madvise MADV_DONTNEED", r.Coverage.Keys);
        }

        // Every sequence ran its 500 operations, but one that a transient stopped early.
        Assert.Equal(5000, ops + cutShort);
    }

    /// <summary>
    /// The collapse mode (<c>ptlab fuzz kernel --collapse</c>): MADV_COLLAPSE collapses on both
    /// sides, and 1,000 generated operations agree with the host after every one, some of the
    /// collapses succeeding. Skipped where the kernel lacks PR_THP_DISABLE_EXCEPT_ADVISED (before 6.18).
    /// </summary>
    [NativeFact]
    public void TheCollapseModeAgreesWithTheHostKernel()
    {
        FuzzCampaignResult r;
        try
        {
            r = FuzzCampaign.Run(new FuzzCampaignOptions(1, Sequences: 2, Ops: 500, KernelInfo.Probe().MatchingDesign, Collapse: true));
        }
        catch (FuzzHarnessException e) when (e.Message.Contains("EXCEPT_ADVISED", StringComparison.Ordinal))
        {
            output.WriteLine($"SKIP: {e.Message}");
            return;
        }

        Assert.True(r.Findings.Count == 0, r.Findings.Count == 0 ? "" :
            $"sequence {r.Findings[0].Sequence}: {Describe(r.Findings[0].Found)}; rerun: ptlab fuzz kernel --collapse --seed 1 --first {r.Findings[0].Sequence} --sequences 1 --ops 500 --minimize");
        var collapse = r.Coverage["madvise MADV_COLLAPSE"];
        output.WriteLine("MADV_COLLAPSE: " + string.Join(", ", collapse.Select(kv => $"{kv.Key} {kv.Value}")));
        Assert.True(collapse.GetValueOrDefault("ok") > 0, "no collapse succeeded");
    }
}
