using PtLab.Mm;
using Xunit.Abstractions;
using static PtLab.Kernel.Tests.MappingDifferential;

namespace PtLab.Kernel.Tests;

/// <summary>
/// brk, mlockall/munlockall and MAP_GROWSDOWN stacks, run on the model and on the host kernel in a
/// child process (<see cref="ProbeTarget"/>), compared call by call and checkpoint by checkpoint.
/// </summary>
public sealed class ChildKernelTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096, M1 = 1UL << 20, M2 = 2UL << 20, G1 = 1UL << 30;
    private const Prot Rw = Prot.Read | Prot.Write;

    [NativeFact]
    public void BrkGrowsShrinksAndRefusesAsTheKernelDoes()
    {
        AssertSameInChild(r =>
        {
            var t = r.Target;
            ulong start = r.Base;
            r.Note("below start", t.Brk(start - K4) - start);
            r.Note("grow", t.Brk(start + (3 * M1) + 100) - start);
            r.Touch(0, 3 * M1, write: true);
            r.Check("grown");
            r.Note("same page", t.Brk(start + (3 * M1) + 200) - start);
            r.Note("shrink", t.Brk(start + K4 + 1) - start);
            r.Check("shrunk");
            r.Note("grow again", t.Brk(start + (5 * M2)) - start);
            r.Touch(4 * M2, M2, write: false);
            r.Note("mprotect the heap", t.Mprotect(start, 2 * K4, Prot.Read));
            r.Note("grow past", t.Brk(start + (6 * M2)) - start);
            r.Check("regrown");
            r.Note("absurd", t.Brk(0x7fff_ffff_0000) - start);
            r.Note("to the start", t.Brk(start) - start);
            r.Check("emptied");
        }, output, heap: true);
    }

    [NativeFact]
    public void MlockallLocksAndPopulatesTheMappingsAndFutureOnesAsTheKernelDoes()
    {
        AssertSameInChild(r =>
        {
            var t = r.Target;
            r.Mmap(G1, 2 * M1, Rw);
            r.Mmap(G1 + M2, M1, Prot.Read);
            r.Note("bad flags", t.Mlockall(MlockallFlags.OnFault));
            r.Note("future", t.Mlockall(MlockallFlags.Future));
            r.Mmap(G1 + (2 * M2), M1, Rw);
            r.Check("future");
            r.Note("current", t.Mlockall(MlockallFlags.Current | MlockallFlags.Future | MlockallFlags.OnFault));
            r.Mmap(G1 + (3 * M2), M1, Rw);
            r.Touch(G1 + (3 * M2), 8 * K4, write: true);
            r.Check("current onfault");
            r.Note("munlockall", t.Munlockall());
            r.Mmap(G1 + (4 * M2), M1, Rw);
            r.Check("unlocked");
        }, output, lockedFromSlot: true);
    }

    [NativeFact]
    public void AStackGrowsDownOnAFaultBelowItAsTheKernelDoes()
    {
        AssertSameInChild(r =>
        {
            var t = r.Target;
            r.Mmap(G1, M1, Rw, MapFlags.GrowsDown);
            r.Touch(G1 - (5 * K4), K4, write: true);
            r.Check("grown");
            r.Touch(G1 + M1 - (10 * M1), K4, write: true); // more than RLIMIT_STACK below the top
            r.Mmap(G1 - (4 * M1), K4, Rw);
            r.Touch(G1 - (4 * M1) + K4 + (64 * K4), K4, write: false); // inside the guard gap above that mapping
            r.Touch(G1 - (3 * M1) + K4, K4, write: false);              // just clear of it
            r.Check("guard gap");
        }, output);
    }
}
