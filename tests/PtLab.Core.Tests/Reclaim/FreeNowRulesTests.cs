using PtLab.Reclaim;

namespace PtLab.Tests.Reclaim;

public class FreeNowRulesTests
{
    private static readonly ScannedTable s_empty = new(0, 0, 0, 0, false);
    private static readonly ScannedTable s_zero = new(512, 512, 0, 0, false);
    private static readonly ScannedTable s_guard = new(0, 0, 1, 1, false);
    private static readonly ScannedTable s_swap = new(0, 0, 3, 0, false);
    private static readonly ScannedTable s_deposit = new(0, 0, 0, 0, true);

    [Fact]
    public void EveryRuleNamesARegisteredDesignOnce()
    {
        Assert.All(FreeNowRules.All, r => Assert.Contains(r.Design, Designs.Names));
        Assert.Equal(FreeNowRules.All.Count, FreeNowRules.All.Select(r => r.Design).Distinct().Count());
        Assert.Null(FreeNowRules.For("no-such-design"));
    }

    [Fact]
    public void TableStatesFollowTheirEntries()
    {
        Assert.Equal(ScannedTableState.Empty, s_empty.State);
        Assert.Equal(ScannedTableState.ZeroPageOnly, s_zero.State);
        Assert.Equal(ScannedTableState.MarkerOnly, s_guard.State);
        Assert.Equal(ScannedTableState.Populated, s_swap.State);
        Assert.Equal(ScannedTableState.Populated, new ScannedTable(2, 1, 0, 0, false).State);
        Assert.Equal(ScannedTableState.ThpDeposit, s_deposit.State);
    }

    [Theory]
    [InlineData("none", false)]
    [InlineData("atomic", true)]
    [InlineData("pte-ref", true)]
    [InlineData("pt-reclaim", false)]
    [InlineData("occupancy", true)]
    [InlineData("pte-ref-batched", true)]
    public void RefcountDesignsFreeOnlyEmptyTablesAndNoDesignFreesTheRestNow(string design, bool freesEmpty)
    {
        var rule = FreeNowRules.For(design)!;
        Assert.Equal(freesEmpty, rule.FreesNow(s_empty));
        foreach (var t in new[] { s_zero, s_guard, s_swap, s_deposit })
        {
            Assert.False(rule.FreesNow(t));
        }

        Assert.False(string.IsNullOrWhiteSpace(rule.Rule));
    }
}
