namespace PtLab.Mm;

/// <summary>
/// The anon_vma of private anonymous memory: the reverse map from an anonymous page to every VMA
/// that may map it (see AnonVma.Rmap.cs). Linux refuses to merge two VMAs that already carry
/// different anon_vmas.
/// </summary>
public sealed partial class AnonVma
{
}

/// <summary>A virtual memory area (<c>vm_area_struct</c>): [Start, End) with one set of flags.</summary>
public sealed partial class Vma
{
    internal Vma(ulong start, ulong end, VmFlags flags, AnonVma? anonVma, ulong pgoff = 0)
    {
        Start = start;
        End = end;
        Flags = flags;
        AnonVmaSlot = anonVma;
        PgOff = pgoff;
    }

    /// <summary><c>vm_start</c>. Changed only through <see cref="VmaTree"/>, which keeps the gaps it indexes in step.</summary>
    public ulong Start { get; internal set; }

    /// <summary><c>vm_end</c> (exclusive). Changed only through <see cref="VmaTree"/>.</summary>
    public ulong End { get; internal set; }

    /// <summary><c>vm_flags</c>.</summary>
    public VmFlags Flags { get; internal set; }

    /// <summary>Set on the first anonymous write fault (<c>anon_vma_prepare</c>).</summary>
    public AnonVma? AnonVma => Volatile.Read(ref AnonVmaSlot);

    /// <summary>The anon_vma field, for <c>anon_vma_prepare</c>'s compare-and-swap.</summary>
    internal AnonVma? AnonVmaSlot;

    /// <summary>Size in bytes.</summary>
    public ulong Length => End - Start;

    /// <summary>Whether <paramref name="addr"/> lies inside.</summary>
    public bool Contains(ulong addr) => addr >= Start && addr < End;

    // The VMA store's links (the maple tree's job in the kernel; the rb-tree and vm_next/vm_prev
    // list of older kernels, which this mirrors): an AVL tree by start address, augmented with the
    // largest gap below any VMA of the subtree, and the address-ordered list.
    internal Vma? TreeLeft;
    internal Vma? TreeRight;
    internal Vma? TreeParent;
    internal int TreeHeight;
    internal ulong SubtreeMaxGap;
    internal Vma? PrevVma;
    internal Vma? NextVma;

    /// <inheritdoc/>
    public override string ToString() => $"{Start:x}-{End:x} {FlagString()}";

    /// <summary>The rwxp column of <c>/proc/PID/maps</c>.</summary>
    public string FlagString() =>
        $"{((Flags & VmFlags.Read) != 0 ? 'r' : '-')}{((Flags & VmFlags.Write) != 0 ? 'w' : '-')}" +
        $"{((Flags & VmFlags.Exec) != 0 ? 'x' : '-')}{((Flags & VmFlags.Shared) != 0 ? 's' : 'p')}";
}
