using System.Globalization;
using PtLab.Mm;
using PtLab.Sync;

namespace PtLab.Cli;

/// <summary>
/// <c>--profile</c>: what one run did, counted per operation rather than timed, so two designs can
/// be told apart independently of the host's noise. Per-fault figures divide by the faults.
/// </summary>
internal sealed record ProfileReport(
    long Faults, long SharedAtomics, long PercpuOps, long LockAcquisitions, long GracePeriods, long TlbFlushes, long TablesZeroed)
{
    public static ProfileReport From(OpProfile p, MmCounters c) => new(
        p.Total(ProfileOp.Fault),
        p.Total(ProfileOp.SharedAtomic),
        p.Total(ProfileOp.PercpuOp),
        p.Total(ProfileOp.LockAcquire),
        c.GracePeriods,
        c.TlbFlushes,
        p.Total(ProfileOp.TableZeroed));

    /// <summary>The rows a table prints: name, count, count per fault.</summary>
    public IEnumerable<(string Name, long Count, double PerFault)> Rows()
    {
        double f = Math.Max(1, Faults);
        yield return ("faults", Faults, Faults / f);
        yield return ("atomics on shared lines", SharedAtomics, SharedAtomics / f);
        yield return ("per-CPU ops (no shared line)", PercpuOps, PercpuOps / f);
        yield return ("lock acquisitions", LockAcquisitions, LockAcquisitions / f);
        yield return ("grace periods", GracePeriods, GracePeriods / f);
        yield return ("TLB flushes", TlbFlushes, TlbFlushes / f);
        yield return ("tables zeroed", TablesZeroed, TablesZeroed / f);
    }

    public void Write(TextWriter w)
    {
        w.WriteLine("profile (counts, not times):");
        foreach (var (name, count, perFault) in Rows())
        {
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {name,-30} {count,15:N0}  {perFault,10:0.000} per fault"));
        }
    }
}
