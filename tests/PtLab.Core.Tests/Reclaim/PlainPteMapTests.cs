using PtLab.Mm;
using PtLab.Phys;
using PtLab.Reclaim;

namespace PtLab.Tests.Reclaim;

public class PlainPteMapTests
{
    [Fact]
    public void OnlyTheBaselineDesignIsMappedWithoutItsHooks()
    {
        foreach (string name in Designs.Names)
        {
            var design = Designs.Factory(name)!();
            Assert.Equal(name == "none", design.PlainPteMap);
        }
    }

    [Fact]
    public void ADesignThatOverridesOneMappingHookIsNeverMappedPlainly()
    {
        Assert.True(new NoReclaim().PlainPteMap);
        Assert.False(new OwnUnmap().PlainPteMap);
    }

    // A design with its own pte_unmap only: the plain path would skip it.
    private sealed class OwnUnmap : NoReclaim
    {
        public override void PteUnmap(MmStruct mm, Cpu cpu, TableRef pteTable)
        {
        }
    }
}
