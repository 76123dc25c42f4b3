namespace PtLab.Kernel.Fuzz;

/// <summary>
/// Shrinks a differing sequence by delta debugging (Zeller's ddmin): it removes chunks of
/// operations, then complements of chunks, at ever finer grain, keeping any subsequence whose replay
/// still differs in one of the same aspects (result, VmPTE, RssAnon, layout). The result is
/// 1-minimal: removing any single operation makes the difference go away.
/// </summary>
public static class Minimizer
{
    /// <summary>Replays at most this many candidates; the smallest sequence found so far is kept.</summary>
    public const int MaxReplays = 4000;

    /// <summary>Minimizes <paramref name="failing"/>, whose last step differs, by replays on <paramref name="fuzzer"/>.</summary>
    /// <returns>The minimal sequence's replay (its last step differs), and the replays it took.</returns>
    public static (FuzzSequence Sequence, int Replays) Minimize(KernelFuzzer fuzzer, FuzzSequence failing)
    {
        ArgumentNullException.ThrowIfNull(fuzzer);
        ArgumentNullException.ThrowIfNull(failing);
        var target = failing.Difference?.Differences ?? throw new ArgumentException("the sequence does not end in a difference", nameof(failing));
        ulong slot = failing.Slot;
        int replays = 0;

        // A candidate that still differs is cut at its first difference: later operations never matter.
        List<FuzzOp>? Test(List<FuzzOp> ops)
        {
            replays++;
            var run = fuzzer.Replay(ops, slot);
            return run.Difference is { } d && d.Differences.Intersect(target).Any() ? ops.GetRange(0, run.Steps.Count) : null;
        }

        var c = failing.Ops.ToList();
        int n = 2;
        while (c.Count >= 2 && replays < MaxReplays)
        {
            var chunks = Split(c, n);
            bool reduced = false;
            foreach (var chunk in chunks)
            {
                if (Test(chunk) is { } smaller)
                {
                    c = smaller;
                    n = 2;
                    reduced = true;
                    break;
                }
            }

            if (!reduced && n > 2)
            {
                for (int i = 0; i < chunks.Count && !reduced; i++)
                {
                    var complement = chunks.Where((_, j) => j != i).SelectMany(x => x).ToList();
                    if (Test(complement) is { } smaller)
                    {
                        c = smaller;
                        n = Math.Max(n - 1, 2);
                        reduced = true;
                    }
                }
            }

            if (!reduced)
            {
                if (n >= c.Count)
                {
                    break;
                }

                n = Math.Min(n * 2, c.Count);
            }
        }

        var final = fuzzer.Replay(c, slot);
        replays++;
        return (final.Difference is not null ? final : failing, replays);
    }

    private static List<List<FuzzOp>> Split(List<FuzzOp> ops, int n)
    {
        var parts = new List<List<FuzzOp>>(n);
        int start = 0;
        for (int i = 0; i < n; i++)
        {
            int end = (int)((long)ops.Count * (i + 1) / n);
            if (end > start)
            {
                parts.Add(ops.GetRange(start, end - start));
            }

            start = end;
        }

        return parts;
    }
}
