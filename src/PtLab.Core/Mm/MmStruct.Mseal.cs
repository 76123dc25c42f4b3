namespace PtLab.Mm;

// mm/mseal.c: mseal, and the checks the other calls make of a sealed VMA (vma_is_sealed).
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>mseal(start, len, flags)</c> (<c>do_mseal</c>, Linux 6.10+): EINVAL for any flag, an
    /// unaligned start, a length whose rounding or end wraps; 0 for an empty range; ENOMEM, with
    /// nothing sealed, when any part of the range is unmapped. Otherwise every VMA in the range
    /// that is not sealed yet gets <see cref="VmFlags.Sealed"/> through <c>vma_modify_flags</c>,
    /// split at the range's ends and merged with sealed neighbours. Sealing a sealed range does
    /// nothing and succeeds.
    /// </summary>
    public Errno Mseal(Cpu cpu, ulong start, ulong length, ulong flags)
    {
        if (flags != 0)
        {
            return Errno.EINVAL;
        }

        var bad = CheckPageRange(start, length, out ulong end);
        if (bad != Errno.None || end == start)
        {
            return bad; // an empty range succeeds at once
        }

        MmapLock.DownWrite(cpu.Id);
        try
        {
            // range_contains_unmapped: the whole range must be mapped before anything changes.
            ulong at = start;
            for (var v = FindVma(start); at < end; v = v.NextVma)
            {
                if (v is null || v.Start > at)
                {
                    return Errno.ENOMEM;
                }

                at = v.End;
            }

            // mseal_apply: each part not sealed yet, from the range's start.
            for (at = start; at < end;)
            {
                var vma = FindVma(at)!;
                ulong to = Math.Min(vma.End, end);
                if (!IsSealed(vma) && VmaModifyFlags(cpu, vma, at, to, vma.Flags | VmFlags.Sealed) is null)
                {
                    return Errno.EINVAL; // a special mapping refuses the split: the parts before stay sealed
                }

                at = to;
            }

            return Errno.None;
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }
    }

    /// <summary><c>vma_is_sealed</c>.</summary>
    private static bool IsSealed(Vma vma) => (vma.Flags & VmFlags.Sealed) != 0;

    /// <summary>
    /// <c>can_madvise_modify</c>: a sealed VMA refuses (EPERM) the advices that discard memory
    /// (<c>is_discard</c>: FREE, DONTNEED, DONTNEED_LOCKED, REMOVE, DONTFORK, WIPEONFORK,
    /// GUARD_INSTALL) when it is private anonymous memory (<c>vma_is_anonymous</c>: no file, no
    /// vm_ops) that cannot be written: the program could not have put those zeros there itself.
    /// </summary>
    private static bool MadviseSealRefused(Vma vma, Advice advice) =>
        IsSealed(vma) && vma.IsAnonymous && (vma.Flags & VmFlags.Write) == 0 &&
        advice is Advice.Free or Advice.DontNeed or Advice.DontNeedLocked or Advice.Remove or Advice.DontFork
            or Advice.WipeOnFork or Advice.GuardInstall;

    /// <summary>
    /// The seal check of <c>vms_gather_munmap_vmas</c> over [start, end): EPERM when a VMA in it
    /// is sealed. A split the unmap would make at the start of the first VMA, when that VMA is
    /// not sealed, is made before the sealed one is met (the kernel's goes unrevoked); the rest of
    /// the range is left as it was.
    /// </summary>
    private Errno MunmapSealRefused(Cpu cpu, ulong start, ulong end)
    {
        var first = FindVma(start);
        if (first is null || first.Start >= end)
        {
            return Errno.None;
        }

        bool sealedInRange = false;
        for (var v = first; v is not null && v.Start < end; v = v.NextVma)
        {
            if (IsSealed(v))
            {
                sealedInRange = true;
                break;
            }
        }

        if (!sealedInRange)
        {
            return Errno.None;
        }

        if (!IsSealed(first) && first.Start < start)
        {
            // The split at the start comes first; a refusal there is the answer instead.
            if (SplitAt(cpu, start) is var refused and not Errno.None)
            {
                return refused;
            }
        }

        return Errno.EPERM;
    }
}
