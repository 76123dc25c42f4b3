using PtLab.Paging;
using PtLab.Sync;

namespace PtLab.Systematic;

/// <summary>
/// The store-buffer litmus of the locks biased to one owner, on two real threads: the owner's
/// entry (a plain store of its mark, then a load of the other side's announcement) and the other
/// side's (a store of its announcement, the process-wide barrier, then a load of the owner's
/// mark). x86 lets a load pass an earlier store to another address, so without the barrier both
/// sides can read the other's word before it is visible and both go in; the barrier is what the
/// IPI of a remote CPU gives the kernel's per-CPU state. Each round, both sides arrive at a
/// spinning barrier, leave it together and wait a small pseudo-random number of spins each, so
/// that over the rounds their stores and loads meet at every offset; the rounds in which both were
/// in at once are counted with a full-fenced counter (so the count itself cannot be reordered).
/// </summary>
/// <remarks>
/// Whether a run without the barrier shows a round with both in depends on the hardware and on
/// both threads really running at once: a run whose threads share one core (the other busy) never
/// does. A count above zero with the barrier is a real bug.
/// </remarks>
public static class LockStepLitmus
{
    /// <summary>One biased lock under test: its owner's and another CPU's entry and exit.</summary>
    public sealed record Subject(string Name, Action OwnerEnter, Action OwnerExit, Action OtherEnter, Action OtherExit);

    /// <summary>
    /// The biased locks of a machine of one CPU without hooks: a CPU's TLB (a remote flush is the
    /// other side) and <c>mmap_lock</c> (a writer is the other side), each with its barrier or,
    /// with <paramref name="withoutBarrier"/>, without it.
    /// </summary>
    public static IReadOnlyList<Subject> BiasedLocks(bool withoutBarrier)
    {
        var hooks = new SyncHooks(2);
        var tlb = new Tlb { Owner = 0, OwnerBiased = true, SkipBarrierForTesting = withoutBarrier };
        var sem = new RwSemaphore { BiasedTo = 0, SkipBarrierForTesting = withoutBarrier };
        return
        [
            new("tlb", () => tlb.Lock(hooks, 0), () => tlb.Unlock(hooks, 0), () => tlb.Lock(hooks, 1), () => tlb.Unlock(hooks, 1)),
            new("mmap_lock", () => sem.DownRead(0), () => sem.UpRead(0), () => sem.DownWrite(1), () => sem.UpWrite(1)),
        ];
    }

    /// <summary>
    /// Runs <paramref name="rounds"/> lock-step rounds of <paramref name="subject"/>, the owner on
    /// this thread and the other side on a thread of its own; returns the rounds in which both were
    /// in at once. An exception on the other side is rethrown here.
    /// </summary>
    public static long Run(Subject subject, int rounds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        int arrived = 0, inside = 0;
        long both = 0;
        Exception? failed = null;
        void Side(int r, uint seed, Action enter, Action exit)
        {
            Interlocked.Increment(ref arrived);
            while (Volatile.Read(ref arrived) < 2 * r)
            {
            }

            int delay = (int)(((uint)r * 0x9E3779B1u ^ seed) >> 28); // 0 to 15
            for (int i = 0; i < delay; i++)
            {
                Thread.SpinWait(1);
            }

            enter();
            if (Interlocked.Increment(ref inside) > 1)
            {
                Interlocked.Increment(ref both);
            }

            Interlocked.Decrement(ref inside);
            exit();
        }

        var t = new Thread(() =>
        {
            try
            {
                for (int r = 1; r <= rounds; r++)
                {
                    Side(r, 0x5bd1e995u, subject.OtherEnter, subject.OtherExit);
                }
            }
            catch (Exception e)
            {
                failed = e;
                Interlocked.Add(ref arrived, 1 << 30); // release the owner's side
            }
        })
        { IsBackground = true, Name = "litmus other CPU" };
        t.Start();
        for (int r = 1; r <= rounds && Volatile.Read(ref failed) is null; r++)
        {
            Side(r, 0, subject.OwnerEnter, subject.OwnerExit);
        }

        t.Join();
        if (failed is not null)
        {
            throw new InvalidOperationException($"the litmus of {subject.Name} failed on the other CPU's thread", failed);
        }

        return both;
    }
}
