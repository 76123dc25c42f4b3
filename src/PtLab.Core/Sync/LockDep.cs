using System.Diagnostics;
using System.Text;

namespace PtLab.Sync;

/// <summary>What <see cref="LockDep"/> does when it finds a violation.</summary>
public enum LockDepMode
{
    /// <summary>Throw a <see cref="LockDepException"/> at the offending call (the default: it is a PtLab bug).</summary>
    Throw,

    /// <summary>Record it in <see cref="LockDep.Violations"/> and carry on, for tests that inspect reports.</summary>
    Record,
}

/// <summary>The kinds of misuse the lock checker finds.</summary>
public enum LockDepViolationKind
{
    /// <summary>Two classes taken in both orders: a possible ABBA deadlock.</summary>
    Inversion,

    /// <summary>A class taken again while held, without a nesting subclass.</summary>
    RecursiveLocking,

    /// <summary>A lock taken while a leaf class is held.</summary>
    UnderLeaf,

    /// <summary>A sleeping operation while a spin lock is held.</summary>
    SleepUnderSpinLock,

    /// <summary>A sleeping operation inside an RCU read section.</summary>
    SleepInRcuReadSection,

    /// <summary>A release of a lock that this CPU does not hold.</summary>
    BadUnlock,

    /// <summary>A lock that should be held (or should not be) is not (or is).</summary>
    AssertionFailed,
}

/// <summary>One report from the lock checker.</summary>
/// <param name="Kind">What went wrong.</param>
/// <param name="Cpu">The simulated CPU that did it.</param>
/// <param name="Message">A description naming the locks involved.</param>
public sealed record LockDepViolation(LockDepViolationKind Kind, int Cpu, string Message);

/// <summary>Thrown by <see cref="LockDep"/> in <see cref="LockDepMode.Throw"/> mode.</summary>
public sealed class LockDepException : InvalidOperationException
{
    /// <summary>Creates the exception for <paramref name="violation"/>.</summary>
    public LockDepException(LockDepViolation violation)
        : base(violation.Message)
    {
        Violation = violation;
    }

    /// <summary>The report.</summary>
    public LockDepViolation Violation { get; }
}

/// <summary>A lock on a CPU's held-lock stack.</summary>
/// <param name="Class">Its class.</param>
/// <param name="Instance">Which lock of the class (for example the table's frame number); 0 when there is one.</param>
/// <param name="Subclass">The nesting subclass (<c>spin_lock_nested</c>), 0 normally.</param>
/// <param name="Trylock">Whether it was taken by a trylock, which cannot deadlock and so orders nothing.</param>
/// <param name="Read">Whether a reader-writer lock is held for read (shared) rather than for write.</param>
public readonly record struct HeldLock(LockClass Class, long Instance, int Subclass, bool Trylock, bool Read = false);

/// <summary>How a lock must be held for <see cref="LockDep.AssertHeld"/> to pass.</summary>
public enum LockHeldMode
{
    /// <summary>Held in any mode (<c>lockdep_assert_held</c>, <c>mmap_assert_locked</c>).</summary>
    Any,

    /// <summary>Held for read (<c>lockdep_assert_held_read</c>).</summary>
    Read,

    /// <summary>Held exclusively: a spin lock, or a reader-writer lock for write (<c>lockdep_assert_held_write</c>, <c>mmap_assert_write_locked</c>).</summary>
    Write,
}

/// <summary>
/// A small lockdep: one held-lock stack per simulated CPU, fed by the lock sites, and a graph of
/// "taken while holding" edges between lock classes shared by all CPUs. It reports lock-order
/// inversions, recursion, locks taken under a leaf, and sleeping (a sleeping lock,
/// <c>synchronize_rcu</c>, a synchronous percpu_ref switch) under a spin lock or in an RCU read
/// section. The kernel's documented order is declared up front: <c>mmap_lock</c> → pmd lock →
/// PTE lock, with <c>page_table_lock</c> a leaf.
/// </summary>
/// <remarks>
/// A CPU's stack is touched only by the thread running that CPU, as in the kernel where the held
/// locks live in <c>current</c>. The class graph is shared and guarded by a lock; the checker is a
/// debugging aid and is not on any measured path.
/// </remarks>
public sealed class LockDep
{
    private const int StackFramesKept = 8;

    private readonly CpuState[] _cpus;
    private readonly Lock _graphLock = new();

    // Edge A -> B: B was taken while A was held. The value says where it was first seen.
    private readonly Dictionary<LockClass, Dictionary<LockClass, string>> _after = [];
    private readonly List<LockDepViolation> _violations = [];

    /// <summary>Creates a checker for <paramref name="cpus"/> simulated CPUs.</summary>
    public LockDep(int cpus, LockDepMode mode = LockDepMode.Throw)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        Mode = mode;
        _cpus = new CpuState[cpus];
        for (int i = 0; i < cpus; i++)
        {
            _cpus[i] = new CpuState();
        }

        DeclareOrder(LockClass.MmapLock, LockClass.PmdLock);
        DeclareOrder(LockClass.MmapLock, LockClass.PteLock);
        DeclareOrder(LockClass.PmdLock, LockClass.PteLock);
        DeclareOrder(LockClass.MmapLock, LockClass.PageTableLock);
        DeclareOrder(LockClass.PmdLock, LockClass.PageTableLock);
        DeclareOrder(LockClass.PteLock, LockClass.PageTableLock);
    }

    /// <summary>What happens on a violation.</summary>
    public LockDepMode Mode { get; }

    /// <summary>Violations found so far (all of them, also in <see cref="LockDepMode.Throw"/> mode).</summary>
    public IReadOnlyList<LockDepViolation> Violations
    {
        get
        {
            lock (_graphLock)
            {
                return [.. _violations];
            }
        }
    }

    /// <summary>Declares that <paramref name="after"/> may be taken while <paramref name="before"/> is held.</summary>
    public void DeclareOrder(LockClass before, LockClass after)
    {
        lock (_graphLock)
        {
            if (PathExists(after, before))
            {
                throw new ArgumentException($"declaring {before} -> {after} contradicts the declared order");
            }

            AddEdge(before, after, "declared");
        }
    }

    /// <summary>
    /// Called just before a CPU takes a lock (<c>lock_acquire</c>): checks it against what the CPU
    /// holds, then pushes it on the CPU's stack.
    /// </summary>
    /// <param name="cpu">The simulated CPU.</param>
    /// <param name="lockClass">The lock's class.</param>
    /// <param name="instance">Which lock of the class, to match the release.</param>
    /// <param name="subclass">Nesting subclass; a class may be nested under itself only with a different one.</param>
    /// <param name="read">Whether a reader-writer lock is taken for read.</param>
    public void Acquire(int cpu, LockClass lockClass, long instance = 0, int subclass = 0, bool read = false)
    {
        var held = _cpus[cpu].Held;
        if (lockClass.Kind == LockKind.Sleeping)
        {
            MightSleep(cpu, $"taking {lockClass}");
        }

        foreach (var h in held)
        {
            if (h.Class.IsLeaf)
            {
                Report(LockDepViolationKind.UnderLeaf, cpu, $"CPU {cpu} takes {lockClass} while holding {h.Class}, which is a leaf lock. Held: {Describe(held)}");
            }
            else if (ReferenceEquals(h.Class, lockClass))
            {
                if (h.Subclass == subclass)
                {
                    Report(LockDepViolationKind.RecursiveLocking, cpu, $"possible recursive locking on CPU {cpu}: takes {lockClass} (instance {instance}) while already holding {lockClass} (instance {h.Instance}) without a nesting subclass. Held: {Describe(held)}");
                }
            }
            else
            {
                CheckAndAddEdge(cpu, h.Class, lockClass, held);
            }
        }

        held.Add(new HeldLock(lockClass, instance, subclass, Trylock: false, read));
    }

    /// <summary>
    /// Called after a trylock succeeded: pushes the lock without ordering checks, because a trylock
    /// cannot wait and so cannot close a deadlock cycle (the pmd-lock trylock under the PTE lock in
    /// upstream <c>pt_reclaim</c> relies on this).
    /// </summary>
    public void TryAcquired(int cpu, LockClass lockClass, long instance = 0, bool read = false) =>
        _cpus[cpu].Held.Add(new HeldLock(lockClass, instance, 0, Trylock: true, read));

    /// <summary>Called just before a CPU releases a lock (<c>lock_release</c>). Release order need not be LIFO.</summary>
    public void Release(int cpu, LockClass lockClass, long instance = 0)
    {
        var held = _cpus[cpu].Held;
        for (int i = held.Count - 1; i >= 0; i--)
        {
            if (ReferenceEquals(held[i].Class, lockClass) && held[i].Instance == instance)
            {
                held.RemoveAt(i);
                return;
            }
        }

        Report(LockDepViolationKind.BadUnlock, cpu, $"CPU {cpu} releases {lockClass} (instance {instance}), which it does not hold. Held: {Describe(held)}");
    }

    /// <summary>Records that a CPU entered an RCU read section (lockdep's <c>rcu_lock_map</c>).</summary>
    public void RcuReadLock(int cpu) => _cpus[cpu].RcuDepth++;

    /// <summary>Records that a CPU left an RCU read section.</summary>
    public void RcuReadUnlock(int cpu) => _cpus[cpu].RcuDepth--;

    /// <summary>
    /// <c>might_sleep</c>: reports <paramref name="operation"/> if the CPU holds a spin lock or is
    /// inside an RCU read section.
    /// </summary>
    public void MightSleep(int cpu, string operation)
    {
        var state = _cpus[cpu];
        foreach (var h in state.Held)
        {
            if (h.Class.Kind == LockKind.Spin)
            {
                Report(LockDepViolationKind.SleepUnderSpinLock, cpu, $"sleeping function called from invalid context: {operation} on CPU {cpu} while holding spin lock {h.Class}. Held: {Describe(state.Held)}");
                return;
            }
        }

        if (state.RcuDepth > 0)
        {
            Report(LockDepViolationKind.SleepInRcuReadSection, cpu, $"sleeping function called from invalid context: {operation} on CPU {cpu} inside an RCU read section (depth {state.RcuDepth})");
        }
    }

    /// <summary>
    /// <c>lockdep_assert_held</c> and its read and write forms: reports unless the CPU holds a lock
    /// of <paramref name="lockClass"/> (the one of <paramref name="instance"/> when given) in
    /// <paramref name="mode"/>. Callers reach it through the hooks, so it costs a null test when
    /// lock checking is off.
    /// </summary>
    public void AssertHeld(int cpu, LockClass lockClass, long? instance = null, LockHeldMode mode = LockHeldMode.Any)
    {
        foreach (var h in _cpus[cpu].Held)
        {
            if (ReferenceEquals(h.Class, lockClass) && (instance is not { } i || h.Instance == i) &&
                (mode == LockHeldMode.Any || (mode == LockHeldMode.Read) == h.Read))
            {
                return;
            }
        }

        string which = instance is { } n and not 0 ? $"{lockClass}#{n}" : lockClass.Name;
        string how = mode switch { LockHeldMode.Read => " for read", LockHeldMode.Write => " for write", _ => "" };
        Report(LockDepViolationKind.AssertionFailed, cpu, $"CPU {cpu} should hold {which}{how} but holds {Describe(_cpus[cpu].Held)}");
    }

    /// <summary>Reports if the CPU holds any lock or is in an RCU read section (checked where a syscall or fault returns).</summary>
    public void AssertNothingHeld(int cpu, string where)
    {
        var state = _cpus[cpu];
        if (state.Held.Count > 0 || state.RcuDepth != 0)
        {
            Report(LockDepViolationKind.AssertionFailed, cpu, $"CPU {cpu} at {where} still holds {Describe(state.Held)} with RCU depth {state.RcuDepth}");
        }
    }

    /// <summary>A snapshot of what a CPU holds, outermost first.</summary>
    public IReadOnlyList<HeldLock> Held(int cpu) => [.. _cpus[cpu].Held];

    /// <summary>A CPU's RCU read-section depth as the checker saw it.</summary>
    public int RcuDepth(int cpu) => _cpus[cpu].RcuDepth;

    private void CheckAndAddEdge(int cpu, LockClass held, LockClass taken, List<HeldLock> stack)
    {
        string? chain = null;
        string? firstSeen = null;
        lock (_graphLock)
        {
            if (_after.TryGetValue(held, out var next) && next.ContainsKey(taken))
            {
                return; // known edge; it was checked for a cycle when it was added
            }

            var path = FindPath(taken, held);
            if (path is null)
            {
                AddEdge(held, taken, $"CPU {cpu}, at:{Environment.NewLine}{Where()}");
                return;
            }

            chain = string.Join(" -> ", path);
            firstSeen = _after[path[0]][path[1]];
        }

        Report(LockDepViolationKind.Inversion, cpu, $"possible circular locking on CPU {cpu}: takes {taken} while holding {held}, but {chain} was established before ({firstSeen}). Held: {Describe(stack)}");
    }

    private void AddEdge(LockClass from, LockClass to, string where)
    {
        if (!_after.TryGetValue(from, out var next))
        {
            _after[from] = next = [];
        }

        next.TryAdd(to, where);
    }

    private bool PathExists(LockClass from, LockClass to) => FindPath(from, to) is not null;

    // Breadth-first search over class edges; returns the classes along a path, or null.
    private List<LockClass>? FindPath(LockClass from, LockClass to)
    {
        var parent = new Dictionary<LockClass, LockClass?> { [from] = null };
        var queue = new Queue<LockClass>();
        queue.Enqueue(from);
        while (queue.Count > 0)
        {
            var c = queue.Dequeue();
            if (ReferenceEquals(c, to))
            {
                var path = new List<LockClass>();
                for (LockClass? p = c; p is not null; p = parent[p])
                {
                    path.Add(p);
                }

                path.Reverse();
                return path;
            }

            if (_after.TryGetValue(c, out var next))
            {
                foreach (var n in next.Keys)
                {
                    if (parent.TryAdd(n, c))
                    {
                        queue.Enqueue(n);
                    }
                }
            }
        }

        return null;
    }

    private void Report(LockDepViolationKind kind, int cpu, string message)
    {
        var v = new LockDepViolation(kind, cpu, message);
        lock (_graphLock)
        {
            _violations.Add(v);
        }

        if (Mode == LockDepMode.Throw)
        {
            throw new LockDepException(v);
        }
    }

    private static string Describe(List<HeldLock> held)
    {
        if (held.Count == 0)
        {
            return "nothing";
        }

        var sb = new StringBuilder();
        foreach (var h in held)
        {
            if (sb.Length > 0)
            {
                sb.Append(", ");
            }

            sb.Append(h.Class.Name);
            if (h.Instance != 0)
            {
                sb.Append('#').Append(h.Instance);
            }

            if (h.Read)
            {
                sb.Append(" (read)");
            }

            if (h.Trylock)
            {
                sb.Append(" (trylock)");
            }
        }

        return sb.ToString();
    }

    private static string Where()
    {
        var frames = new StackTrace(3, fNeedFileInfo: false).GetFrames();
        var sb = new StringBuilder();
        for (int i = 0; i < frames.Length && i < StackFramesKept; i++)
        {
            var m = frames[i].GetMethod();
            sb.Append("  ").Append(m?.DeclaringType?.Name).Append('.').Append(m?.Name).AppendLine();
        }

        return sb.ToString();
    }

    private sealed class CpuState
    {
        public readonly List<HeldLock> Held = new(8);
        public int RcuDepth;
    }
}
