namespace PtLab.Mm;

/// <summary>
/// <c>struct vm_special_mapping</c>: a mapping the kernel installs itself
/// (<c>_install_special_mapping</c>), of its own pages rather than a file's or fresh anonymous
/// memory. On x86-64, exec maps the vDSO (<c>map_vdso</c>): <c>[vdso]</c>, the image's text,
/// whose pages are ordinary pages that a fault maps (<c>special_mapping_fault</c>) and counts in
/// MM_FILEPAGES, as they are not anonymous; and <c>[vvar]</c> (and <c>[vvar_vclock]</c>), data
/// pages inserted as raw frame numbers (<c>vmf_insert_pfn</c> under <c>VM_PFNMAP</c>), which no
/// RSS counter counts. A special VMA has no anon_vma, no fault-around and no readahead; it never
/// merges (<c>VM_DONTEXPAND</c>). Every process maps the same frames
/// (<see cref="Phys.PhysMemory.SpecialFrames"/>).
/// </summary>
public sealed class SpecialMapping
{
    private SpecialMapping(string name, VmFlags flags)
    {
        Name = name;
        Flags = flags;
    }

    /// <summary>The name <c>/proc/PID/maps</c> shows (<c>vm_special_mapping.name</c>).</summary>
    public string Name { get; }

    /// <summary>The VMA flags the installer asks for (<c>_install_special_mapping</c> adds <c>VM_DONTEXPAND</c>).</summary>
    public VmFlags Flags { get; }

    /// <summary>Whether its entries are raw frame numbers (<c>VM_PFNMAP</c>): no rmap, no RSS, copied by fork.</summary>
    public bool PfnMap => (Flags & VmFlags.PfnMap) != 0;

    /// <summary>
    /// x86's <c>vdso_mapping</c>: read and execute, may be made writable (a debugger's breakpoint
    /// copies the page), counted in RssFile where faulted.
    /// </summary>
    public static SpecialMapping Vdso { get; } = new("[vdso]", VmFlags.Read | VmFlags.Exec | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec);

    /// <summary>x86's <c>vvar_mapping</c>: the vDSO's data pages, <c>VM_IO | VM_PFNMAP</c>, never dumped.</summary>
    public static SpecialMapping Vvar { get; } = new("[vvar]", VvarFlags);

    /// <summary>x86's <c>vvar_vclock_mapping</c>: the paravirtual clock pages, mapped as <see cref="Vvar"/> is.</summary>
    public static SpecialMapping VvarVclock { get; } = new("[vvar_vclock]", VvarFlags);

    private const VmFlags VvarFlags = VmFlags.Read | VmFlags.MayRead | VmFlags.Io | VmFlags.DontDump | VmFlags.PfnMap;

    /// <summary>The special mapping a line of <c>/proc/PID/maps</c> names, or null for any other name.</summary>
    public static SpecialMapping? Named(string? name) => name switch
    {
        "[vdso]" => Vdso,
        "[vvar]" => Vvar,
        "[vvar_vclock]" => VvarVclock,
        _ => null,
    };

    /// <inheritdoc/>
    public override string ToString() => Name;
}
