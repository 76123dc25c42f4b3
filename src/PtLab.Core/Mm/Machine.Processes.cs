namespace PtLab.Mm;

// Processes, threads and files on one machine (kernel/fork.c, fs/exec.c, kernel/exit.c).
public sealed partial class Machine
{
    private readonly Lock _taskLock = new();
    private readonly List<SimProcess> _processes = [];
    private int[]? _threadsOnCpu;
    private int _nextPid = 1;
    private FileTable? _files;

    /// <summary>The files of this machine: regular files by identity, and shmem files.</summary>
    public FileTable Files => LazyInitializer.EnsureInitialized(ref _files, () => new FileTable(this));

    /// <summary>Processes alive now.</summary>
    public IReadOnlyList<SimProcess> Processes
    {
        get
        {
            lock (_taskLock)
            {
                return [.. _processes];
            }
        }
    }

    /// <summary>
    /// A new process with an empty address space and one thread, as exec leaves a process before
    /// the program's own mappings (the replay places those). The thread's CPU is switched to it.
    /// </summary>
    public SimProcess CreateProcess()
    {
        var p = NewProcess(NewAddressSpace(), parent: null);
        CreateThread(p).Activate();
        return p;
    }

    /// <summary><c>clone(CLONE_VM | CLONE_THREAD)</c>: a new thread of <paramref name="process"/>, on the least busy CPU.</summary>
    public SimThread CreateThread(SimProcess process)
    {
        lock (_taskLock)
        {
            if (process.Exited)
            {
                throw new InvalidOperationException($"process {process.Pid} has exited");
            }

            var counts = _threadsOnCpu ??= new int[_cpus.Length];
            int best = 0;
            for (int i = 1; i < counts.Length; i++)
            {
                if (counts[i] < counts[best])
                {
                    best = i;
                }
            }

            counts[best]++;
            var t = new SimThread(process, _nextPid++, _cpus[best]);
            process.AddThread(t);
            return t;
        }
    }

    /// <summary>
    /// <c>fork()</c> by <paramref name="parent"/>: a new process whose address space is a copy of the
    /// parent's (<see cref="MmStruct.Fork"/>), with one thread. Returns null when the copy ran out of
    /// memory (fork's ENOMEM; nothing is left behind).
    /// </summary>
    public SimProcess? Fork(SimThread parent)
    {
        var cpu = parent.Activate();
        var mm = parent.Mm.Fork(cpu);
        if (mm is null)
        {
            return null;
        }

        var child = NewProcess(mm, parent.Process);
        CreateThread(child);
        return child;
    }

    /// <summary>
    /// <c>vfork()</c>, or <c>clone(CLONE_VM)</c> without <c>CLONE_THREAD</c>: a new process sharing
    /// the parent's address space (<c>mm_users</c> + 1) until it execs or exits.
    /// </summary>
    public SimProcess CloneVm(SimThread parent)
    {
        var mm = parent.Mm;
        mm.Mmget();
        var child = NewProcess(mm, parent.Process);
        CreateThread(child);
        return child;
    }

    /// <summary>
    /// <c>execve</c> by <paramref name="thread"/>: the process gets a new, empty address space
    /// (<c>exec_mmap</c>), its other threads exit (<c>de_thread</c>), and the old address space is
    /// released (<c>mmput</c>: torn down when no other process shares it).
    /// </summary>
    public void Exec(SimThread thread)
    {
        var p = thread.Process;
        foreach (var other in p.Threads)
        {
            if (!ReferenceEquals(other, thread))
            {
                ReleaseThread(other);
            }
        }

        var old = p.Mm;
        var fresh = NewAddressSpace(old.MmapBase);
        p.Mm = fresh;
        var cpu = thread.Activate();
        old.Mmput(cpu);
    }

    /// <summary>
    /// A thread exits (<c>do_exit</c>). The last thread of a process releases the address space
    /// (<c>exit_mm</c> → <c>mmput</c>, which runs <c>exit_mmap</c> when no other process shares it).
    /// </summary>
    public void ExitThread(SimThread thread)
    {
        if (thread.Exited)
        {
            return;
        }

        var p = thread.Process;
        var cpu = thread.Cpu;
        bool last = ReleaseThread(thread);
        if (!last)
        {
            return;
        }

        p.Exited = true;
        lock (_taskLock)
        {
            _processes.Remove(p);
        }

        p.Mm.Mmput(cpu);
    }

    /// <summary>Every thread of <paramref name="process"/> exits (<c>exit_group</c>).</summary>
    public void ExitProcess(SimProcess process)
    {
        foreach (var t in process.Threads)
        {
            ExitThread(t);
        }
    }

    private SimProcess NewProcess(MmStruct mm, SimProcess? parent)
    {
        lock (_taskLock)
        {
            var p = new SimProcess(this, _nextPid++, mm, parent);
            _processes.Add(p);
            return p;
        }
    }

    /// <summary>Takes the thread off its CPU's count; returns whether it was its process's last.</summary>
    private bool ReleaseThread(SimThread thread)
    {
        lock (_taskLock)
        {
            if (thread.Exited)
            {
                return false;
            }

            thread.Exited = true;
            _threadsOnCpu![thread.Cpu.Id]--;
        }

        return thread.Process.RemoveThread(thread);
    }
}
