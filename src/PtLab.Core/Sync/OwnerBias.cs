using System.Runtime.CompilerServices;

namespace PtLab.Sync;

/// <summary>
/// Exclusion biased to one owner, beside a spin lock word that everyone else takes: for per-CPU
/// state that its CPU enters far more often than anyone else (its TLB, its page list), on a
/// machine of one CPU. The owner marks itself in with plain stores, no atomic and no line another
/// thread writes, as the kernel's own CPU enters such state with only interrupts or preemption
/// off. Anyone else takes the lock word, announces itself, and then makes the owner's mark
/// visible with a process-wide barrier before it waits for the owner to be out: what the IPI a
/// remote CPU sends does. An owner that finds someone else announced takes the lock word instead.
/// </summary>
/// <remarks>
/// Either the owner's mark is visible to the other side after its barrier, or the owner's read
/// of the announcement comes after that barrier and sees it: they never both go in. The caller
/// must know it is the owner (the thread driving the owner CPU), and the owner never nests.
/// </remarks>
internal struct OwnerBias
{
    // 1 while the owner is in on the fast path, else 0 (also while it is in under the lock word).
    private int _ownerIn;

    // 1 while someone other than the owner holds the lock word.
    private int _othersIn;

    /// <summary>
    /// Test-only mutation: the other side waits for the owner without the process-wide barrier,
    /// so the owner's mark and the other's announcement may each be read before the other's store
    /// is visible (see <c>PtLab.Systematic.LockStepLitmus</c>).
    /// </summary>
    public bool SkipBarrierForTesting;

    /// <summary>The owner's entry: true when it is in; false when it must take the lock word instead.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryOwnerEnter()
    {
        Volatile.Write(ref _ownerIn, 1);
        if (Volatile.Read(ref _othersIn) == 0)
        {
            return true;
        }

        Volatile.Write(ref _ownerIn, 0);
        return false;
    }

    /// <summary>Whether the owner is in on the fast path (else, being in, it holds the lock word).</summary>
    public readonly bool OwnerIn => _ownerIn != 0;

    /// <summary>The owner's exit from the fast path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void OwnerExit() => Volatile.Write(ref _ownerIn, 0);

    /// <summary>Someone else, holding the lock word: waits until the owner is out, and keeps it out until <see cref="OthersExit"/>.</summary>
    public void OthersEnter()
    {
        Volatile.Write(ref _othersIn, 1);
        if (!SkipBarrierForTesting)
        {
            Interlocked.MemoryBarrierProcessWide();
        }

        var spin = default(SpinWait);
        while (Volatile.Read(ref _ownerIn) != 0)
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary>Someone else's exit, before it releases the lock word.</summary>
    public void OthersExit() => Volatile.Write(ref _othersIn, 0);
}
