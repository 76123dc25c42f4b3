using PtLab.Paging;
using PtLab.Phys;

namespace PtLab.Mm;

// Special mappings (mm/vma.c _install_special_mapping, special_mapping_fault; x86's
// arch/x86/entry/vdso/vma.c map_vdso, vvar_fault).
public sealed partial class MmStruct
{
    /// <summary>
    /// <c>_install_special_mapping</c>: maps <paramref name="mapping"/> at
    /// [<paramref name="addr"/>, +<paramref name="length"/>), over whatever lay there, as exec's
    /// <c>map_vdso</c> places the vDSO and its data pages. The VMA takes the mapping's flags with
    /// <c>VM_DONTEXPAND</c>, page offset 0, no file and no anon_vma; nothing is mapped until a
    /// fault. EINVAL for a range that is not page-aligned or not in the user address space; EPERM,
    /// with nothing mapped, over a sealed VMA.
    /// </summary>
    public Errno InstallSpecialMapping(Cpu cpu, ulong addr, ulong length, SpecialMapping mapping)
    {
        ArgumentNullException.ThrowIfNull(mapping);
        ulong len = Geometry.PageAlign(length);
        if ((addr & ~Geometry.PageMask) != 0 || len == 0 || addr > Geometry.TaskSize || len > Geometry.TaskSize - addr)
        {
            return Errno.EINVAL;
        }

        MmapLock.DownWrite(cpu.Id);
        try
        {
            if (UnmapLocked(cpu, addr, addr + len) is var refused and not Errno.None)
            {
                return refused; // a sealed VMA is in the way
            }

            var vma = new Vma(addr, addr + len, mapping.Flags | VmFlags.DontExpand, null, 0) { Mm = this, Special = mapping };
            _vmas.Insert(vma);
        }
        finally
        {
            MmapLock.UpWrite(cpu.Id);
        }

        Rcu.Poll();
        return Errno.None;
    }

    /// <summary>
    /// A fault on a special mapping where nothing is mapped. <c>special_mapping_fault</c> (the
    /// vDSO): the page of the mapping's own frames at the fault's offset, mapped read-only with its
    /// rmap and counted in MM_FILEPAGES (<c>finish_fault</c>; a kernel page is not anonymous);
    /// <c>vvar_fault</c> (a <c>VM_PFNMAP</c> mapping): the frame
    /// inserted as a special entry (<c>vmf_insert_pfn</c>), with no rmap and no RSS. No
    /// fault-around: these mappings have no <c>map_pages</c>. A write (only possible after an
    /// mprotect made a vDSO writable) copies, as <c>do_cow_fault</c> does, into a fresh anonymous
    /// page; the copy's content is not modelled.
    /// </summary>
    private FaultOutcome SpecialMappingFault(Cpu cpu, Vma vma, SpecialMapping mapping, ulong addr, bool write, long pmdTable, int pmdIndex)
    {
        if (write && !mapping.PfnMap)
        {
            return DoAnonymousPage(cpu, vma, addr, write: true, pmdTable, pmdIndex);
        }

        addr &= Geometry.PageMask;
        // The mapping's pages are taken as far as a fault reaches (the kernel's image has them all
        // from boot), so that a recorded mapping of a strange size costs only what is read of it.
        ulong index = vma.LinearPageIndex(addr);
        if (index >= int.MaxValue)
        {
            return FaultOutcome.Bus;
        }

        var frames = Phys.SpecialFrames(mapping.Name, (int)index + 1);
        if (frames is null)
        {
            return FaultOutcome.Oom;
        }

        long pfn = frames[index];
        if (LockNoneEntry(cpu, pmdTable, pmdIndex, addr, out var pt) is { } outcome)
        {
            return outcome;
        }

        ulong pte;
        if (mapping.PfnMap)
        {
            pte = Entry.MakePte(pfn, writable: false, dirty: false, noExecute: (vma.Flags & VmFlags.Exec) == 0) | Entry.Special;
        }
        else
        {
            Phys.Desc(pfn).AddMap(1);
            AddRss(cpu, MmCounter.File, 1);
            pte = Entry.MakePte(pfn, writable: false, dirty: false, noExecute: (vma.Flags & VmFlags.Exec) == 0);
        }

        SetPteAt(cpu, pt, Geometry.PteIndex(addr), pte);
        PteUnmapUnlock(cpu, pt);
        return FaultOutcome.Ok;
    }
}
