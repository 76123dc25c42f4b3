using PtLab.Mm;

namespace PtLab.Tests.Mm;

/// <summary>
/// Pages the host removed from a file's page cache (the replay applies its page-cache deletions):
/// they leave every mapping first, as the host unmapped them, and their frames go back.
/// </summary>
public class HostRemovedPagesTests
{
    private const ulong At = 0x40000000;

    [Theory]
    [MemberData(nameof(Sim.EveryDesign), MemberType = typeof(Sim))]
    public void ShmemPagesTheHostRemovedLeaveEveryMappingAndFreeTheirFrames(string design)
    {
        using var s = new Sim(design: PtLab.Reclaim.Designs.Factory(design));
        s.Map(64 * Sim.K4, Sim.Rw, MapFlags.Shared | MapFlags.Anonymous | MapFlags.Fixed, At);
        s.TouchAll(At, 64 * Sim.K4);
        var file = s.Mm.FindVma(At)!.File!;
        long used = s.Machine.Phys.UsedFrames;
        for (int round = 0; round < 20; round++)
        {
            Assert.Equal(0, MmStruct.RemovePagesTheHostRemoved(s.Cpu, file, 16, 16)); // none kept
            Assert.Equal(48 * 4, s.Mm.Status().RssShmemKb);
            s.TouchAll(At + (16 * Sim.K4), 16 * Sim.K4); // the program writes them again, as new pages
        }

        Assert.Equal(64 * 4, s.Mm.Status().RssShmemKb);
        Assert.Equal(used, s.Machine.Phys.UsedFrames); // no frame kept by the 320 pages removed
        Assert.Equal(0, MmStruct.RemovePagesTheHostRemoved(s.Cpu, file, 1000, 8)); // none there
        s.AssertAccountingConsistent();
    }
}
