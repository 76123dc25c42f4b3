namespace PtLab.Mm;

// mm_pgtables_bytes (include/linux/mm.h), read without summing per-CPU counters.
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>mm_pgtables_bytes</c>: the bytes of PTE, PMD and PUD tables now, as VmPTE reports them. A
    /// cheap read for callers that follow it after every event (a replay's peak).
    /// </summary>
    public long PgtablesBytes =>
        (Volatile.Read(ref _nrPtes) + Volatile.Read(ref _nrPmds) + Volatile.Read(ref _nrPuds)) * PtLab.Phys.PhysMemory.PageSize;
}
