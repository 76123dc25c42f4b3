using PtLab.Mm;

namespace PtLab.Tests.Mm;

/// <summary>
/// Execute-only memory with and without protection keys (<see cref="MachineOptions.ExecOnlyPkey"/>):
/// x86 page tables cannot deny reads to an executable page, so without keys a PROT_EXEC mapping
/// reads (and faults pages in) as if it were PROT_READ|PROT_EXEC; with keys the VMA's key denies
/// every data access, from user space and from get_user_pages alike.
/// </summary>
public class ExecOnlyPkeyTests
{
    private static ulong ExecOnly(Sim s, ulong length)
    {
        ulong a = s.Map(length);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, length, Prot.Exec));
        return a;
    }

    [Fact]
    public void WithoutKeysAReadOfExecOnlyMemoryFaultsAPageInAndAWriteIsAccErr()
    {
        using var s = new Sim();
        ulong a = ExecOnly(s, Sim.M1);
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
        Assert.Equal(1, s.Tables.Pte);
        Assert.Equal(FaultOutcome.SegvAccErr, s.Cpu.Touch(a + 4096).Outcome);
    }

    [Fact]
    public void WithKeysReadsAndWritesOfExecOnlyMemoryArePkuErrAndMapNothing()
    {
        using var s = new Sim(execOnlyPkey: true);
        ulong a = ExecOnly(s, Sim.M1);
        var read = s.Cpu.ReadByte(a + 8, out _);
        Assert.Equal(FaultOutcome.SegvPkuErr, read.Outcome);
        Assert.Equal(a + 8, read.Address);
        Assert.Equal(FaultOutcome.SegvPkuErr, s.Cpu.Touch(a + 4096).Outcome);
        Assert.Equal(0, s.Tables.Pte);
        Assert.Equal(0, s.Mm.Status().VmRssKb);

        // PROT_READ|PROT_EXEC gives the key back (vma_is_pkey_exec_only): the read is served.
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Read | Prot.Exec));
        Assert.True(s.Cpu.ReadByte(a, out _).Ok);
        Assert.Equal(1, s.Tables.Pte);
    }

    [Fact]
    public void WithKeysMlockOfExecOnlyMemoryLocksTheVmaButPopulatesNothingAndSaysEnomem()
    {
        using var plain = new Sim();
        ulong p = ExecOnly(plain, 16 * 4096);
        Assert.Equal(Errno.None, plain.Mm.Mlock(plain.Cpu, p, 16 * 4096));
        Assert.Equal(64, plain.Mm.Status().VmLckKb);
        Assert.Equal(1, plain.Tables.Pte); // forced read faults: zero pages mapped

        using var keyed = new Sim(execOnlyPkey: true);
        ulong k = ExecOnly(keyed, 16 * 4096);
        Assert.Equal(Errno.ENOMEM, keyed.Mm.Mlock(keyed.Cpu, k, 16 * 4096));
        Assert.Equal(64, keyed.Mm.Status().VmLckKb);
        Assert.Equal(0, keyed.Tables.Pte);
    }

    [Fact]
    public void WithKeysMapPopulateLeavesAnExecOnlyMappingEmpty()
    {
        using var s = new Sim(execOnlyPkey: true);
        var r = s.Mm.Mmap(s.Cpu, 0, Sim.M1, Prot.Exec, MapFlags.Private | MapFlags.Anonymous | MapFlags.Populate);
        Assert.True(r.Ok);
        Assert.Equal(0, s.Tables.Pte);

        using var plain = new Sim();
        Assert.True(plain.Mm.Mmap(plain.Cpu, 0, Sim.M1, Prot.Exec, MapFlags.Private | MapFlags.Anonymous | MapFlags.Populate).Ok);
        Assert.Equal(1, plain.Tables.Pte);
    }

    [Fact]
    public void WithKeysGetUserPagesRefusesExecOnlyMemory()
    {
        using var s = new Sim(execOnlyPkey: true);
        ulong a = ExecOnly(s, Sim.M1);
        Span<long> pages = stackalloc long[1];
        Assert.Equal(-(long)Errno.EFAULT, s.Mm.GetUserPages(s.Cpu, a, 1, write: false, pages));
    }

    [Fact]
    public void OnlyExactlyProtExecGetsTheKeySoProtSemReadsAndTheTwoDoNotMerge()
    {
        using var s = new Sim(execOnlyPkey: true);
        ulong a = s.Map(2 * Sim.M1);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Exec));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a + Sim.M1, Sim.M1, Prot.Exec | Prot.Sem));
        Assert.Equal(FaultOutcome.SegvPkuErr, s.Cpu.ReadByte(a, out _).Outcome);
        Assert.True(s.Cpu.ReadByte(a + Sim.M1, out _).Ok); // do_mmap and mprotect compare the whole prot with PROT_EXEC

        // Same access bits, different keys: two VMAs, as the kernel's vm_flags carry the key.
        Assert.Equal(2, s.Mm.Vmas.Count(v => v.Start >= a && v.End <= a + (2 * Sim.M1)));
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Exec | Prot.Sem));
        Assert.Single(s.Mm.Vmas, v => v.Start >= a && v.End <= a + (2 * Sim.M1));

        using var plain = new Sim();
        ulong b = plain.Map(2 * Sim.M1);
        Assert.Equal(Errno.None, plain.Mm.Mprotect(plain.Cpu, b, Sim.M1, Prot.Exec));
        Assert.Equal(Errno.None, plain.Mm.Mprotect(plain.Cpu, b + Sim.M1, Sim.M1, Prot.Exec | Prot.Sem));
        Assert.Single(plain.Mm.Vmas, v => v.Start >= b && v.End <= b + (2 * Sim.M1));
    }

    [Fact]
    public void WithKeysAPagePresentBeforeTheMprotectIsDeniedToo()
    {
        // The entries of a keyed VMA carry the key, so the hardware refuses a present page as well.
        using var s = new Sim(execOnlyPkey: true);
        ulong a = s.Map(Sim.M1);
        s.TouchAll(a, 2 * 4096);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Exec));
        Assert.Equal(FaultOutcome.SegvPkuErr, s.Cpu.ReadByte(a + 4096, out _).Outcome);
        Assert.Equal(8, s.Mm.Status().RssAnonKb); // still mapped, only refused

        // A fork's child has the key too, and so refuses the same page.
        var child = s.Mm.Fork(s.Cpu)!;
        Assert.True(child.ExecOnlyKeyed);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, a, Sim.M1, Prot.Read | Prot.Exec));
        Assert.True(s.Cpu.ReadByte(a + 4096, out _).Ok);
        child.Exit(s.Cpu);
    }
}
