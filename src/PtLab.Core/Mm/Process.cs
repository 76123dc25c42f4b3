namespace PtLab.Mm;

/// <summary>
/// A simulated process (a thread group): its address space and its threads. Created by
/// <see cref="Machine.CreateProcess"/>, <see cref="Machine.Fork"/> and <see cref="Machine.CloneVm"/>;
/// <see cref="Machine.Exec"/> gives it a new address space.
/// </summary>
public sealed class SimProcess
{
    private readonly List<SimThread> _threads = [];
    private MmStruct _mm;

    internal SimProcess(Machine machine, int pid, MmStruct mm, SimProcess? parent)
    {
        Machine = machine;
        Pid = pid;
        _mm = mm;
        Parent = parent;
    }

    /// <summary>The machine.</summary>
    public Machine Machine { get; }

    /// <summary>The model's process id (its own numbering, not the host's).</summary>
    public int Pid { get; }

    /// <summary>The process that forked or cloned this one, if any.</summary>
    public SimProcess? Parent { get; }

    /// <summary>The address space (<c>current-&gt;mm</c>); changes on exec.</summary>
    public MmStruct Mm
    {
        get => Volatile.Read(ref _mm);
        internal set => Volatile.Write(ref _mm, value);
    }

    /// <summary>Threads alive now.</summary>
    public IReadOnlyList<SimThread> Threads
    {
        get
        {
            lock (_threads)
            {
                return [.. _threads];
            }
        }
    }

    /// <summary>Whether every thread has exited.</summary>
    public bool Exited { get; internal set; }

    /// <summary>The first thread still alive (the main thread until it exits).</summary>
    public SimThread MainThread => Threads.FirstOrDefault() ?? throw new InvalidOperationException($"process {Pid} has no thread left");

    internal void AddThread(SimThread t)
    {
        lock (_threads)
        {
            _threads.Add(t);
        }
    }

    /// <summary>Removes a thread; returns whether it was the last.</summary>
    internal bool RemoveThread(SimThread t)
    {
        lock (_threads)
        {
            _threads.Remove(t);
            return _threads.Count == 0;
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"process {Pid} ({Threads.Count} threads)";
}

/// <summary>
/// A simulated thread: it runs on one simulated CPU of the machine, on its process's address space.
/// </summary>
/// <remarks>
/// The machine's CPU count is fixed when it is built. A new thread gets the CPU running the fewest
/// live threads (the lowest number on a tie), so with at least as many CPUs as live threads every
/// thread has a CPU of its own; beyond that, threads share CPUs. A thread's accesses go through
/// <see cref="Activate"/>, which switches its CPU to the thread's address space when another one is
/// current there (<c>switch_mm</c>, which flushes that CPU's TLB). Threads sharing a CPU must not be
/// driven from two host threads at once, as a CPU runs one thread at a time.
/// </remarks>
public sealed class SimThread
{
    internal SimThread(SimProcess process, int tid, Cpu cpu)
    {
        Process = process;
        Tid = tid;
        Cpu = cpu;
    }

    /// <summary>The process.</summary>
    public SimProcess Process { get; }

    /// <summary>The model's thread id.</summary>
    public int Tid { get; }

    /// <summary>The simulated CPU the thread runs on.</summary>
    public Cpu Cpu { get; }

    /// <summary>The address space the thread runs on.</summary>
    public MmStruct Mm => Process.Mm;

    /// <summary>Whether the thread has exited.</summary>
    public bool Exited { get; internal set; }

    /// <summary>Makes this thread's address space current on its CPU (a context switch) and returns the CPU.</summary>
    public Cpu Activate()
    {
        if (Exited)
        {
            throw new InvalidOperationException($"thread {Tid} of process {Process.Pid} has exited");
        }

        var mm = Mm;
        if (!ReferenceEquals(Cpu.Mm, mm))
        {
            Cpu.SwitchMm(mm);
        }

        return Cpu;
    }

    /// <inheritdoc/>
    public override string ToString() => $"thread {Tid} of process {Process.Pid} on CPU {Cpu.Id}";
}
