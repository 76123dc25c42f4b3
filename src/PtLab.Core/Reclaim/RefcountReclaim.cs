using PtLab.Mm;
using PtLab.Paging;
using PtLab.Phys;
using PtLab.Sync;

namespace PtLab.Reclaim;

/// <summary>
/// A design that counts the references on each PTE table (its entries and its visitors), so the
/// invariant checks can compare the count with the entries.
/// </summary>
public interface IRefcountedTables
{
    /// <summary>
    /// The table's reference count as a number, when the design can tell it exactly now (atomic
    /// mode); null otherwise.
    /// </summary>
    long? ExactCount(MmStruct mm, long pteTable);
}

/// <summary>
/// What the two refcount designs share: every non-none entry and every visitor holds a reference
/// on its PTE table; a visitor maps a table only through a successful try-get, and treats a
/// failure like <c>pmd_none</c>. Subclasses supply the reference itself and when to free.
/// </summary>
public abstract class RefcountReclaim : NoReclaim, IRefcountedTables
{
    /// <summary>
    /// <c>pte_tryget</c> on the table's reference; false when it may be going away.
    /// <paramref name="state"/> is the table's design state, read with its generation under RCU.
    /// </summary>
    protected abstract bool TryGet(MmStruct mm, Cpu cpu, TableRef pteTable, object? state);

    /// <summary>Takes a reference the caller knows to be safe (an entry set under the table's lock).</summary>
    protected abstract void Get(MmStruct mm, Cpu cpu, TableRef pteTable);

    /// <summary>Drops a reference (<c>__pte_put</c>).</summary>
    protected abstract void Put(MmStruct mm, Cpu cpu, TableRef pteTable);

    /// <inheritdoc/>
    public override bool TracksEntries => true;

    /// <inheritdoc/>
    public abstract long? ExactCount(MmStruct mm, long pteTable);

    /// <summary>
    /// <c>pte_tryget</c> + <c>pte_offset_map</c>: under RCU, read the pmd entry and try to take a
    /// reference on the table it points to. A failed try-get calls back into the design, as the
    /// seed calls <c>free_user_pte</c> there so that a racing free is never missed.
    /// </summary>
    public override TableRef PteOffsetMap(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex)
    {
        if (SkipTryGetForTesting)
        {
            return base.PteOffsetMap(mm, cpu, pmdTable, pmdIndex);
        }

        mm.Rcu.ReadLock(cpu.Id);
        // Through the CPU's table-entry cache, as the plain pte_offset_map (see TableStore.LayoutEpoch).
        ulong pmd = mm.Phys.ReadCachedEntry(cpu.TableCache, 2, pmdTable, pmdIndex);
        if (Entry.IsNone(pmd) || Entry.IsHuge(pmd))
        {
            mm.Rcu.ReadUnlock(cpu.Id);
            return TableRef.None;
        }

        // Under RCU the table cannot be freed, so its descriptor and reference are still valid.
        var pteTable = mm.Phys.Ref(Entry.Pfn(pmd), out object? state);
        bool got = TryGet(mm, cpu, pteTable, state);
        mm.Rcu.ReadUnlock(cpu.Id);
        if (!got)
        {
            OnTryGetFailed(mm, cpu, pmdTable, pmdIndex, pteTable);
            return TableRef.None;
        }

        return pteTable;
    }

    /// <summary><c>pte_unmap</c>: drops the visitor's reference.</summary>
    public override void PteUnmap(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        if (!SkipTryGetForTesting)
        {
            Put(mm, cpu, pteTable);
        }
    }

    /// <summary><c>track_pte_set</c>: none to non-none takes a reference.</summary>
    public override void TrackPteSet(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry)
    {
        if (Entry.IsNone(oldEntry) && !Entry.IsNone(newEntry))
        {
            Get(mm, cpu, pteTable);
        }
    }

    /// <summary>
    /// <c>track_pte_set</c> at the end of a fault that installs an entry and ends its visit at
    /// once with <c>pte_unmap_unlock</c>: a none entry that becomes non-none keeps the visitor's
    /// reference as its own, instead of a get here and the visitor's put after the unlock.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Why nobody can tell. The seed's sequence is get (for the entry), store, unlock, put (for
    /// the visitor); this one leaves the get and the put out. Between them the two counts differ
    /// by one, and both are at least one: the visitor's reference, taken by a try-get that
    /// succeeded, is held until its put in the one and becomes the entry's in the other. So a
    /// try-get, a put or a zero test (<c>try_to_free_user_pte</c>, reclaim's lazy-free check, the
    /// <c>atomic</c> design's put that claims the table) that runs meanwhile finds zero in both or
    /// in neither, and once the unlock is done the counts are equal. In percpu mode both left-out
    /// operations were on this CPU's stripe and cancelled; in atomic mode both were on the shared
    /// counter and cancelled.
    /// </para>
    /// <para>
    /// Why the visitor is still safe. After the store it holds no reference of its own, but the
    /// table is held by the new entry's, and only a clear of that entry drops it. Every clear of a
    /// PTE runs under its table's PTE lock, which the visitor holds until its unlock, or under
    /// <c>mmap_lock</c> for write, which its <c>mmap_lock</c> for read excludes. The unlock is the
    /// visit's last touch of the table. So the count cannot reach zero, nor the table be unhooked,
    /// while the visitor still uses it.
    /// </para>
    /// <para>
    /// Under the <see cref="SkipTryGetForTesting"/> mutation visitors hold no reference, so there is
    /// nothing to hand over and the plain <see cref="TrackPteSet"/> runs.
    /// </para>
    /// </remarks>
    public override bool TrackPteSetHandOver(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry, ulong newEntry)
    {
        if (SkipTryGetForTesting || !Entry.IsNone(oldEntry) || Entry.IsNone(newEntry))
        {
            return base.TrackPteSetHandOver(mm, cpu, pteTable, oldEntry, newEntry);
        }

        return true;
    }

    /// <summary><c>track_pte_clear</c>: non-none to none drops one.</summary>
    public override void TrackPteClear(MmStruct mm, Cpu cpu, TableRef pteTable, ulong oldEntry)
    {
        if (!Entry.IsNone(oldEntry) && !SkipTrackClearForTesting)
        {
            Put(mm, cpu, pteTable);
        }
    }

    /// <summary>
    /// Test-only mutation: visitors map tables without <c>pte_tryget</c>, as the kernel did before
    /// the seed. The use-after-free detector must catch what follows.
    /// </summary>
    internal bool SkipTryGetForTesting
    {
        get => _skipTryGet;
        set
        {
            _skipTryGet = value;
            SkipTryGetChanged(value);
        }
    }

    private bool _skipTryGet;

    /// <summary>Tells a design that keeps a fast path outside its hooks that <see cref="SkipTryGetForTesting"/> changed.</summary>
    private protected virtual void SkipTryGetChanged(bool skip)
    {
    }

    /// <summary>Test-only mutation: one clear path forgets <c>track_pte_clear</c>.</summary>
    internal bool SkipTrackClearForTesting { get; set; }

    /// <summary>Test-only mutation: <c>free_user_pte</c> frees the table at once instead of after a grace period.</summary>
    internal bool SkipRcuDeferralForTesting { get; set; }

    /// <summary>Called after a failed try-get, outside RCU.</summary>
    protected virtual void OnTryGetFailed(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable)
    {
    }

    /// <summary>
    /// <c>free_user_pte</c>, for the designs that free tables outside munmap: under the pmd lock,
    /// if the pmd entry still points at <paramref name="pteTable"/>, clear it, flush the TLB for its
    /// 2 MiB, and free the table after a grace period. Returns false when the entry changed.
    /// </summary>
    /// <remarks>
    /// The seed rereads <c>*pmd</c> under the lock and frees whatever table it finds there. Two
    /// racing freers of one zero-count table could then free a table a fault installed in between;
    /// checking that the entry still holds the table the caller saw at zero closes that window.
    /// </remarks>
    protected bool FreeUserPte(MmStruct mm, Cpu cpu, long pmdTable, int pmdIndex, TableRef pteTable)
    {
        ulong start = mm.PmdBase(pmdTable, pmdIndex);
        mm.PmdLock(cpu, pmdTable);
        ulong pmd = Volatile.Read(ref mm.Phys.Table(pmdTable)[pmdIndex]);
        if (Entry.IsNone(pmd) || Entry.IsHuge(pmd) || Entry.Pfn(pmd) != pteTable.Pfn || !mm.Phys.IsLive(pteTable))
        {
            mm.PmdUnlock(cpu, pmdTable);
            return false;
        }

        var entries = mm.Phys.Table(pteTable);
        int live = entries.FirstNotNone();
        if (live >= 0)
        {
            ulong e = Volatile.Read(ref entries[live]);
            mm.PmdUnlock(cpu, pmdTable);
            // pte_free_debug: at zero no entry may remain; one that does was set by a visitor
            // that held no reference on the table, so it is writing into a table being freed.
            throw new UseAfterFreeException(
                $"pte_free_debug: freeing {pteTable} at 0x{start:x} with a live entry {e:x}", Environment.StackTrace, null);
        }

        mm.PmdClear(pmdTable, pmdIndex);
        if (!mm.SkipTableFlushForTesting)
        {
            mm.FlushTlbRange(cpu, start, start + Geometry.PmdSize);
        }

        mm.PmdUnlock(cpu, pmdTable);
        mm.DecTables(1);
        var phys = mm.Phys;
        if (SkipRcuDeferralForTesting)
        {
            PteTableDtor(mm, pteTable.Pfn);
            phys.FreeTable(pteTable.Pfn);
            return true;
        }

        mm.Rcu.CallRcu(() =>
        {
            PteTableDtor(mm, pteTable.Pfn);
            phys.FreeTable(pteTable.Pfn);
        });
        return true;
    }

    /// <summary>Locates the pmd entry of a PTE table from its descriptor (pt_mm / pt_index).</summary>
    protected static bool TryLocatePmd(MmStruct mm, TableRef pteTable, out long pmdTable, out int pmdIndex)
    {
        ulong addr = mm.Phys.Desc(pteTable.Pfn).RmapAddress;
        pmdTable = mm.PmdTableOf(addr);
        pmdIndex = Geometry.Index(addr, 2);
        return pmdTable >= 0;
    }
}

/// <summary>
/// The <c>atomic</c> design (the November 2021 series "Free user PTE page table pages"): an
/// atomic count per PTE table of its non-none entries plus its visitors, and the table is freed
/// as soon as a put drops the last reference. That put claims the table in the same atomic step
/// (1 to a dead mark), so exactly one CPU frees it, and from then on try-get fails.
/// </summary>
public sealed class AtomicReclaim : RefcountReclaim
{
    private const int Dead = int.MinValue;

    /// <inheritdoc/>
    public override string Name => "atomic";

    /// <inheritdoc/>
    public override void PteTableCtor(MmStruct mm, Cpu cpu, long pteTable) => mm.Phys.SetTableState(pteTable, new PteRefcount());

    /// <inheritdoc/>
    public override long? ExactCount(MmStruct mm, long pteTable) => Volatile.Read(ref CountOf(mm, pteTable));

    /// <inheritdoc/>
    protected override bool TryGet(MmStruct mm, Cpu cpu, TableRef pteTable, object? state)
    {
        ref int c = ref CountOf(state, pteTable.Pfn);
        mm.Machine.Sync.Profile?.Count(cpu.Id, ProfileOp.SharedAtomic);
        while (true)
        {
            int v = Volatile.Read(ref c);
            if (v < 0)
            {
                return false; // claimed by a freer
            }

            // A fresh table starts at zero and is live: only a freer's claim (Dead) stops a get.
            if (Interlocked.CompareExchange(ref c, v + 1, v) == v)
            {
                return true;
            }
        }
    }

    /// <inheritdoc/>
    protected override void Get(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        if (!mm.Phys.IsLive(pteTable))
        {
            mm.Phys.Table(pteTable); // reports the use after free
        }

        mm.Machine.Sync.Profile?.Count(cpu.Id, ProfileOp.SharedAtomic);
        if (Interlocked.Increment(ref CountOf(mm, pteTable.Pfn)) <= 0)
        {
            // The table was claimed for freeing: whoever is setting an entry in it holds no reference.
            throw new UseAfterFreeException($"track_pte_set on {pteTable}, which a freer already claimed at zero", Environment.StackTrace, null);
        }
    }

    /// <inheritdoc/>
    protected override void Put(MmStruct mm, Cpu cpu, TableRef pteTable)
    {
        if (!mm.Phys.IsLive(pteTable))
        {
            mm.Phys.Table(pteTable); // reports the use after free
        }

        // Dropping the last reference and claiming the table are one step (1 -> Dead): a separate
        // decrement to 0 followed by a claim would let another CPU get, put, claim and free the
        // table in between, and the late claim would then mark whatever reused the frame.
        ref int c = ref CountOf(mm, pteTable.Pfn);
        mm.Machine.Sync.Profile?.Count(cpu.Id, ProfileOp.SharedAtomic);
        while (true)
        {
            int v = Volatile.Read(ref c);
            if (v <= 0)
            {
                throw new BadPageException($"pte_refcount underflow on {pteTable} (count {v})");
            }

            if (Interlocked.CompareExchange(ref c, v == 1 ? Dead : v - 1, v) != v)
            {
                continue;
            }

            if (v > 1)
            {
                return;
            }

            // We hold the claim: only we free the table, and until we unhook it, try-gets fail.
            if (TryLocatePmd(mm, pteTable, out long pmdTable, out int pmdIndex) && !FreeUserPte(mm, cpu, pmdTable, pmdIndex, pteTable))
            {
                throw new InvalidOperationException(
                    $"claimed {pteTable} at zero but its pmd no longer points at it ({mm.DescribeTranslation(mm.Phys.Desc(pteTable.Pfn).RmapAddress)}, live {mm.Phys.IsLive(pteTable)})");
            }

            return;
        }
    }

    // The table's count lives in its descriptor's per-design slot, as the seed keeps pte_ref in the ptdesc.
    private static ref int CountOf(MmStruct mm, long pteTable) => ref CountOf(mm.Phys.TableState(pteTable), pteTable);

    private static ref int CountOf(object? state, long pteTable) =>
        ref (state as PteRefcount
             ?? throw new UseAfterFreeException($"PTE table {pteTable:x} has no pte_refcount: it was freed", Environment.StackTrace, null)).Count;

    /// <summary>The 2021 series' <c>pte_refcount</c>: entries plus visitors, or <see cref="Dead"/> once claimed.</summary>
    private sealed class PteRefcount
    {
        public int Count;

        public override string ToString() => $"refcount {Volatile.Read(ref Count)}";
    }
}
