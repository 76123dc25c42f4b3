using System.Diagnostics;
using PtLab.Mm;
using PtLab.Workloads;

namespace PtLab.Kernel.Tests;

/// <summary>
/// The cover letter's loop (write 2 MiB, madvise it) at a fixed address, which
/// <see cref="CoverLetterScenario"/> cannot take; the placement keeps upper tables comparable.
/// </summary>
internal sealed class MadviseLoopScenario(ulong size, Advice advice, ulong at) : IScenario
{
    public const string AfterLoop = "loop";

    private const ulong TwoMiB = 2UL << 20;

    public string Name => "madvise-loop";

    public IReadOnlyDictionary<string, string> Parameters => new Dictionary<string, string>
    {
        ["size"] = size.ToString(),
        ["advice"] = advice.ToString(),
        ["at"] = $"0x{at:x}",
    };

    public ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null)
    {
        var map = target.Mmap(at, size, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve | MapFlags.FixedNoReplace);
        Assert.True(map.Ok, $"mmap at 0x{at:x} on {target.Name}: {map}");
        var before = target.Status();
        var sw = Stopwatch.StartNew();
        for (ulong q = map.Address; q < map.Address + size; q += TwoMiB)
        {
            if (!target.TouchPages(q, TwoMiB, write: true).Ok || target.Madvise(q, TwoMiB, advice) != Errno.None)
            {
                throw new ScenarioException($"touch or madvise of 0x{q:x} failed on {target.Name}");
            }
        }

        var after = target.Status();
        return new ScenarioResult
        {
            Scenario = Name,
            Target = target.Name,
            Parameters = Parameters,
            Before = before,
            After = after,
            Checkpoints = [(AfterLoop, after)],
            WallSeconds = sw.Elapsed.TotalSeconds,
        };
    }
}
