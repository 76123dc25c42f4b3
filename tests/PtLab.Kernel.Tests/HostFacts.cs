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
