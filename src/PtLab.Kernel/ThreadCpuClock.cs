namespace PtLab.Kernel;

/// <summary>
/// The CPU time the calling thread has used (<c>CLOCK_THREAD_CPUTIME_ID</c>): what a benchmark of a
/// pipeline needs to split its time between threads on a busy host, where wall time mostly counts
/// waiting for a core.
/// </summary>
public static class ThreadCpuClock
{
    /// <summary>The calling thread's CPU time so far.</summary>
    public static TimeSpan Now() => TimeSpan.FromTicks(LibC.ThreadCpuNanoseconds() / 100);
}
