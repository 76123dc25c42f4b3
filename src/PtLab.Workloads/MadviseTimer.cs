using System.Diagnostics;
using HdrHistogram;
using PtLab.Mm;

namespace PtLab.Workloads;

/// <summary>Latency percentiles of one kind of call, in nanoseconds.</summary>
/// <param name="P50">Median.</param>
/// <param name="P99">99th percentile.</param>
/// <param name="Count">Calls recorded.</param>
public readonly record struct LatencySummary(long P50, long P99, long Count)
{
    /// <summary>The summary of a histogram of nanoseconds (zeros when it is empty).</summary>
    public static LatencySummary Of(HistogramBase h)
    {
        ArgumentNullException.ThrowIfNull(h);
        return h.TotalCount == 0 ? default : new(h.GetValueAtPercentile(50), h.GetValueAtPercentile(99), h.TotalCount);
    }
}

/// <summary>
/// A thread-safe HdrHistogram of call latencies in nanoseconds (1 ns to 1 hour, 3 significant digits).
/// </summary>
public sealed class LatencyRecorder
{
    private readonly LongConcurrentHistogram _histogram = new(1, TimeSpan.TicksPerHour * 100, 3);

    /// <summary>Records the time since <paramref name="startTimestamp"/> (a <see cref="Stopwatch.GetTimestamp"/> value).</summary>
    public void RecordSince(long startTimestamp)
    {
        long ns = (long)Stopwatch.GetElapsedTime(startTimestamp).TotalNanoseconds;
        _histogram.RecordValue(Math.Clamp(ns, 1, _histogram.HighestTrackableValue));
    }

    /// <summary>p50, p99 and the count so far.</summary>
    public LatencySummary Summary() => LatencySummary.Of(_histogram);
}

/// <summary>
/// An <see cref="IMemoryTarget"/> decorator that times every <c>madvise</c> call into a shared
/// <see cref="LatencyRecorder"/>; everything else passes straight through. Per-CPU views of a
/// multi-CPU target are timed into the same recorder.
/// </summary>
public sealed class MadviseTimer : IMultiCpuTarget, IDataTarget, IFileTarget
{
    private readonly IMemoryTarget _inner;

    /// <summary>Wraps <paramref name="inner"/>, recording into <paramref name="recorder"/> (a new one when null).</summary>
    public MadviseTimer(IMemoryTarget inner, LatencyRecorder? recorder = null)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        Recorder = recorder ?? new LatencyRecorder();
    }

    /// <summary>Where madvise latencies go.</summary>
    public LatencyRecorder Recorder { get; }

    /// <inheritdoc/>
    public string Name => _inner.Name;

    /// <inheritdoc/>
    public int CpuCount => _inner is IMultiCpuTarget m ? m.CpuCount : 1;

    /// <inheritdoc/>
    public IMemoryTarget OnCpu(int cpu) =>
        _inner is IMultiCpuTarget m ? new MadviseTimer(m.OnCpu(cpu), Recorder)
        : cpu == 0 ? this : throw new ArgumentOutOfRangeException(nameof(cpu), cpu, $"{Name} has one CPU");

    /// <inheritdoc/>
    public Errno Madvise(ulong addr, ulong length, Advice advice)
    {
        long start = Stopwatch.GetTimestamp();
        var e = _inner.Madvise(addr, length, advice);
        Recorder.RecordSince(start);
        return e;
    }

    /// <inheritdoc/>
    public MmapResult Mmap(ulong addr, ulong length, Prot prot, MapFlags flags) => _inner.Mmap(addr, length, prot, flags);

    /// <inheritdoc/>
    public Errno Munmap(ulong addr, ulong length) => _inner.Munmap(addr, length);

    /// <inheritdoc/>
    public Errno Mprotect(ulong addr, ulong length, Prot prot) => _inner.Mprotect(addr, length, prot);

    /// <inheritdoc/>
    public AccessResult TouchPages(ulong addr, ulong length, bool write) => _inner.TouchPages(addr, length, write);

    /// <inheritdoc/>
    public MmapResult Mremap(ulong addr, ulong oldLen, ulong newLen, MremapFlags flags, ulong newAddr) =>
        _inner.Mremap(addr, oldLen, newLen, flags, newAddr);

    /// <inheritdoc/>
    public Errno Mlock(ulong addr, ulong length) => _inner.Mlock(addr, length);

    /// <inheritdoc/>
    public Errno Mlock2(ulong addr, ulong length, MlockFlags flags) => _inner.Mlock2(addr, length, flags);

    /// <inheritdoc/>
    public Errno Munlock(ulong addr, ulong length) => _inner.Munlock(addr, length);

    /// <inheritdoc/>
    public Errno Mlockall(MlockallFlags flags) => _inner.Mlockall(flags);

    /// <inheritdoc/>
    public Errno Munlockall() => _inner.Munlockall();

    /// <inheritdoc/>
    public ulong Brk(ulong addr) => _inner.Brk(addr);

    /// <inheritdoc/>
    public Errno Mseal(ulong addr, ulong length, ulong flags) => _inner.Mseal(addr, length, flags);

    /// <inheritdoc/>
    public IReadOnlyList<VmaView> Layout(ulong start, ulong end) => _inner.Layout(start, end);

    /// <inheritdoc/>
    public AccessResult WriteByte(ulong va, byte value) => Data.WriteByte(va, value);

    /// <inheritdoc/>
    public AccessResult Fingerprint(ulong va, out ulong fingerprint) => Data.Fingerprint(va, out fingerprint);

    /// <inheritdoc/>
    public ulong FingerprintAfterWrite(ulong previous, ulong va, byte value) => Data.FingerprintAfterWrite(previous, va, value);

    /// <inheritdoc/>
    public int CreateFile(ulong size) => Files.CreateFile(size);

    /// <inheritdoc/>
    public MmapResult MmapFile(ulong addr, ulong length, Prot prot, MapFlags flags, int file, ulong offset) =>
        Files.MmapFile(addr, length, prot, flags, file, offset);

    /// <inheritdoc/>
    public bool[] PresentPages(ulong addr, int pages) => Files.PresentPages(addr, pages);

    /// <inheritdoc/>
    public void DropFileCache(int file) => Files.DropFileCache(file);

    /// <inheritdoc/>
    public MmStatus Status() => _inner.Status();

    /// <summary>Disposes the wrapped target.</summary>
    public void Dispose() => _inner.Dispose();

    private IDataTarget Data => _inner as IDataTarget ?? throw new NotSupportedException($"{Name} cannot store and check page data");

    private IFileTarget Files => _inner as IFileTarget ?? throw new ScenarioException($"{Name} cannot map files");
}
