using PtLab.Mm;
using PtLab.Workloads;
using PtLab.Workloads.Scenarios;

namespace PtLab.Kernel.Tests;

/// <summary>The upper-table inference that splits the kernel's VmPTE, checked on the model, whose levels are counted.</summary>
public sealed class UpperTableInferenceTests
{
    private const ulong MiB = 1UL << 20;
    private const ulong Slot = 1UL << 40;

    private static ModelTarget Model(string design = "none") =>
        new(new MachineOptions { PageData = false, Design = PtLab.Reclaim.Designs.Factory(design)! });

    [Theory]
    [InlineData("none")]
    [InlineData("pt-reclaim")]
    public void TheInferenceMatchesTheModelsCountedUpperTablesAtEveryMunmapStep(string design)
    {
        using var model = Model(design);
        var both = new Both(new UpperTableInference(model), model);
        const ulong size = (1UL << 30) + (18 * MiB), at = Slot + (1UL << 30) - (16 * MiB);
        var r = new MunmapHolesScenario(size, at).Run(both);
        Assert.Contains(r.Checkpoints, c => c.Label == "aligned-1g");
        Assert.True(both.Seen.Count >= r.Checkpoints.Count);
        Assert.All(both.Seen, s => Assert.Equal(s.Counted, s.Inferred));
        Assert.Equal(default, model.Status().Tables);
    }

    [Fact]
    public void TouchingTwoGibibytesInferTwoPmdTablesAndOnePud()
    {
        using var model = Model();
        var inference = new UpperTableInference(model);
        var map = inference.Mmap(Slot, 4UL << 30, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve | MapFlags.FixedNoReplace);
        Assert.True(map.Ok);
        Assert.True(inference.TouchPages(Slot + (1UL << 30) - 4096, 8192, write: true).Ok);
        Assert.Equal((2, 1), inference.UpperTables);
        Assert.Equal(new TableCounts(2, 2, 1), inference.Status().Tables);
        Assert.Equal(model.Status().Tables, inference.Status().Tables);

        // A munmap that leaves a VMA in the GiB keeps its PMD table; one that empties it frees it.
        Assert.Equal(Errno.None, inference.Munmap(Slot + (1UL << 30), 2 * MiB));
        Assert.Equal(model.Status().Tables, inference.Status().Tables);
        Assert.Equal(Errno.None, inference.Munmap(Slot, 1UL << 30));
        Assert.Equal(model.Status().Tables, inference.Status().Tables);
        Assert.Equal(Errno.None, inference.Munmap(Slot, 4UL << 30));
        Assert.Equal(model.Status().Tables, inference.Status().Tables);
        Assert.Equal((0, 0), inference.UpperTables);
    }

    /// <summary>Runs calls through the inference and records, at each status read, its split and the model's counts.</summary>
    private sealed class Both(UpperTableInference inference, ModelTarget model) : IMemoryTarget
    {
        public List<(TableCounts Inferred, TableCounts Counted)> Seen { get; } = [];

        public string Name => model.Name;

        public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags) => inference.Mmap(addr, length, prot, flags);

        public Errno Munmap(ulong addr, ulong length) => inference.Munmap(addr, length);

        public Errno Mprotect(ulong addr, ulong length, Prot prot) => inference.Mprotect(addr, length, prot);

        public Errno Madvise(ulong addr, ulong length, Advice advice) => inference.Madvise(addr, length, advice);

        public AccessResult TouchPages(ulong addr, ulong length, bool write) => inference.TouchPages(addr, length, write);

        public MmStatus Status()
        {
            var s = model.Status();
            Seen.Add((inference.Status().Tables, s.Tables));
            return s;
        }

        public void Dispose()
        {
        }
    }
}
