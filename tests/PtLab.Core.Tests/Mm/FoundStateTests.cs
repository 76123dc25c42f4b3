using PtLab.Mm;

namespace PtLab.Tests.Mm;

/// <summary>
/// Rebuilding what a live process was found to have (an attached recording): its pages
/// (<see cref="MmStruct.PopulateFound"/>) and the PTE tables it had with no page in them
/// (<see cref="MmStruct.MakeFoundPteTables"/>).
/// </summary>
public class FoundStateTests
{
    private const ulong At = 0x40000000; // 2 MiB-aligned

    [Fact]
    public void AnonymousPagesAreWrittenInAWritableVmaAndReadInOneMadeReadOnly()
    {
        using var s = new Sim();
        s.Map(Sim.M2, Sim.Rw, Sim.Anon | MapFlags.Fixed, At);
        s.Map(Sim.M2, Prot.Read, Sim.Anon | MapFlags.Fixed, At + Sim.M2);
        var (done, left) = s.Mm.PopulateFound(s.Cpu, At, At + (8 * Sim.K4), anonymous: true);
        Assert.Equal((8, 0), (done, left));
        Assert.Equal(32, s.Mm.Status().RssAnonKb); // written: anonymous pages
        Assert.Equal(0, s.Cpu.Faults); // no user fault: the pages came as get_user_pages brings them

        // A page found anonymous where the VMA is read-only now is read: the zero page, the same table.
        (done, left) = s.Mm.PopulateFound(s.Cpu, At + Sim.M2, At + Sim.M2 + (4 * Sim.K4), anonymous: true);
        Assert.Equal((4, 0), (done, left));
        Assert.Equal(32, s.Mm.Status().RssAnonKb);
        Assert.Equal(2, s.Mm.Status().Tables.Pte);
        s.AssertAccountingConsistent();
    }

    [Fact]
    public void PagesWhereTheModelHasNoVmaOrOnlyAProtNoneOneAreLeft()
    {
        using var s = new Sim();
        s.Map(Sim.M1, Prot.None, Sim.Anon | MapFlags.Fixed, At);
        var (done, left) = s.Mm.PopulateFound(s.Cpu, At, At + (2 * Sim.M1), anonymous: true);
        Assert.Equal(0, done);
        Assert.Equal(512, left);
        Assert.Equal(0, s.Mm.Status().Tables.Pte);
    }

    [Fact]
    public void AnEmptyTableIsMadeWhereABlockHasNoneAndOnlyThere()
    {
        using var s = new Sim();
        s.Map(3 * Sim.M2, Sim.Rw, Sim.Anon | MapFlags.Fixed, At);
        s.TouchAll(At, Sim.K4); // the first block has a table with a page

        // Counting only: the two blocks without a table, and the one with no VMA past the end.
        var (found, left) = s.Mm.MakeFoundPteTables(s.Cpu, At, At + (4 * Sim.M2), make: false);
        Assert.Equal((2, 1), (found, left));
        Assert.Equal(1, s.Mm.Status().Tables.Pte);

        (found, left) = s.Mm.MakeFoundPteTables(s.Cpu, At, At + (4 * Sim.M2));
        Assert.Equal((2, 1), (found, left));
        var st = s.Mm.Status();
        Assert.Equal(3, st.Tables.Pte);
        Assert.Equal(4, st.RssAnonKb); // the tables are empty: no page came with them

        // Made once: a second pass finds every block with its table.
        Assert.Equal((0L, 0L), s.Mm.MakeFoundPteTables(s.Cpu, At, At + (3 * Sim.M2)));
        s.AssertAccountingConsistent();
    }
}
