using PtLab.Mm;

namespace PtLab.Workloads.Scenarios;

/// <summary>
/// The system calls the scenarios in this folder make, each turning a failure into a
/// <see cref="ScenarioException"/> that names the call, plus the checks their constructors share.
/// </summary>
internal static class ScenarioSteps
{
    public const ulong Page = 4096;
    public const ulong TwoMiB = 2UL << 20;
    public const ulong OneGiB = 1UL << 30;

    /// <summary>
    /// Maps <paramref name="size"/> bytes of private anonymous read-write memory: anywhere when
    /// <paramref name="at"/> is 0 (both the model and Linux return a 2 MiB-aligned address for a
    /// 2 MiB-multiple length), else exactly at <paramref name="at"/> with MAP_FIXED_NOREPLACE.
    /// </summary>
    public static ulong MapAnonymous(IMemoryTarget target, ulong size, ulong at)
    {
        var flags = MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve;
        if (at != 0)
        {
            flags |= MapFlags.FixedNoReplace;
        }

        var map = target.Mmap(at, size, Prot.Read | Prot.Write, flags);
        if (!map.Ok)
        {
            throw new ScenarioException($"mmap of {size} bytes{(at != 0 ? $" at 0x{at:x}" : "")} failed on {target.Name}: {map.Error}");
        }

        if ((map.Address & (TwoMiB - 1)) != 0)
        {
            throw new ScenarioException(
                $"{target.Name} placed the {size}-byte mapping at 0x{map.Address:x}, which is not 2 MiB aligned; " +
                "the scenario's table figures assume it is");
        }

        return map.Address;
    }

    public static void Touch(IMemoryTarget target, ulong addr, ulong length, bool write)
    {
        var r = target.TouchPages(addr, length, write);
        if (!r.Ok)
        {
            throw new ScenarioException($"{(write ? "write" : "read")}-touching [0x{addr:x}, +0x{length:x}) failed on {target.Name}: {r}");
        }
    }

    public static void Advise(IMemoryTarget target, ulong addr, ulong length, Advice advice)
    {
        var err = target.Madvise(addr, length, advice);
        if (err != Errno.None)
        {
            throw new ScenarioException($"madvise({advice}) of [0x{addr:x}, +0x{length:x}) failed on {target.Name}: {err}");
        }
    }

    public static void Unmap(IMemoryTarget target, ulong addr, ulong length)
    {
        var err = target.Munmap(addr, length);
        if (err != Errno.None)
        {
            throw new ScenarioException($"munmap of [0x{addr:x}, +0x{length:x}) failed on {target.Name}: {err}");
        }
    }

    /// <summary>Checks a size is a positive multiple of 2 MiB and at least <paramref name="minimum"/>.</summary>
    public static void CheckSize(ulong size, ulong minimum, string paramName)
    {
        if (size == 0 || size % TwoMiB != 0 || size < minimum)
        {
            throw new ArgumentException(
                $"{paramName} must be a positive multiple of 2 MiB and at least {minimum >> 20} MiB, got {size}", paramName);
        }
    }

    /// <summary>Checks a per-call piece is a multiple of 4 KiB that divides 2 MiB, so calls never straddle a table.</summary>
    public static void CheckPiece(ulong piece, string paramName)
    {
        if (piece == 0 || piece % Page != 0 || TwoMiB % piece != 0)
        {
            throw new ArgumentException($"{paramName} must be a multiple of 4 KiB that divides 2 MiB, got {piece}", paramName);
        }
    }

    /// <summary>Checks a placement address is 0 (anywhere) or 2 MiB aligned and leaves room for <paramref name="size"/> bytes.</summary>
    public static void CheckPlacement(ulong at, ulong size, string paramName)
    {
        const ulong userTop = 0x7FFF_FFFF_F000UL;
        if (at != 0 && ((at & (TwoMiB - 1)) != 0 || at > userTop || size > userTop - at))
        {
            throw new ArgumentException(
                $"{paramName} must be 0 (let the target choose) or a 2 MiB-aligned user address with room for {size} bytes, got 0x{at:x}",
                paramName);
        }
    }

    public static string Hex(ulong v) => "0x" + v.ToString("x");
}
