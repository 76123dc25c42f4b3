using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace PtLab.Sync;

/// <summary>How a <see cref="PercpuRef"/> starts (<c>PERCPU_REF_INIT_*</c>, <c>PERCPU_REF_ALLOW_REINIT</c>).</summary>
[Flags]
public enum PercpuRefInit
{
    /// <summary>Percpu mode, count 1.</summary>
    None = 0,

    /// <summary><c>PERCPU_REF_INIT_ATOMIC</c>: start, and stay, in atomic mode until switched to percpu.</summary>
    Atomic = 1,

    /// <summary><c>PERCPU_REF_INIT_DEAD</c>: start dead with count 0, ready for <see cref="PercpuRef.Reinit"/>.</summary>
    Dead = 2,

    /// <summary>
    /// <c>PERCPU_REF_ALLOW_REINIT</c>: keep the percpu counters after a switch to atomic, so the ref
    /// can go back to percpu mode. Implied by <see cref="Atomic"/> and <see cref="Dead"/>.
    /// </summary>
    AllowReinit = 4,
}

/// <summary>
/// A per-CPU reference count, the model of <c>lib/percpu-refcount.c</c> with the seed RFC's patch 02
/// (the count is stable when <see cref="SwitchToAtomicSync"/> returns) and patch 03 (a switch lock
/// per ref instead of one global lock).
/// </summary>
/// <remarks>
/// <para>
/// In percpu mode a get or put is one plain add on the caller's CPU stripe (<c>this_cpu_add</c>,
/// no lock prefix, no fence), inside an RCU read section, and nothing can tell whether the count is zero. A switch to atomic
/// mode marks the ref atomic, waits a grace period so that no CPU still uses its stripe, then folds
/// the stripes into the shared counter; from then on every get and put is an atomic op on the
/// shared counter, and the put that reaches zero calls the release callback.
/// </para>
/// <para>
/// The shared counter carries <see cref="CountBias"/> in percpu mode (<c>PERCPU_COUNT_BIAS</c>), so it
/// cannot reach zero while the stripes still hold part of the count. The stripes are only deltas
/// against it: the true count is always <c>shared − bias + Σ stripes</c> in percpu mode and
/// <c>shared</c> in atomic mode. That is why every get or put made under the switch lock, or from an
/// RCU callback (which runs on whatever thread drives RCU and has no CPU of its own), goes to the
/// shared counter whatever the mode: it is always a correct place to count.
/// </para>
/// <para>
/// <see cref="Rcu.CallRcu"/> callbacks only run when some thread polls or synchronizes, so the
/// calls that wait for a switch (<see cref="SwitchToAtomicSync"/>, and any switch that finds another
/// one still in flight) drive grace periods themselves with <see cref="Rcu.SynchronizeRcu"/> instead
/// of sleeping on a wait queue. They therefore sleep, and must not be called under a spin lock or
/// inside an RCU read section. The switch callback is queued after the switch lock is dropped, so
/// no callback ever runs under a switch lock.
/// </para>
/// <para>
/// Every method that takes a <c>cpu</c> must be called by the thread currently running that
/// simulated CPU: the CPU's stripe and RCU slot are used, and the lock checker sees the call there.
/// </para>
/// </remarks>
public sealed partial class PercpuRef
{
    /// <summary><c>PERCPU_COUNT_BIAS</c>: 1 &lt;&lt; 63, the shared counter's offset while in percpu mode.</summary>
    public const long CountBias = long.MinValue;

    private const int FlagAtomic = 1; // __PERCPU_REF_ATOMIC
    private const int FlagDead = 2;   // __PERCPU_REF_DEAD

    private static readonly Action<PercpuRef> s_noopConfirm = static _ => { };

    private readonly Rcu _rcu;
    private readonly SyncHooks? _hooks;
    private readonly ISchedulingPoint? _sched;
    private readonly LockDep? _lockDep;
    private readonly OpProfile? _profile;

    // No scheduling point, lock checker or profile: gets and puts take the inlined fast path,
    // which is the kernel's (rcu_read_lock's nesting mark, one this_cpu_add, the unmark).
    private readonly bool _bare;
    private readonly Action<PercpuRef>? _release;

    // The percpu counters; null once freed (__percpu_ref_exit).
    private Padded<long>[]? _stripes;

    // _stripes while the ref is in percpu mode, null when ATOMIC or DEAD is set: the one word the
    // fast path loads, as the kernel loads percpu_count_ptr with its flag bits.
    private Padded<long>[]? _live;
    private int _flags;
    private long _count;

    // Non-null while a switch to atomic is in flight; cleared by the RCU callback.
    private Action<PercpuRef>? _confirmSwitch;
    private int _switchLock;
    private bool _forceAtomic;
    private readonly bool _allowReinit;
    private bool _sync;
    private bool _exited;

    /// <summary><c>percpu_ref_init</c>.</summary>
    /// <param name="rcu">The machine's RCU; one stripe per CPU it has. Its hooks are used too.</param>
    /// <param name="release">Called, on the thread of the put, when the count reaches zero in atomic mode; must not sleep.</param>
    /// <param name="flags">How the ref starts.</param>
    public PercpuRef(Rcu rcu, Action<PercpuRef>? release, PercpuRefInit flags = PercpuRefInit.None)
    {
        _rcu = rcu;
        _hooks = rcu.Hooks;
        _sched = _hooks?.Scheduler;
        _lockDep = _hooks?.LockDep;
        _profile = _hooks?.Profile;
        _bare = _sched is null && _lockDep is null && _profile is null;
        _release = release;
        _stripes = new Padded<long>[rcu.Cpus];
        _forceAtomic = (flags & PercpuRefInit.Atomic) != 0;
        _allowReinit = (flags & PercpuRefInit.AllowReinit) != 0;

        long start = 0;
        int f = 0;
        if ((flags & (PercpuRefInit.Atomic | PercpuRefInit.Dead)) != 0)
        {
            f |= FlagAtomic;
            _allowReinit = true;
        }
        else
        {
            start += CountBias;
        }

        if ((flags & PercpuRefInit.Dead) != 0)
        {
            f |= FlagDead;
        }
        else
        {
            start++;
        }

        _count = start;
        SetFlags(f);
    }

    /// <summary>Whether the ref is in percpu mode (<c>__ref_is_percpu</c>).</summary>
    public bool IsPercpu => Volatile.Read(ref _live) is not null;

    /// <summary><c>percpu_ref_is_dying</c>: killed, or its percpu counters were freed.</summary>
    public bool IsDying => (Volatile.Read(ref _flags) & FlagDead) != 0;

    /// <summary>Whether a switch to atomic mode is waiting for its grace period.</summary>
    public bool SwitchPending => Volatile.Read(ref _confirmSwitch) is not null;

    /// <summary>
    /// <c>percpu_ref_is_zero</c>: true only in atomic mode with a zero count. In percpu mode the
    /// count cannot be known, so this is false whatever the stripes hold.
    /// </summary>
    /// <remarks>
    /// The kernel takes the switch lock here so that the count cannot be freed under it by
    /// <c>percpu_ref_exit</c>; the model never frees the counter, so it reads it directly.
    /// </remarks>
    public bool IsZero => Volatile.Read(ref _live) is null && Volatile.Read(ref _count) == 0;

    /// <summary><c>percpu_ref_get_many</c> on CPU <paramref name="cpu"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Get(int cpu, long nr = 1)
    {
        if (_bare)
        {
            long saved = _rcu.ReadLockSaved(cpu);
            var live = Volatile.Read(ref _live);
            if (live is not null)
            {
                live[cpu].AddOwned(nr);
            }
            else
            {
                AddShared(nr);
            }

            _rcu.ReadUnlockSaved(cpu, saved);
            return;
        }

        GetHooked(cpu, nr);
    }

    private void GetHooked(int cpu, long nr)
    {
        _sched?.Reached(SchedulingPointKind.RefGet, this);
        _rcu.ReadLock(cpu);
        if (!TryAddPercpu(cpu, nr))
        {
            CountShared(cpu);
            AddShared(nr);
        }

        _rcu.ReadUnlock(cpu);
    }

    /// <summary><c>percpu_ref_tryget_many</c>: a get that fails only when the count is zero in atomic mode.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGet(int cpu, long nr = 1)
    {
        if (_bare)
        {
            long saved = _rcu.ReadLockSaved(cpu);
            var live = Volatile.Read(ref _live);
            bool got;
            if (live is not null)
            {
                live[cpu].AddOwned(nr);
                got = true;
            }
            else
            {
                got = AddSharedNotZero(nr);
            }

            _rcu.ReadUnlockSaved(cpu, saved);
            return got;
        }

        return TryGetHooked(cpu, nr);
    }

    private bool TryGetHooked(int cpu, long nr)
    {
        _sched?.Reached(SchedulingPointKind.RefGet, this);
        _rcu.ReadLock(cpu);
        bool ok = TryAddPercpu(cpu, nr) || (CountShared(cpu) && AddSharedNotZero(nr));
        _rcu.ReadUnlock(cpu);
        return ok;
    }

    /// <summary>
    /// <c>percpu_ref_tryget</c> called inside the caller's RCU read section, keeping its own nested
    /// section: without hooks that nested section does nothing, so the fast path of
    /// <see cref="TryGetInRcu"/> runs; with hooks the nested section stays, with its scheduling
    /// points, exactly as <see cref="TryGet"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetNested(int cpu) => _bare ? TryGetInRcu(cpu) : TryGetHooked(cpu, 1);

    /// <summary>
    /// <c>percpu_ref_tryget_many</c> for a caller already inside an RCU read section on
    /// <paramref name="cpu"/> (as <c>pte_offset_map</c> is): in percpu mode a plain add on the CPU's
    /// own stripe and nothing else, no read-section bookkeeping and no fence; in atomic mode the
    /// shared counter, as <see cref="TryGet"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetInRcu(int cpu, long nr = 1)
    {
        if (_bare)
        {
            var live = Volatile.Read(ref _live);
            if (live is not null)
            {
                live[cpu].AddOwned(nr);
                return true;
            }

            return AddSharedNotZero(nr);
        }

        AssertInReadSection(cpu);
        _sched?.Reached(SchedulingPointKind.RefGet, this);
        return TryAddPercpu(cpu, nr) || (CountShared(cpu) && AddSharedNotZero(nr));
    }

    /// <summary><c>percpu_ref_get_many</c> inside the caller's RCU read section (see <see cref="TryGetInRcu"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void GetInRcu(int cpu, long nr = 1)
    {
        if (_bare)
        {
            var live = Volatile.Read(ref _live);
            if (live is not null)
            {
                live[cpu].AddOwned(nr);
            }
            else
            {
                AddShared(nr);
            }

            return;
        }

        AssertInReadSection(cpu);
        _sched?.Reached(SchedulingPointKind.RefGet, this);
        if (!TryAddPercpu(cpu, nr))
        {
            CountShared(cpu);
            AddShared(nr);
        }
    }

    /// <summary><c>percpu_ref_put_many</c> inside the caller's RCU read section (see <see cref="TryGetInRcu"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PutInRcu(int cpu, long nr = 1)
    {
        if (_bare)
        {
            var live = Volatile.Read(ref _live);
            if (live is not null)
            {
                live[cpu].AddOwned(-nr);
            }
            else
            {
                PutShared(nr);
            }

            return;
        }

        AssertInReadSection(cpu);
        _sched?.Reached(SchedulingPointKind.RefPut, this);
        if (!TryAddPercpu(cpu, -nr))
        {
            CountShared(cpu);
            PutShared(nr);
        }
    }

    // The in-RCU fast paths rely on the caller's read section; checked when lock checking is on.
    private void AssertInReadSection(int cpu)
    {
        if (_lockDep is not null && !_rcu.InReadSection(cpu))
        {
            throw new PercpuRefException($"percpu_ref fast path on CPU {cpu} outside an RCU read section");
        }
    }

    /// <summary>
    /// <c>percpu_ref_tryget_live</c>: also fails once the ref was killed, even while the count is
    /// not yet zero. Once a kill is confirmed, every later call fails.
    /// </summary>
    public bool TryGetLive(int cpu)
    {
        _sched?.Reached(SchedulingPointKind.RefGet, this);
        _rcu.ReadLock(cpu);
        // _flags is written before _live is cleared, so seeing atomic mode here makes a kill visible.
        bool ok = TryAddPercpu(cpu, 1) || ((Volatile.Read(ref _flags) & FlagDead) == 0 && CountShared(cpu) && AddSharedNotZero(1));
        _rcu.ReadUnlock(cpu);
        return ok;
    }

    /// <summary>
    /// The percpu-mode fast path of <see cref="Get"/> alone: without hooks and in percpu mode, one
    /// add on this CPU's counter inside a read section, and true; otherwise nothing is done and
    /// false tells the caller to take <see cref="Get"/>. Nothing on this path can fail, so a
    /// caller needs no exception handling around it and stays small enough to inline.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool GetIfPercpu(int cpu) => _bare && AddIfPercpu(cpu, 1);

    /// <summary>The percpu-mode fast path of <see cref="Put"/> alone (see <see cref="GetIfPercpu"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool PutIfPercpu(int cpu) => _bare && AddIfPercpu(cpu, -1);

    /// <summary>
    /// The percpu-mode fast path of <see cref="TryGetInRcu"/> alone, for a caller inside an RCU
    /// read section on <paramref name="cpu"/>: without hooks and in percpu mode, one add on this
    /// CPU's counter and true; otherwise nothing is done and false tells the caller to take the
    /// full path. It cannot fail, so its caller stays small enough to inline.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetIfPercpuInRcu(int cpu)
    {
        if (!_bare)
        {
            return false;
        }

        var live = Volatile.Read(ref _live);
        if (live is null)
        {
            return false;
        }

        live[cpu].AddOwned(1);
        return true;
    }

    /// <summary>
    /// Whether, without hooks, the ref is in percpu mode now: read inside the caller's RCU read
    /// section, a true answer means that a get and a put made on one CPU's stripe inside that same
    /// section would cancel before anyone could see them. The stripes are only summed by the RCU
    /// callback of a switch to atomic mode, which runs after a grace period that waits for the
    /// section; nothing else reads them but the test-only <c>TrueCount</c> at rest. A caller may
    /// therefore leave such a pair out (see <c>PercpuPteMap.TryMapEntry</c>).
    /// </summary>
    public bool IsPercpuBare
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _bare && Volatile.Read(ref _live) is not null;
    }

    // Only called when _bare, so the RCU has no hooks either (they are the same hooks) and its
    // saved-word section applies: one load and two stores of the CPU's own word.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool AddIfPercpu(int cpu, long delta)
    {
        long saved = _rcu.ReadLockSaved(cpu);
        var live = Volatile.Read(ref _live);
        if (live is not null)
        {
            live[cpu].AddOwned(delta);
        }

        _rcu.ReadUnlockSaved(cpu, saved);
        return live is not null;
    }

    /// <summary><c>percpu_ref_put_many</c> on CPU <paramref name="cpu"/>; the put that reaches zero in atomic mode releases.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Put(int cpu, long nr = 1)
    {
        if (_bare)
        {
            long saved = _rcu.ReadLockSaved(cpu);
            var live = Volatile.Read(ref _live);
            if (live is not null)
            {
                live[cpu].AddOwned(-nr);
            }
            else
            {
                PutShared(nr);
            }

            _rcu.ReadUnlockSaved(cpu, saved);
            return;
        }

        PutHooked(cpu, nr);
    }

    private void PutHooked(int cpu, long nr)
    {
        _sched?.Reached(SchedulingPointKind.RefPut, this);
        _rcu.ReadLock(cpu);
        if (!TryAddPercpu(cpu, -nr))
        {
            CountShared(cpu);
            PutShared(nr);
        }

        _rcu.ReadUnlock(cpu);
    }

    /// <summary>
    /// The fast path of every get and put, inside the caller's RCU read section: in percpu mode,
    /// <c>this_cpu_add</c> on the CPU's stripe and true; in atomic mode, false. A simulated CPU is
    /// driven by one thread at a time and the stripe is only summed after a grace period, once no
    /// CPU is inside the read section that covers its add, so a plain read-modify-write is
    /// enough: no lock prefix, as in the kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryAddPercpu(int cpu, long nr)
    {
        var live = Volatile.Read(ref _live);
        if (live is null)
        {
            return false;
        }

        // Another CPU may run between seeing percpu mode and the add: that is the window the
        // switch's grace period exists for.
        _sched?.Reached(SchedulingPointKind.EntryStore, this);
        live[cpu].AddOwned(nr);
        _profile?.Count(cpu, ProfileOp.PercpuOp);
        return true;
    }

    // Profiling: an atomic-mode get or put writes the shared counter. Always true, to chain in conditions.
    private bool CountShared(int cpu)
    {
        _profile?.Count(cpu, ProfileOp.SharedAtomic);
        return true;
    }

    /// <summary>
    /// <c>percpu_ref_switch_to_atomic</c>: starts a switch to atomic mode, sticky until
    /// <see cref="SwitchToPercpu"/>. <paramref name="confirmSwitch"/> runs once every CPU sees the
    /// ref atomic (from the RCU callback, on whichever thread drives RCU), or at once if it
    /// already is. Waits (driving grace periods) only if another switch is still in flight.
    /// </summary>
    public void SwitchToAtomic(int cpu, Action<PercpuRef>? confirmSwitch = null) => SwitchToAtomic(cpu, confirmSwitch, sync: false);

    /// <summary>
    /// <c>percpu_ref_switch_to_atomic_sync</c>: switches to atomic mode and returns once the switch is
    /// complete, driving RCU grace periods until the switch's callback has run. With patch 02 the
    /// switch's own reference is dropped here, after the wait, so the count read right after this
    /// returns is stable. Sleeps: not under a spin lock, not in an RCU read section. The caller
    /// must make sure nobody switches the ref back to percpu meanwhile.
    /// </summary>
    public void SwitchToAtomicSync(int cpu)
    {
        // wait_event() always says it might sleep, whether or not it has to wait.
        _lockDep?.MightSleep(cpu, "percpu_ref_switch_to_atomic_sync");
        bool sync = !UnpatchedSyncSwitch;
        SwitchToAtomic(cpu, null, sync);
        while (Volatile.Read(ref _confirmSwitch) is not null)
        {
            DriveGracePeriod(cpu);
        }

        if (sync)
        {
            SwitchToAtomicPost();
        }
    }

    /// <summary>
    /// <c>percpu_ref_switch_to_percpu</c>: clears the sticky atomic state. A dying ref switches on its
    /// next <see cref="Reinit"/> or <see cref="Resurrect"/>. Waits if a switch to atomic is in flight.
    /// </summary>
    public void SwitchToPercpu(int cpu)
    {
        LockSwitchFor(cpu);
        if (_exited)
        {
            FailLocked(cpu, "percpu_ref switched after percpu_ref_exit");
        }

        _forceAtomic = false;
        SwitchModeAndUnlock(cpu, null, sync: false);
    }

    /// <summary><c>percpu_ref_kill</c>: drops the initial reference and switches to atomic mode for good.</summary>
    public void Kill(int cpu) => KillAndConfirm(cpu, null);

    /// <summary>
    /// <c>percpu_ref_kill_and_confirm</c>: marks the ref dead, starts the switch to atomic mode and
    /// drops the initial reference. <paramref name="confirmKill"/> runs once every CPU sees the ref
    /// dead; from then on <see cref="TryGetLive"/> fails everywhere. No grace period separates the
    /// kill from the release.
    /// </summary>
    public void KillAndConfirm(int cpu, Action<PercpuRef>? confirmKill)
    {
        LockSwitchFor(cpu);
        if ((_flags & FlagDead) != 0)
        {
            FailLocked(cpu, "percpu_ref_kill_and_confirm called more than once on one ref");
        }

        SetFlags(_flags | FlagDead);
        bool queue = SwitchMode(cpu, confirmKill, sync: false);
        PutShared(1); // the initial reference; the ref is dying, so this is an atomic-mode put
        UnlockSwitch(cpu);
        if (queue)
        {
            QueueSwitch();
        }
    }

    /// <summary><c>percpu_ref_reinit</c>: brings a dead ref whose count reached zero back to life with count 1.</summary>
    public void Reinit(int cpu)
    {
        if (!IsZero)
        {
            throw new PercpuRefException("percpu_ref_reinit of a ref whose count is not zero");
        }

        Resurrect(cpu);
    }

    /// <summary>
    /// <c>percpu_ref_resurrect</c>: undoes a kill (the ref must be dead and not exited), taking back
    /// the initial reference and returning to percpu mode unless atomic mode is forced.
    /// </summary>
    public void Resurrect(int cpu)
    {
        LockSwitchFor(cpu);
        if ((_flags & FlagDead) == 0 || _live is not null || _exited)
        {
            FailLocked(cpu, "percpu_ref_resurrect of a ref that is not dead, or was exited");
        }

        SetFlags(_flags & ~FlagDead);
        AddShared(1);
        SwitchModeAndUnlock(cpu, null, sync: false);
    }

    /// <summary>
    /// <c>percpu_ref_exit</c>: frees the percpu counters. The count stays readable through
    /// <see cref="IsZero"/>; any other use afterwards is a bug. Idempotent.
    /// </summary>
    /// <remarks>
    /// The kernel takes the switch lock to detach the count; the model detaches nothing, so it needs
    /// no lock, and a release callback that calls this from under <see cref="Kill"/> cannot deadlock.
    /// </remarks>
    public void Exit()
    {
        FreePercpu();
        Volatile.Write(ref _exited, true);
    }

    private void SwitchToAtomic(int cpu, Action<PercpuRef>? confirmSwitch, bool sync)
    {
        LockSwitchFor(cpu);
        if (_exited)
        {
            FailLocked(cpu, "percpu_ref switched after percpu_ref_exit");
        }

        _forceAtomic = true;
        SwitchModeAndUnlock(cpu, confirmSwitch, sync);
    }

    // The start of every mode change: its scheduling point, then the switch lock.
    private void LockSwitchFor(int cpu)
    {
        _sched?.Reached(SchedulingPointKind.RefSwitch, this);
        LockSwitch(cpu);
    }

    // A mode change the ref's state forbids: drop the switch lock and report the misuse.
    [DoesNotReturn]
    private void FailLocked(int cpu, string message)
    {
        UnlockSwitch(cpu);
        throw new PercpuRefException(message);
    }

    // The end of a mode change: switch as the flags now ask, drop the lock, and only then queue
    // the switch's RCU callback, so no callback ever runs under a switch lock.
    private void SwitchModeAndUnlock(int cpu, Action<PercpuRef>? confirmSwitch, bool sync)
    {
        bool queue = SwitchMode(cpu, confirmSwitch, sync);
        UnlockSwitch(cpu);
        if (queue)
        {
            QueueSwitch();
        }
    }

    // __percpu_ref_switch_mode, with the switch lock held. Returns true when it began a switch to
    // atomic whose RCU callback the caller must queue once it has dropped the lock.
    private bool SwitchMode(int cpu, Action<PercpuRef>? confirmSwitch, bool sync)
    {
        AssertSwitchLockHeld(cpu);
        // wait_event_lock_irq: wait for the previous switch with the lock dropped.
        while (Volatile.Read(ref _confirmSwitch) is not null)
        {
            UnlockSwitch(cpu);
            DriveGracePeriod(cpu);
            LockSwitch(cpu);
        }

        if (_forceAtomic || (_flags & FlagDead) != 0)
        {
            return BeginSwitchToAtomic(cpu, confirmSwitch, sync);
        }

        SwitchToPercpuLocked(cpu, sync);
        return false;
    }

    // __percpu_ref_switch_to_atomic, lock held.
    private bool BeginSwitchToAtomic(int cpu, Action<PercpuRef>? confirmSwitch, bool sync)
    {
        AssertSwitchLockHeld(cpu);
        if ((_flags & FlagAtomic) != 0)
        {
            confirmSwitch?.Invoke(this);
            if (sync)
            {
                AddShared(1); // SwitchToAtomicSync puts one after its wait either way
            }

            return false;
        }

        _sync = sync;
        SetFlags(_flags | FlagAtomic);

        // Non-null means "switch in flight"; the no-op stands in when the caller gave none.
        Volatile.Write(ref _confirmSwitch, confirmSwitch ?? s_noopConfirm);
        AddShared(1); // held until the switch is confirmed, so the count cannot hit zero mid-switch
        return true;
    }

    // __percpu_ref_switch_to_percpu, lock held.
    private void SwitchToPercpuLocked(int cpu, bool sync)
    {
        AssertSwitchLockHeld(cpu);
        var stripes = _stripes ?? throw new PercpuRefException("percpu_ref switched to percpu mode after its percpu counters were freed");
        if (sync)
        {
            AddShared(1);
        }

        if ((_flags & FlagAtomic) == 0)
        {
            return;
        }

        if (!_allowReinit)
        {
            throw new PercpuRefException("percpu_ref switched back to percpu mode without PERCPU_REF_ALLOW_REINIT");
        }

        // Bias first, so the shared counter cannot reach zero once the stripes take counts again.
        Interlocked.Add(ref _count, CountBias);

        // No CPU touches a stripe in atomic mode (the last switch to atomic waited them out), so
        // plain zeroing is safe; SetFlags publishes the zeros before the stripes go live.
        for (int i = 0; i < stripes.Length; i++)
        {
            stripes[i].Write(0);
        }

        SetFlags(_flags & ~FlagAtomic);
    }

    private void QueueSwitch()
    {
        if (SkipGracePeriodForTesting)
        {
            SwitchToAtomicRcu();
            return;
        }

        // The callback is made here, not kept in every ref from its init: a ref waits for at most
        // one switch at a time, and a live table's ref then costs no delegate (the kernel's
        // rcu_head is embedded in percpu_ref_data; a delegate is 64 bytes).
        _rcu.CallRcu(SwitchToAtomicRcu);
        AfterSwitchQueued?.Invoke();
    }

    // percpu_ref_switch_to_atomic_rcu: a grace period has passed since the ref went atomic, so no
    // CPU is still inside a get or put that saw it percpu.
    private void SwitchToAtomicRcu()
    {
        var stripes = _stripes ?? throw new PercpuRefException("percpu_ref counters freed while a switch to atomic was in flight");
        long sum = stripes.Sum();

        // Sum every stripe before touching the shared counter: a get on one CPU and its put on
        // another sit in different stripes, and folding them in one at a time could take the
        // counter through zero. The bias comes off in the same add.
        long now = Interlocked.Add(ref _count, sum - CountBias);
        if (now <= 0)
        {
            throw new PercpuRefException($"percpu_ref count {now} <= 0 after switching to atomic: a put without a get");
        }

        CallConfirm();
    }

    // percpu_ref_call_confirm_rcu, with patch 02: a sync switch leaves the put to its waiter.
    private void CallConfirm()
    {
        bool needPut = true;
        if (_sync)
        {
            _sync = false;
            needPut = false;
        }

        var confirm = Volatile.Read(ref _confirmSwitch)!;
        confirm(this);
        Volatile.Write(ref _confirmSwitch, null);
        AfterConfirmCleared?.Invoke();
        if (needPut)
        {
            SwitchToAtomicPost();
        }
    }

    // percpu_ref_switch_to_atomic_post (patch 02).
    private void SwitchToAtomicPost()
    {
        if (!_allowReinit)
        {
            FreePercpu();
        }

        PutShared(1); // the reference taken when the switch began
    }

    // __percpu_ref_exit: from now on the ref is atomic and dead for good.
    private void FreePercpu()
    {
        if (Volatile.Read(ref _stripes) is null)
        {
            return;
        }

        if (Volatile.Read(ref _confirmSwitch) is not null)
        {
            throw new PercpuRefException("percpu_ref exit while a switch to atomic is in flight");
        }

        Volatile.Write(ref _stripes, null);
        SetFlags(FlagAtomic | FlagDead);
    }

    private void SetFlags(int flags)
    {
        // Flags first: a reader that sees _live null must also see why (TryGetLive reads DEAD).
        Volatile.Write(ref _flags, flags);
        Volatile.Write(ref _live, flags == 0 ? _stripes : null);
    }

    private void AddShared(long nr)
    {
        ThrowIfExited();
        Interlocked.Add(ref _count, nr);
    }

    // atomic_long_add_unless(count, nr, 0).
    private bool AddSharedNotZero(long nr)
    {
        ThrowIfExited();
        long c = Volatile.Read(ref _count);
        while (c != 0)
        {
            long seen = Interlocked.CompareExchange(ref _count, c + nr, c);
            if (seen == c)
            {
                return true;
            }

            c = seen;
        }

        return false;
    }

    private void PutShared(long nr)
    {
        ThrowIfExited();

        // In percpu mode the bias keeps this from reaching zero; only an atomic-mode put can.
        if (Interlocked.Add(ref _count, -nr) == 0)
        {
            _release?.Invoke(this);
        }
    }

    private void DriveGracePeriod(int cpu)
    {
        _sched?.Reached(SchedulingPointKind.Wait, this);
        _rcu.SynchronizeRcu(cpu);
    }

    private void LockSwitch(int cpu)
    {
        if (_hooks is null)
        {
            RawSpinLock.Lock(ref _switchLock);
        }
        else
        {
            RawSpinLock.Lock(ref _switchLock, _hooks, cpu, LockClass.PercpuRefSwitchLock);
        }
    }

    private void UnlockSwitch(int cpu)
    {
        if (_hooks is null)
        {
            RawSpinLock.Unlock(ref _switchLock);
        }
        else
        {
            RawSpinLock.Unlock(ref _switchLock, _hooks, cpu, LockClass.PercpuRefSwitchLock);
        }
    }

    // lockdep_assert_held(&percpu_ref_switch_lock): free when lock checking is off.
    private void AssertSwitchLockHeld(int cpu) => _lockDep?.AssertHeld(cpu, LockClass.PercpuRefSwitchLock);

    private void ThrowIfExited()
    {
        if (Volatile.Read(ref _exited))
        {
            throw new PercpuRefException("percpu_ref used after percpu_ref_exit");
        }
    }
}

/// <summary>
/// A <see cref="PercpuRef"/> used against its protocol (a put without a get, a switch after exit, a
/// second kill) or found in a state it cannot reach: a bug in PtLab or in the design that uses it.
/// </summary>
/// <param name="message">What was done to the ref, in <c>lib/percpu-refcount.c</c>'s terms.</param>
public sealed class PercpuRefException(string message) : InvalidOperationException(message);
