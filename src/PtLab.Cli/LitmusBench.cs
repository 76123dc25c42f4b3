using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PtLab.Systematic;

namespace PtLab.Cli;

/// <summary>One biased lock's figures in <c>ptlab bench litmus</c>: rounds with both sides in, per run.</summary>
internal sealed record LitmusLockReport(string Lock, bool Barrier, IReadOnlyList<long> BothInPerRun, IReadOnlyList<double> SecondsPerRun)
{
    /// <summary>Rounds with both in, over every run.</summary>
    public long BothIn => BothInPerRun.Sum();

    /// <summary>Runs with at least one such round.</summary>
    public int RunsWithBothIn => BothInPerRun.Count(n => n > 0);
}

/// <summary>The JSON of <c>ptlab bench litmus</c>.</summary>
internal sealed record LitmusReport(string Benchmark, int Rounds, int Runs, IReadOnlyList<LitmusLockReport> Results)
{
    /// <summary>Whether every run with the barrier kept the sides apart (the only verdict: the runs without it are figures).</summary>
    public bool Safe => Results.Where(r => r.Barrier).All(r => r.BothIn == 0);

    public string ToJson() => ReportJson.Serialize(this);
}

/// <summary>
/// <c>ptlab bench litmus</c>: the store-buffer litmus of the locks biased to the one CPU of a
/// machine without hooks (<see cref="LockStepLitmus"/>), on this host's CPUs, with each lock's
/// process-wide barrier and with it removed. Shows that the barrier is what keeps the owner and
/// another CPU apart here: with it no round lets both in (a round that does is a bug, and the
/// command fails), without it some rounds do on a CPU that lets a load pass an earlier store.
/// </summary>
internal static class LitmusBench
{
    public static Command Command(TextWriter stdout)
    {
        var rounds = new Option<int>("--rounds") { Description = "Lock-step rounds per run (1-10,000,000).", DefaultValueFactory = _ => 20_000 };
        var runs = new Option<int>("--runs") { Description = "Runs per lock, with the barrier and without (1-1,000).", DefaultValueFactory = _ => 5 };
        var cmd = new Command(
            "litmus",
            "The store-buffer litmus of the locks biased to one CPU (a CPU's TLB against a remote flush, mmap_lock's reads against a writer) " +
            "on two real threads, with each lock's process-wide barrier and without it: rounds in which both sides were in at once. " +
            "With the barrier any such round is a bug (exit 1); without it, a CPU that lets a load pass an earlier store shows some. " +
            "Needs two CPUs free: threads that share one core never race. A benchmark, not a test.")
        {
            rounds, runs,
        };
        var reportOptions = ReportOptions.AddTo(cmd, "text", "json");
        cmd.SetAction(p =>
        {
            int r = p.GetValue(rounds), n = p.GetValue(runs);
            if (r is < 1 or > 10_000_000)
            {
                throw new UsageException($"--rounds must be between 1 and 10,000,000, got {r}");
            }

            if (n is < 1 or > 1_000)
            {
                throw new UsageException($"--runs must be between 1 and 1,000, got {n}");
            }

            var report = Measure(r, n);
            reportOptions.Write(p, stdout, report.ToJson, null, w =>
            {
                foreach (var line in Lines(report))
                {
                    w.WriteLine(line);
                }
            });
            return report.Safe ? Cli.ExitOk : Cli.ExitFailure;
        });
        return cmd;
    }

    /// <summary>Runs every biased lock <paramref name="runs"/> times with its barrier, then as many without.</summary>
    internal static LitmusReport Measure(int rounds, int runs)
    {
        var results = new List<LitmusLockReport>();
        foreach (bool barrier in new[] { true, false })
        {
            foreach (var subject in LockStepLitmus.BiasedLocks(withoutBarrier: !barrier))
            {
                var both = new List<long>();
                var seconds = new List<double>();
                for (int i = 0; i < runs; i++)
                {
                    var sw = Stopwatch.StartNew();
                    both.Add(LockStepLitmus.Run(subject, rounds));
                    seconds.Add(sw.Elapsed.TotalSeconds);
                }

                results.Add(new LitmusLockReport(subject.Name, barrier, both, seconds));
            }
        }

        return new LitmusReport("litmus", rounds, runs, results);
    }

    internal static IEnumerable<string> Lines(LitmusReport report)
    {
        yield return string.Create(CultureInfo.InvariantCulture, $"{report.Runs} runs of {report.Rounds:N0} lock-step rounds per lock; rounds with the owner and another CPU both in, per run:");
        foreach (var r in report.Results)
        {
            string how = r.Barrier ? "with its barrier   " : "without its barrier";
            yield return string.Create(
                CultureInfo.InvariantCulture,
                $"  {r.Lock,-9} {how}  {string.Join(' ', r.BothInPerRun.Select(b => b.ToString("N0", CultureInfo.InvariantCulture)))}   ({r.RunsWithBothIn} of {r.BothInPerRun.Count} runs, {r.SecondsPerRun.Sum():0.00} s)");
        }

        yield return report.Safe
            ? "with the barriers: never both in. " + (report.Results.Any(r => !r.Barrier && r.BothIn > 0)
                ? "Without them both got in: the barriers are what keeps the sides apart on this host."
                : "Without them no round let both in here either: this host (or these runs, if the threads shared a core) did not show the reordering.")
            : "with the barriers both got in: the biased locks are broken on this host.";
    }
}
