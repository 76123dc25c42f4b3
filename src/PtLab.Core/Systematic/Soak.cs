using System.Diagnostics;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Sync;

namespace PtLab.Systematic;

/// <summary>What a soak run did.</summary>
/// <param name="Design">The design soaked.</param>
/// <param name="Operations">Operations completed over all CPUs.</param>
/// <param name="Rounds">Rounds whose end state was checked.</param>
/// <param name="Elapsed">Wall time.</param>
/// <param name="Violations">Broken invariants and CPU failures, in order.</param>
public sealed record SoakResult(string Design, long Operations, int Rounds, TimeSpan Elapsed, IReadOnlyList<string> Violations)
{
    /// <summary>Operations per second.</summary>
    public double OperationsPerSecond => Operations / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// The soak: random faults, reads, zaps, lazy frees, mprotects, GUPs and reclaim on real threads
/// (the OS interleaves them), in rounds; the invariants are checked at the quiescent end of each
/// round, and the leak check after the final exit.
/// </summary>
public static class Soak
{
    private const ulong K4 = 4096;
    private const ulong M2 = 2UL << 20;
    private const int Tables = 4;
    private static readonly TimeSpan s_round = TimeSpan.FromMilliseconds(250);

    // How long past a round's end a CPU may take to finish its operation before the soak calls it
    // stuck (a deadlock or livelock of the model) and reports it rather than waiting for ever.
    private static readonly TimeSpan s_stuck = TimeSpan.FromMinutes(2);

    /// <summary>Soaks <paramref name="design"/> on <paramref name="cpus"/> threads for <paramref name="duration"/>.</summary>
    public static SoakResult Run(string design, int cpus, TimeSpan duration, int seed = 1)
    {
        var factory = Designs.Factory(design) ?? throw new ArgumentException($"unknown design '{design}'", nameof(design));
        var panic = new PanicOnFailure();
        var waits = new WaitWatch(panic, cpus);
        var machine = new Machine(new MachineOptions
        {
            Cpus = cpus,
            RamBytes = 256L << 20,
            PageData = false,
            Scheduler = waits,
            LockDep = true,
            PagingStructureCaches = true,
            Design = factory,
        });
        var mm = machine.CreateAddressSpace();
        ulong b = ScenarioContext.Base;
        var map = mm.Mmap(machine.Cpus[0], b, Tables * M2, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed);
        if (!map.Ok)
        {
            throw new InvalidOperationException($"soak mmap failed: {map.Error}");
        }

        var violations = new List<string>();
        long ops = 0;
        int rounds = 0;
        var rngs = Enumerable.Range(0, cpus).Select(i => new Random(HashCode.Combine(seed, i))).ToArray();
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < duration && violations.Count == 0)
        {
            var end = sw.Elapsed + (duration - sw.Elapsed < s_round ? duration - sw.Elapsed : s_round);
            var errors = new Exception?[cpus];
            var counts = new long[cpus];
            var current = new string?[cpus];
            var threads = new Thread[cpus];
            for (int i = 0; i < cpus; i++)
            {
                int id = i;
                threads[i] = new Thread(() =>
                {
                    try
                    {
                        var cpu = machine.Cpus[id];
                        var rng = rngs[id];
                        var lockDep = machine.Sync.LockDep!;
                        Span<long> pages = stackalloc long[4];
                        waits.Enter(id);
                        while (sw.Elapsed < end)
                        {
                            Step(machine, mm, cpu, rng, pages, ref current[id]);
                            // lockdep_sys_exit: an operation returns to user space holding no lock
                            // and outside any RCU read section. One that leaked a lock is named here,
                            // not found later as another CPU stuck on it.
                            lockDep.AssertNothingHeld(id, $"the return from {Volatile.Read(ref current[id])}");
                            waits.StepDone(id);
                            counts[id]++;
                        }
                    }
                    catch (Exception e)
                    {
                        errors[id] = e;
                        panic.Panic($"CPU {id}: {e.Message}");
                    }
                })
                { IsBackground = true, Name = $"soak-cpu{id}" };
                threads[i].Start();
            }

            var stuck = new List<string>();
            for (int i = 0; i < cpus; i++)
            {
                var left = end + s_stuck - sw.Elapsed;
                if (!threads[i].Join(left > TimeSpan.Zero ? left : TimeSpan.Zero))
                {
                    stuck.Add($"CPU {i} stuck for {s_stuck.TotalSeconds:0} s past the round's end in {Volatile.Read(ref current[i]) ?? "its first operation"} (a deadlock or livelock){waits.Describe(i)}");
                }
            }

            if (stuck.Count > 0)
            {
                // The stuck threads are background threads: they are left behind, the report goes out,
                // with what the other CPUs failed with first: a CPU that died holding a lock leaves
                // the next one spinning on it.
                violations.AddRange(stuck);
                violations.Add(HeldReport(machine));
                violations.AddRange(errors.Select((e, i) => (e, i)).Where(x => x.e is not null)
                    .Select(x => $"CPU {x.i} failed first: {x.e!.GetType().Name}: {x.e.Message.Split('\n')[0]}"));
                return new SoakResult(design, ops + counts.Sum(), rounds, sw.Elapsed, violations);
            }

            ops += counts.Sum();
            rounds++;
            var failed = errors.Select((e, i) => (e, i)).Where(x => x.e is not null).OrderBy(x => x.e is MachinePanicException ? 1 : 0).ToList();
            if (failed.Count > 0)
            {
                violations.Add($"CPU {failed[0].i}: {failed[0].e!.GetType().Name}: {failed[0].e!.Message.Split('\n')[0]}");
                break;
            }

            try
            {
                string? v = Invariants.TableStorage(mm) ?? Invariants.Accounting(mm) ?? Invariants.Refcounts(mm) ?? Invariants.PresentEntriesMapLiveFrames(mm)
                    ?? Invariants.TlbsMatchTables(machine, mm, b, b + (Tables * M2)) ?? Invariants.PagingStructureCachesMatchTables(machine, mm);
                if (v is not null)
                {
                    violations.Add($"after round {rounds}: {v}");
                }
            }
            catch (Exception e)
            {
                violations.Add($"after round {rounds}: invariant check threw {e.GetType().Name}: {e.Message.Split('\n')[0]}");
            }
        }

        if (violations.Count == 0)
        {
            if (Invariants.NoLeakAfterExit(machine, mm) is { } leak)
            {
                violations.Add(leak);
            }
        }

        return new SoakResult(design, ops, rounds, sw.Elapsed, violations);
    }

    private static void Step(Machine machine, MmStruct mm, Cpu cpu, Random rng, Span<long> pages, ref string? current)
    {
        ulong table = ScenarioContext.Base + ((ulong)rng.Next(Tables) * M2);
        ulong page = table + ((ulong)rng.Next(64) * K4);
        int op = rng.Next(100);
        switch (op)
        {
            case < 35:
                Volatile.Write(ref current, "a write fault");
                cpu.Touch(page);
                break;
            case < 55:
                Volatile.Write(ref current, "a read fault");
                cpu.ReadByte(page, out _);
                break;
            case < 65:
                Volatile.Write(ref current, "MADV_DONTNEED of a table");
                mm.Madvise(cpu, table, M2, Advice.DontNeed);
                break;
            case < 70:
                Volatile.Write(ref current, "MADV_DONTNEED of 4 pages");
                mm.Madvise(cpu, page, 4 * K4, Advice.DontNeed);
                break;
            case < 76:
                Volatile.Write(ref current, "MADV_FREE");
                mm.Madvise(cpu, page, 4 * K4, Advice.Free);
                break;
            case < 80:
                Volatile.Write(ref current, "mprotect");
                mm.Mprotect(cpu, page, 2 * K4, Prot.Read);
                mm.Mprotect(cpu, page, 2 * K4, Prot.Read | Prot.Write);
                break;
            case < 90:
                {
                    Volatile.Write(ref current, op < 87 ? "get_user_pages_fast" : "get_user_pages");
                    long got = op < 87 ? mm.GetUserPagesFast(cpu, page, 4, write: true, pages) : mm.GetUserPages(cpu, page, 4, write: false, pages);
                    if (got > 0)
                    {
                        mm.PutUserPages(cpu, pages[..(int)got]);
                    }

                    break;
                }

            case < 99:
                Volatile.Write(ref current, "reclaim");
                machine.Vmscan.Reclaim(cpu.Id, 4);
                break;
            default:
                Volatile.Write(ref current, "the design's background pass");
                Kscand.Pass(machine, cpu); // a design's background thread, where it has one (none else)
                break;
        }
    }

    // What every CPU holds by the lock checker's books, and the raw locks it does not see, for a
    // stuck CPU's report: the holder of the lock a CPU spins on is usually named here. Read while
    // the stuck CPU may still run, so a list changing under the read is reported as such.
    private static string HeldReport(Machine machine)
    {
        var parts = new List<string>();
        var lockDep = machine.Sync.LockDep;
        for (int c = 0; c < machine.Cpus.Count && lockDep is not null; c++)
        {
            try
            {
                var held = lockDep.Held(c);
                parts.Add($"CPU {c} holds {(held.Count == 0 ? "nothing" : string.Join(", ", held.Select(h => h.Class.Name + (h.Instance != 0 ? $"#{h.Instance:x}" : ""))))} (RCU depth {lockDep.RcuDepth(c)})");
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentException or IndexOutOfRangeException)
            {
                parts.Add($"CPU {c}'s held locks changed while read");
            }
        }

        if (machine.Phys.Lru.LockedForReport)
        {
            parts.Add("the LRU lock (raw, unchecked) is held");
        }

        return "locks at the report: " + string.Join("; ", parts);
    }

    /// <summary>
    /// The soak's scheduling-point hook: the panic hook, and a note of what each CPU keeps
    /// waiting on (the lock class or primitive at its wait points) during its current operation,
    /// for the report of a CPU that never finishes it.
    /// </summary>
    internal sealed class WaitWatch(PanicOnFailure panic, int cpus) : ISchedulingPoint
    {
        private const int Noted = 1 << 16; // waits in one operation before the subject is noted

        [ThreadStatic]
        private static int t_cpu; // the soak CPU this thread drives, plus one; 0 for other threads

        private readonly int[] _waits = new int[cpus];
        private readonly string?[] _waitingOn = new string?[cpus];

        public void Enter(int cpu) => t_cpu = cpu + 1;

        public void StepDone(int cpu)
        {
            _waits[cpu] = 0;
            if (_waitingOn[cpu] is not null)
            {
                Volatile.Write(ref _waitingOn[cpu], null);
            }
        }

        public void Reached(SchedulingPointKind kind, object? subject)
        {
            panic.Reached(kind, subject);
            int c = t_cpu - 1;
            if (kind == SchedulingPointKind.Wait && (uint)c < (uint)_waits.Length && ++_waits[c] == Noted)
            {
                Volatile.Write(ref _waitingOn[c], subject switch
                {
                    LockClass l => $"lock class {l.Name}",
                    null => "an unnamed wait",
                    _ => subject.GetType().Name,
                });
            }
        }

        public string Describe(int cpu) =>
            Volatile.Read(ref _waitingOn[cpu]) is { } on ? $", waiting on {on} ({Noted:N0}+ waits in the operation)" : ", not at a wait point (spinning on a raw lock or looping)";
    }
}
