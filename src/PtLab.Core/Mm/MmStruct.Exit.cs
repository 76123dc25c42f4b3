namespace PtLab.Mm;

// exit_mmap (mm/mmap.c), reached from exit_mm when the last user of the address space goes.
public sealed partial class MmStruct
{
    /// <summary>Whether <c>exit_mmap</c> tore the address space down (read under <c>mmap_lock</c>).</summary>
    internal bool IsDead => _dead;

    /// <summary>
    /// <c>exit_mmap</c>: unmaps everything, frees every table and the PGD, and waits for the
    /// deferred frees, so that no frame of this address space stays in use.
    /// </summary>
    public void Exit(Cpu cpu)
    {
        MmapLock.DownWrite(cpu.Id);
        try
        {
            if (_dead)
            {
                return;
            }

            var all = _vmas.Snapshot();
            _vmas.Clear();
            _lockedPages = 0;

            var tlb = new MmuGather(this, cpu);
            foreach (var v in all)
            {
                UnmapPageRange(cpu, tlb, v, v.Start, v.End, ZapReason.Unmap);
            }

            RmapLock.DownWrite(cpu.Id);
            UnlinkRmap(all);
            FreePgtables(tlb, all, 0, 0);
            _dead = true;
            RmapLock.UpWrite(cpu.Id);
            tlb.Finish();
            _committedPages = 0;
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        foreach (var c in Machine.Cpus)
        {
            if (ReferenceEquals(c.Mm, this))
            {
                c.SwitchMm(null, cpu);
            }
        }

        Rcu.Barrier(cpu.Id);
        Phys.FreeTable(PgdPfn);
        Machine.Forget(this);
    }
}
