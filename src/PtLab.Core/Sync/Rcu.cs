using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace PtLab.Sync;

/// <summary>
/// Read-copy-update for the simulated machine: one epoch slot per CPU, as in FASTER's LightEpoch.
/// Models <c>rcu_read_lock</c>, <c>synchronize_rcu</c> and <c>call_rcu</c>.
/// </summary>
/// <remarks>
/// A reader publishes the global epoch it saw in its own slot with a plain store. The updater
/// advances the epoch and then issues a process-wide barrier (membarrier), so a reader's slot store
/// is either visible to the scan that follows, or the reader's later loads come after the barrier
/// and see whatever the updater unpublished before it. That keeps the read side free of fences.
/// Callbacks queued by <see cref="CallRcu"/> do not run by themselves: they run on the thread of a
/// later <see cref="Poll"/>, <see cref="SynchronizeRcu"/> or <see cref="Barrier"/>, so code that waits
/// for a callback must drive grace periods itself.
/// </remarks>
public sealed class Rcu
{
    // One per CPU, each on its own cache line: written by its CPU at every read section, read by updaters.
    private readonly Padded<Slot>[] _slots;
    private readonly ISchedulingPoint? _sched;
    private readonly LockDep? _lockDep;

    // No scheduling point and no lock checker: the read side takes its inlined fast path.
    private readonly bool _bare;
    private readonly Lock _callbackLock = new();
    private readonly Queue<(long Target, Action Callback)> _callbacks = new();
    // Read by every reader at every read section, and written only when a grace period starts.
    private Padded<long> _epoch;

    // Written by every call_rcu and every grace period, read by no reader: on a line of their own,
    // so that these writes cost the readers no cache miss on the epoch or on the fields above.
    private Padded<UpdaterCounters> _updates;

    /// <summary>Creates RCU state for <paramref name="cpus"/> CPUs.</summary>
    /// <param name="cpus">Simulated CPUs.</param>
    /// <param name="hooks">The machine's scheduling-point hook and lock checker, or null.</param>
    public Rcu(int cpus, SyncHooks? hooks = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        if (hooks is not null && hooks.Cpus < cpus)
        {
            throw new ArgumentException($"hooks cover {hooks.Cpus} CPUs, RCU needs {cpus}", nameof(hooks));
        }

        _slots = new Padded<Slot>[cpus];
        _epoch.Value = 1;
        Hooks = hooks;
        _sched = hooks?.Scheduler;
        _lockDep = hooks?.LockDep;
        _bare = _sched is null && _lockDep is null;
    }

    /// <summary>The hooks it was built with; primitives built on top of this RCU share them.</summary>
    public SyncHooks? Hooks { get; }

    /// <summary>Number of CPUs with a slot.</summary>
    public int Cpus => _slots.Length;

    /// <summary>Grace periods that completed (a synchronize or a successful poll).</summary>
    public long GracePeriods => Volatile.Read(ref _updates.Value.GracePeriods);

    /// <summary>Callbacks queued by <see cref="CallRcu"/> that have not run yet.</summary>
    public int PendingCallbacks => Volatile.Read(ref _updates.Value.Pending);

    /// <summary>
    /// Whether this RCU has neither a scheduling point nor a lock checker, so that
    /// <see cref="ReadLockSaved"/> and <see cref="ReadUnlockSaved"/> may stand for a read section.
    /// </summary>
    internal bool IsBare => _bare;

    /// <summary>Lets the lock checker see whether a CPU is inside a read section.</summary>
    public bool InReadSection(int cpu) => _slots[cpu].Value.Word != 0;

    /// <summary>The epoch a CPU entered its outermost read section under, or 0.</summary>
    internal long ReaderEpoch(int cpu) => Slot.EpochOf(Volatile.Read(ref _slots[cpu].Value.Word));

    /// <summary>The current global epoch.</summary>
    internal long CurrentEpoch => _epoch.Read();

    /// <summary><c>rcu_read_lock</c> on CPU <paramref name="cpu"/>. Nests.</summary>
    /// <remarks>
    /// Without hooks this is the kernel's cost (a preempt-count-like mark): one load and one plain
    /// store of the CPU's own slot word, which carries the nesting and, from the outermost level,
    /// the epoch seen; no fence and no shared line written.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadLock(int cpu)
    {
        if (_bare)
        {
            ReadLockSaved(cpu);
            return;
        }

        ReadLockHooked(cpu);
    }

    /// <summary><c>rcu_read_unlock</c> on CPU <paramref name="cpu"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadUnlock(int cpu)
    {
        if (_bare)
        {
            ref long w = ref _slots[cpu].Value.Word;
            Volatile.Write(ref w, Slot.Leave(w, cpu));
            return;
        }

        ReadUnlockHooked(cpu);
    }

    /// <summary>
    /// <c>rcu_read_lock</c> without hooks, for a section that ends in the same method with
    /// <see cref="ReadUnlockSaved"/>: returns the CPU's word from before, which the unlock stores
    /// back instead of reading the word again (the section is the innermost, and only its CPU
    /// writes the word), so a section costs one load and two stores. Only for an RCU built
    /// without a scheduling point or lock checker (the other entries call it for their mark).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal long ReadLockSaved(int cpu)
    {
        ref long w = ref _slots[cpu].Value.Word;
        long v = w;
        Volatile.Write(ref w, v == 0 ? Slot.Enter(_epoch.Read()) : Slot.Nest(v, cpu));
        return v;
    }

    /// <summary><c>rcu_read_unlock</c> of a section that <see cref="ReadLockSaved"/> opened: the word goes back to <paramref name="saved"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void ReadUnlockSaved(int cpu, long saved) => Volatile.Write(ref _slots[cpu].Value.Word, saved);

    private void ReadLockHooked(int cpu)
    {
        _sched?.Reached(SchedulingPointKind.RcuReadLock, this);
        ReadLockSaved(cpu);
        _lockDep?.RcuReadLock(cpu);
    }

    private void ReadUnlockHooked(int cpu)
    {
        _sched?.Reached(SchedulingPointKind.RcuReadUnlock, this);
        ref long w = ref _slots[cpu].Value.Word;
        if (w == 0)
        {
            ThrowUnbalanced(cpu);
        }

        _lockDep?.RcuReadUnlock(cpu);
        Volatile.Write(ref w, Slot.Leave(w, cpu));
    }

    [DoesNotReturn]
    private static void ThrowUnbalanced(int cpu) => throw new RcuException($"rcu_read_unlock on CPU {cpu} without rcu_read_lock");

    [DoesNotReturn]
    private static void ThrowTooDeep(int cpu) => throw new RcuException($"rcu_read_lock on CPU {cpu} nested {Slot.MaxNesting} deep");

    /// <summary><c>synchronize_rcu</c>: waits until every reader that was inside has left.</summary>
    /// <param name="callerCpu">The CPU calling, or -1; sleeping inside its own read section is a bug.</param>
    public void SynchronizeRcu(int callerCpu = -1)
    {
        _sched?.Reached(SchedulingPointKind.SynchronizeRcu, this);
        if (callerCpu >= 0)
        {
            _lockDep?.MightSleep(callerCpu, "synchronize_rcu");
        }

        if (callerCpu >= 0 && _slots[callerCpu].Value.Word != 0)
        {
            throw new RcuException($"synchronize_rcu called inside an RCU read section on CPU {callerCpu}");
        }

        long target = _epoch.AddAtomic(1);
        if (callerCpu >= 0 && _slots.Length == 1)
        {
            // The only CPU is the caller, outside any read section: no reader can be inside, so the
            // grace period is over at once, as Tiny RCU's synchronize_rcu on a uniprocessor. With
            // no other CPU's slot to read, there is nothing for the process-wide barrier to order.
            Complete(target);
            return;
        }

        Interlocked.MemoryBarrierProcessWide();
        for (int i = 0; i < _slots.Length; i++)
        {
            var spin = new SpinWait();
            while (true)
            {
                long e = Slot.EpochOf(Volatile.Read(ref _slots[i].Value.Word));
                if (e == 0 || e >= target)
                {
                    break;
                }

                _sched?.Reached(SchedulingPointKind.Wait, this);
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }

        Complete(target);
    }

    /// <summary><c>call_rcu</c>: runs <paramref name="callback"/> after a grace period.</summary>
    /// <remarks>Callbacks run from a later poll, synchronize or barrier on the caller's thread.</remarks>
    public void CallRcu(Action callback)
    {
        _sched?.Reached(SchedulingPointKind.CallRcu, this);
        int pending;
        lock (_callbackLock)
        {
            // Every reader inside now entered under an epoch <= the current one.
            _callbacks.Enqueue((_epoch.Read() + 1, callback));
            pending = ++_updates.Value.Pending;
        }

        if (pending >= 64)
        {
            Poll();
        }
    }

    /// <summary>
    /// Tries to end a grace period without waiting: advances the epoch and runs the callbacks
    /// whose readers have all left. Returns true when a grace period completed.
    /// </summary>
    public bool Poll()
    {
        _sched?.Reached(SchedulingPointKind.RcuPoll, this);
        if (Volatile.Read(ref _updates.Value.Pending) == 0)
        {
            return false;
        }

        long target = _epoch.AddAtomic(1);
        Interlocked.MemoryBarrierProcessWide();
        for (int i = 0; i < _slots.Length; i++)
        {
            long e = Slot.EpochOf(Volatile.Read(ref _slots[i].Value.Word));
            if (e != 0 && e < target)
            {
                return false;
            }
        }

        Complete(target);
        return true;
    }

    /// <summary><c>rcu_barrier</c>: waits a grace period and runs every queued callback.</summary>
    public void Barrier(int callerCpu = -1)
    {
        while (Volatile.Read(ref _updates.Value.Pending) > 0)
        {
            SynchronizeRcu(callerCpu);
        }
    }

    private void Complete(long target)
    {
        Interlocked.Increment(ref _updates.Value.GracePeriods);
        long completed;
        while (true)
        {
            completed = Volatile.Read(ref _updates.Value.Completed);
            if (completed >= target || Interlocked.CompareExchange(ref _updates.Value.Completed, target, completed) == completed)
            {
                break;
            }
        }

        completed = Math.Max(completed, target);
        List<Action>? ready = null;
        lock (_callbackLock)
        {
            while (_callbacks.Count > 0 && _callbacks.Peek().Target <= completed)
            {
                (ready ??= []).Add(_callbacks.Dequeue().Callback);
                _updates.Value.Pending--;
            }
        }

        if (ready is not null)
        {
            foreach (var cb in ready)
            {
                cb();
            }
        }
    }

    private struct UpdaterCounters
    {
        // The last grace period completed (the epoch it waited for).
        public long Completed;

        // Grace periods completed, for the figures.
        public long GracePeriods;

        // Callbacks queued and not yet run; changed under the callback lock.
        public int Pending;
    }

    // A CPU's read-side word: 0 outside any read section; inside, the epoch it entered its
    // outermost section under, shifted up, and the nesting depth below it. One word, so entering
    // and leaving a section is one load and one store of the CPU's own line (as preempt_count), and
    // an updater sees the depth and the epoch change together.
    private struct Slot
    {
        public const int MaxNesting = (1 << NestingBits) - 1;
        private const int NestingBits = 16;

        // Written by its CPU only (plain stores), read by updaters.
        public long Word;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static long Enter(long epoch) => (epoch << NestingBits) | 1;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static long Nest(long word, int cpu)
        {
            if ((word & MaxNesting) == MaxNesting)
            {
                ThrowTooDeep(cpu);
            }

            return word + 1;
        }

        // The outermost exit clears the word, epoch and all; an exit with no section open throws.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static long Leave(long word, int cpu)
        {
            long depth = word & MaxNesting;
            if (depth <= 1)
            {
                if (depth == 0)
                {
                    ThrowUnbalanced(cpu);
                }

                return 0;
            }

            return word - 1;
        }

        public static long EpochOf(long word) => word >> NestingBits;
    }
}

/// <summary>RCU used against its rules: an unlock without a lock, or a grace period waited for inside a read section.</summary>
/// <param name="message">The misuse, naming the CPU.</param>
public sealed class RcuException(string message) : InvalidOperationException(message);
