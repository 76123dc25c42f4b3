using System.Diagnostics;
using PtLab.Mm;
using PtLab.Reclaim;
using PtLab.Sync;
using PtLab.Systematic;
using PtLab.Workloads;
using Xunit.Abstractions;

namespace PtLab.Tests.Concurrency;

/// <summary>
/// Bounded stress of the reverse map on real threads: one CPU forks the parent again and again and
/// writes into each child before it exits; one CPU writes, reads and zaps the parent's pages, checking
/// its data, and touches a shared and a private file mapping; one CPU runs reclaim, which discards,
/// swaps and evicts pages through every mapping fork and the files gave them, on a small RAM.
/// </summary>
public class ProcessStressTests(ITestOutputHelper output)
{
    private const ulong Anon = 0x40000000UL;
    private const ulong Files = 0x80000000UL;
    private const int Pages = 512;

    public static TheoryData<string> AllDesigns => new() { "none", "atomic", "pte-ref", "pt-reclaim" };

    [Theory]
    [MemberData(nameof(AllDesigns))]
    public void ForkReclaimAndFileFaultsKeepTheParentsDataAndEveryCounter(string design)
    {
        var machine = new Machine(new MachineOptions
        {
            Cpus = 3,
            RamBytes = 12L << 20,
            SwapBytes = 16L << 20,
            PageData = true,
            LockDep = true,
            Scheduler = new PanicOnFailure(),
            Design = Designs.Factory(design)!,
        });
        var parent = machine.CreateProcess();
        var mm = parent.Mm;
        var setup = parent.MainThread.Activate();
        Assert.True(mm.Mmap(setup, Anon, Pages * Sim.K4, Sim.Rw, Sim.Anon | MapFlags.Fixed).Ok);
        var file = machine.Files.GetOrCreate(new FileId(1, 1), 256 * Sim.K4);
        Assert.True(mm.Mmap(setup, Files, 256 * Sim.K4, Sim.Rw, MapFlags.Shared | MapFlags.Fixed, file, 0).Ok);
        Assert.True(mm.Mmap(setup, Files + Sim.M2, 256 * Sim.K4, Sim.Rw, MapFlags.Private | MapFlags.Fixed, file, 0).Ok);
        long forks = 0, ops = 0;
        int running = 2; // the forking and the parent's CPU; reclaim runs until both are done
        var clock = Stopwatch.StartNew();
        // Each worker runs at least 800 ms and until it made some progress (a loaded host is slow),
        // but never past 20 s.
        bool Going(long progress, long minimum) =>
            clock.ElapsedMilliseconds < 20_000 && (clock.ElapsedMilliseconds < 800 || progress < minimum);
        MultiCpuRunner.Run(machine.Cpus, cpu =>
        {
            var rng = new Random(77 + cpu.Id);
            try
            {
                Work(cpu, rng);
            }
            finally
            {
                if (cpu.Id < 2)
                {
                    Interlocked.Decrement(ref running);
                }
            }
        });

        void Work(Cpu cpu, Random rng)
        {
            switch (cpu.Id)
            {
                case 0:
                    while (Going(forks, 5))
                    {
                        cpu.SwitchMm(mm);
                        var child = mm.Fork(cpu);
                        if (child is null)
                        {
                            continue; // out of memory: nothing left behind
                        }

                        cpu.SwitchMm(child);
                        for (int i = 0; i < 8; i++)
                        {
                            ulong va = Anon + ((ulong)rng.Next(Pages) * Sim.K4);
                            byte v = (byte)rng.Next(1, 256);
                            if (cpu.Write(va + 100, [v]).Ok)
                            {
                                Assert.True(cpu.ReadByte(va + 100, out byte seen).Ok);
                                Assert.Equal(v, seen);
                            }

                            cpu.ReadByte(Files + ((ulong)rng.Next(256) * Sim.K4), out _);
                        }

                        cpu.SwitchMm(mm);
                        child.Exit(cpu);
                        forks++;
                    }

                    break;
                case 1:
                    cpu.SwitchMm(mm);
                    var expected = new byte[Pages];
                    while (Going(ops, 200))
                    {
                        int page = rng.Next(Pages);
                        ulong va = Anon + ((ulong)page * Sim.K4);
                        switch (rng.Next(10))
                        {
                            case < 5:
                                byte v = (byte)rng.Next(1, 256);
                                if (cpu.Write(va, [v]).Ok)
                                {
                                    expected[page] = v;
                                }

                                break;
                            case < 7:
                                if (cpu.ReadByte(va, out byte seen).Ok)
                                {
                                    Assert.Equal(expected[page], seen);
                                }

                                break;
                            case < 8:
                                Assert.Equal(Errno.None, mm.Madvise(cpu, va, Sim.K4, Advice.DontNeed));
                                expected[page] = 0;
                                break;
                            default:
                                ulong f = (ulong)rng.Next(256) * Sim.K4;
                                cpu.Touch(Files + f);
                                cpu.Touch(Files + Sim.M2 + f);
                                break;
                        }

                        ops++;
                    }

                    for (int page = 0; page < Pages; page++)
                    {
                        if (cpu.ReadByte(Anon + ((ulong)page * Sim.K4), out byte seen).Ok)
                        {
                            Assert.Equal(expected[page], seen);
                        }
                    }

                    break;
                default:
                    while (Volatile.Read(ref running) > 0)
                    {
                        machine.Vmscan.Reclaim(cpu.Id, 16);
                    }

                    break;
            }
        }

        var (scanned, discarded, _, _) = machine.ReclaimStats;
        output.WriteLine($"{design}: {forks} forks, {ops} parent operations, reclaim scanned {scanned}, discarded {discarded}, swapped out {machine.SwappedOut}, file pages evicted {machine.Vmscan.FileEvicted}");
        Assert.True(forks >= 5 && ops >= 200, $"only {forks} forks and {ops} parent operations completed in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.Null(Invariants.Accounting(mm) ?? Invariants.Refcounts(mm) ?? Invariants.PresentEntriesMapLiveFrames(mm));
        Assert.Single(machine.AddressSpaces);
        machine.ExitProcess(parent);
        machine.Rcu.Barrier();
        machine.Files.DropCaches();
        Assert.Equal(0, machine.Phys.Swap!.UsedSlots);
        Assert.Equal(1, machine.Phys.UsedFrames);
    }
}
