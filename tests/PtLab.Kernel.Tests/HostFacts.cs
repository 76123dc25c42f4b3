using PtLab.Kernel;

namespace PtLab.Kernel.Tests;

/// <summary>A fact that runs only where the kernel target can: Linux on x86-64.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!KernelTarget.IsSupported)
        {
            Skip = "needs Linux on x86-64: this test runs the workload on the host kernel";
        }
    }
}

/// <summary>A fact that runs only on a host kernel with upstream page-table reclaim (6.14+, CONFIG_PT_RECLAIM=y).</summary>
public sealed class PtReclaimFactAttribute : FactAttribute
{
    public PtReclaimFactAttribute()
    {
        if (!KernelTarget.IsSupported)
        {
            Skip = "needs Linux on x86-64: this test runs the workload on the host kernel";
        }
        else if (KernelInfo.Probe() is { MatchingDesign: not "pt-reclaim" } info)
        {
            Skip = $"needs Linux 6.14+ with CONFIG_PT_RECLAIM=y; the host is {info}";
        }
    }
}

/// <summary>
/// A fact that runs only where every hugetlb pool of the host is empty, as the model's default
/// machine has them (<see cref="KernelInfo.HugetlbPoolsEmpty"/>): then every MAP_HUGETLB call that
/// reserves is refused on both sides, and none maps hugetlb memory, which the model has not.
/// </summary>
public sealed class NoHugetlbPoolFactAttribute : FactAttribute
{
    public NoHugetlbPoolFactAttribute()
    {
        if (!KernelTarget.IsSupported)
        {
            Skip = "needs Linux on x86-64: this test runs the workload on the host kernel";
        }
        else if (KernelInfo.Probe() is { HugetlbPoolsEmpty: false } info)
        {
            Skip = $"needs a host with no huge page reserved and the x86-64 sizes (2 MiB, 1 GiB); this host's pools are {(info.HugetlbPools is { } p ? PtLab.Mm.HugetlbPool.Format(p) : "unreadable")}";
        }
    }
}

/// <summary>
/// Tests that read this process's VmPTE. They run alone, after the parallel tests, because any
/// other test's allocations make the runtime map memory and add page tables of its own.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HostKernelCollection
{
    public const string Name = "host kernel";
}

/// <summary>A theory that runs only where the kernel target can: Linux on x86-64.</summary>
public sealed class LinuxTheoryAttribute : TheoryAttribute
{
    public LinuxTheoryAttribute()
    {
        if (!KernelTarget.IsSupported)
        {
            Skip = "needs Linux on x86-64: this test runs the workload on the host kernel";
        }
    }
}
