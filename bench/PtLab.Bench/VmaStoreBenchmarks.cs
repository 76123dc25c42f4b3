using BenchmarkDotNet.Attributes;
using PtLab.Mm;

namespace PtLab.Bench;

/// <summary>
/// The VMA store at scale: an address space holding <see cref="Vmas"/> one-page mappings of
/// alternating protection (so no two neighbours merge), placed top-down by mmap. Times
/// <c>find_vma</c> at random addresses, and a split plus a merge: mprotect of one page to its
/// neighbours' protection merges three VMAs into one, and mprotect back splits it into three again.
/// </summary>
[MedianColumn]
public class VmaStoreBenchmarks
{
    private const int Lookups = 4096;
    private const int Toggles = 256;

    private Machine _machine = null!;
    private MmStruct _mm = null!;
    private Cpu _cpu = null!;
    private ulong _low;
    private ulong[] _addresses = [];
    private ulong[] _pages = [];

    /// <summary>VMAs in the address space.</summary>
    [Params(10_000, 100_000, 1_000_000)]
    public int Vmas { get; set; }

    /// <summary>Builds the address space: <see cref="Vmas"/> mmap calls.</summary>
    [GlobalSetup]
    public void Setup()
    {
        (_machine, _mm, _cpu, _low) = Build(Vmas);
        var random = new Random(7);
        _addresses = [.. Enumerable.Range(0, Lookups).Select(_ => _low + ((ulong)random.NextInt64(Vmas) << 12) + 100)];
        // Pages of read-only mappings away from the ends, each between two read-write ones. Mapping
        // i lies (Vmas - 1 - i) pages above the lowest (the last placed, read-only as Vmas is even):
        // an even number of pages above it is a read-only mapping too.
        _pages = [.. Enumerable.Range(0, Toggles).Select(_ => _low + ((ulong)(2 * (1 + random.NextInt64((Vmas / 2) - 2))) << 12))];
    }

    /// <summary>Tears the address space down.</summary>
    [GlobalCleanup]
    public void Cleanup() => _mm.Exit(_cpu);

    /// <summary><c>find_vma</c> of a random address inside the mappings.</summary>
    [Benchmark(OperationsPerInvoke = Lookups)]
    public ulong FindVma()
    {
        ulong sum = 0;
        foreach (ulong a in _addresses)
        {
            sum += _mm.FindVma(a)!.Start;
        }

        return sum;
    }

    /// <summary>mprotect of one page to its neighbours' protection (a three-way merge), then back (a split into three).</summary>
    [Benchmark(OperationsPerInvoke = Toggles * 2)]
    public void MergeThenSplit()
    {
        foreach (ulong page in _pages)
        {
            _mm.Mprotect(_cpu, page, 4096, Prot.Read | Prot.Write);
            _mm.Mprotect(_cpu, page, 4096, Prot.Read);
        }

        if (_mm.MapCount != Vmas)
        {
            throw new InvalidOperationException($"{_mm.MapCount} VMAs after the merges and splits, {Vmas} before");
        }
    }

    /// <summary>An address space with <paramref name="vmas"/> alternating one-page mappings, placed by mmap top-down.</summary>
    internal static (Machine Machine, MmStruct Mm, Cpu Cpu, ulong Low) Build(int vmas)
    {
        var machine = new Machine(new MachineOptions { PageData = false, Design = PtLab.Reclaim.Designs.Factory(PtLab.Reclaim.Designs.Baseline)! });
        var mm = machine.CreateAddressSpace();
        mm.MaxMapCount = vmas + 16;
        var cpu = machine.Cpus[0];
        ulong low = 0;
        for (int i = 0; i < vmas; i++)
        {
            // Even ones read-write, odd ones read-only; MAP_NORESERVE so that both carry the same
            // accounting flags and differ in protection only.
            var prot = i % 2 == 0 ? Prot.Read | Prot.Write : Prot.Read;
            var r = mm.Mmap(cpu, 0, 4096, prot, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve);
            if (!r.Ok)
            {
                throw new InvalidOperationException($"mmap {i} failed: {r.Error}");
            }

            low = r.Address;
        }

        if (mm.MapCount != vmas)
        {
            throw new InvalidOperationException($"{mm.MapCount} VMAs, expected {vmas}: neighbours merged");
        }

        return (machine, mm, cpu, low);
    }
}

/// <summary>Building the address space itself: <see cref="Vmas"/> top-down mmap calls on a fresh machine.</summary>
[MedianColumn]
public class VmaStoreBuildBenchmarks
{
    /// <summary>VMAs created per invocation.</summary>
    [Params(10_000, 100_000, 1_000_000)]
    public int Vmas { get; set; }

    /// <summary>mmap of one page, top-down, alternating protection, into an address space that grows to <see cref="Vmas"/> VMAs.</summary>
    [Benchmark]
    public int MmapAlternating()
    {
        var (_, mm, cpu, _) = VmaStoreBenchmarks.Build(Vmas);
        int n = mm.MapCount;
        mm.Exit(cpu);
        return n;
    }
}
