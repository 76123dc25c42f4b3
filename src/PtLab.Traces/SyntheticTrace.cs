namespace PtLab.Traces;

/// <summary>
/// Valid traces made up from a seed, shaped like a recording of the cover letter's loop (touch
/// 2 MiB, madvise it away, again), with threads, samples and mappings mixed in: the input of
/// the format's benchmark, round-trip tests and the fuzzers' seeds.
/// </summary>
internal static class SyntheticTrace
{
    public static TraceMetadata Metadata(bool truncated = false) => new()
    {
        Source = "record",
        Command = ["synthetic", "cover"],
        RootPid = 1000,
        ExitStatus = truncated ? null : 0,
        IntervalMs = 50,
        Truncated = truncated,
        Host = new Dictionary<string, string> { [HostFacts.KernelRelease] = "6.18.0-synthetic", [HostFacts.PageSize] = "4096" },
    };

    /// <summary>About <paramref name="events"/> rows: 512 faults per madvise, a status sample every 8,192 rows.</summary>
    public static IEnumerable<TraceEvent> Events(long events, int seed = 1, int threads = 1)
    {
        var rng = new Random(seed);
        const int pid = 1000;
        long t = 1_000_000_000L;
        yield return TraceEvent.Create(TraceEventKind.Task, t, pid, pid) with { Path = "synthetic" };
        yield return TraceEvent.Create(TraceEventKind.Exec, t += 10, pid, pid) with { Path = "/usr/bin/synthetic", Result = pid };
        ulong[] layout = [0x5555_5555_4000, 0x7fff_f7fc_0000, 0x7fff_fffd_e000];
        string[] names = ["/usr/bin/synthetic", "[vdso]", "[stack]"];
        for (int i = 0; i < layout.Length; i++)
        {
            yield return TraceEvent.Create(TraceEventKind.Vma, t += 5, pid, pid) with
            {
                Address = layout[i],
                Length = 0x21000,
                Prot = i == 1 ? 5 : 3,
                Flags = 2,
                Offset = 0,
                Dev = i == 0 ? "fe:00" : "00:00",
                Inode = i == 0 ? 1234UL : 0,
                Path = names[i],
            };
        }

        yield return TraceEvent.Sample(TraceEventKind.StatusExec, t += 100, pid, pid, new StatusFigures(2000, 900, 100, 800, 0, 0, 40));
        for (int i = 1; i < threads; i++)
        {
            yield return TraceEvent.Create(TraceEventKind.NewTask, t += 1000, pid, pid) with { Flags = 0x3d0f00, Result = pid + i, Path = "worker" };
        }

        long rows = 7 + threads;
        ulong region = 0x7f00_0000_0000;
        yield return (TraceEvent.Create(TraceEventKind.Mmap, t += 2000, pid, pid) with
        {
            Address = 0,
            Length = 50UL << 30,
            Prot = 3,
            Flags = 0x4022,
            Fd = -1,
            Offset = 0,
        }).Returned((long)region, 1500);
        yield return TraceEvent.Create(TraceEventKind.Mmap2, t, pid, pid) with
        {
            Address = region,
            Length = 50UL << 30,
            Prot = 3,
            Flags = 2,
            Offset = region,
            Dev = "00:00",
            Inode = 0,
            Path = "//anon",
        };
        rows += 2;
        long chunk = 0;
        long pte = 40;
        while (rows < events - 3)
        {
            ulong start = region + ((ulong)chunk << 21);
            int tid = pid + (int)(chunk % threads);
            for (int page = 0; page < 512 && rows < events - 4; page++, rows++)
            {
                t += 1800 + rng.Next(900);
                ulong address = start + ((ulong)page << 12) + (ulong)rng.Next(8);
                yield return TraceEvent.Fault(t, pid, tid, address, 6, 0x5555_5555_5190);
                if (rows % 8192 == 0)
                {
                    yield return TraceEvent.Sample(TraceEventKind.Status, t += 7, pid, pid, new StatusFigures(2000 + (50L << 20), 3000, 2100, 900, 0, 0, pte));
                    rows++;
                }
            }

            t += 40_000 + rng.Next(10_000);
            yield return (TraceEvent.Create(TraceEventKind.Madvise, t, pid, tid) with { Address = start, Length = 2UL << 20, Prot = 4 }).Returned(0, 30_000);
            rows++;
            chunk++;
            pte += 4;
        }

        for (int i = 1; i < threads; i++)
        {
            yield return TraceEvent.Create(TraceEventKind.TaskExit, t += 100, pid, pid + i);
        }

        yield return TraceEvent.Create(TraceEventKind.ExitGroup, t += 1000, pid, pid) with { Result = 0 };
        yield return TraceEvent.Sample(TraceEventKind.StatusExit, t += 50, pid, pid, new StatusFigures(2000 + (50L << 20), 3000, 2100, 900, 0, 0, pte)).WithResult(0);
        yield return TraceEvent.Create(TraceEventKind.TaskExit, t += 50, pid, pid) with { Flags = 1, Has = TraceKinds.Fields(TraceEventKind.TaskExit).Required | TraceFields.Flags };
    }

    /// <summary>Writes a synthetic trace of about <paramref name="events"/> rows to <paramref name="path"/>.</summary>
    public static void Write(string path, long events, int seed = 1, int threads = 1)
    {
        using var w = TraceWriter.Create(path);
        foreach (var e in Events(events, seed, threads))
        {
            w.Append(e);
        }

        w.Complete(Metadata());
    }
}
