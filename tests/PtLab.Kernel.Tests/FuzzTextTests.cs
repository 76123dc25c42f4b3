using PtLab.Kernel.Fuzz;

namespace PtLab.Kernel.Tests;

/// <summary>The case-file format, the generator's bounds, and moving a case to another slot.</summary>
public sealed class FuzzTextTests
{
    private const ulong Slot = 0x7e00_0000_0000;

    [Theory]
    [InlineData("mmap S+0x2c5e000 0x600000 PROT_READ MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS")]
    [InlineData("mmap 0 0x1000 PROT_NONE MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|MAP_STACK")]
    [InlineData("mmap S+0x40000000 0x27b4000 PROT_READ|PROT_WRITE MAP_SHARED_VALIDATE|MAP_FIXED|MAP_ANONYMOUS|0x400")]
    [InlineData("mprotect S+0x2e00000 0x54f000 PROT_READ|PROT_GROWSDOWN")]
    [InlineData("madvise S+0x2c0b000 0x400000 MADV_DONTNEED")]
    [InlineData("madvise S+0x2c0b000 0xfffffffffffff6b9 26")]
    [InlineData("madvise S+0x2c0b000 0x4000 MADV_GUARD_INSTALL")]
    [InlineData("madvise S+0x2c0a000 0x201000 MADV_GUARD_REMOVE")]
    [InlineData("munmap S+0x0 0x0")]
    [InlineData("read S+0x2e9a000 0x400000")]
    [InlineData("write S+0x7fffffff00 0x100")]
    public void AnOperationReadsBackAsWritten(string text)
    {
        var op = FuzzText.ParseOp(text, Slot);
        Assert.Equal(text, op.Format(Slot));
        Assert.True(op.SameAs(FuzzText.ParseOp(op.Format(Slot), Slot)));
    }

    [Fact]
    public void TheWireLineCarriesNumbersAndMmapsConstantArguments()
    {
        var op = FuzzText.ParseOp("mmap S+0x1000 0x2000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", Slot);
        Assert.Equal("mmap 0x7e0000001000 0x2000 0x3 0x32 -1 0", op.WireLine());
        Assert.Equal("read 0x7e0000000000 0x1", FuzzText.ParseOp("read S+0x0 0x1", Slot).WireLine());
    }

    [Theory]
    [InlineData("S+0x2c5e000 pte=0 anon=0 | S+0x2c5e000-S+0x325e000:r--p")]
    [InlineData("ENOMEM pte=16 anon=4 | S+0x0-S+0x1000:rw-p S+0x2000-S+0x8000000000:---p")]
    [InlineData("SIGSEGV:SEGV_MAPERR@S+0x325e000 pte=20 anon=0 |")]
    [InlineData("SIGSEGV:SEGV_ACCERR@S+0x1 pte=20 anon=0")]
    [InlineData("0 pte=-4 anon=0")]
    [InlineData("0 pte=12 anon=64 ref=64 | S+0x0-S+0x10000:rw-p")]
    [InlineData("ENOMEM pte=16 anon=128 file=4 shmem=8 ref=0")]
    public void AnOutcomeReadsBackAsWritten(string text) =>
        Assert.Equal(text, FuzzText.FormatOutcome(FuzzText.ParseOutcome(text, Slot), Slot));

    [Theory]
    [InlineData("mmap S+0x1000 0x1000", "takes 4 arguments")]
    [InlineData("mremap S+0x1000 0x1000 0x2000", "mremap takes 5 arguments")]
    [InlineData("mbind S+0x1000 0x1000 0", "unknown operation 'mbind'")]
    [InlineData("munmap S+0x1000 lots", "'lots' is not a number")]
    [InlineData("madvise S+0x1000 0x1000 MADV_SOMETIMES", "'MADV_SOMETIMES' is not a number")]
    public void ABadOperationSaysWhatIsWrong(string text, string message) =>
        Assert.Contains(message, Assert.Throws<FormatException>(() => FuzzText.ParseOp(text, Slot)).Message);

    [Fact]
    public void TheReferencedFigureIsComparedOnlyWhereBothSidesMeasuredIt()
    {
        var kernel = FuzzText.ParseOutcome("0 pte=12 anon=64 ref=64", Slot);
        Assert.Equal(["Referenced"], kernel.DifferencesFrom(kernel with { RefKb = 0 }));
        Assert.Empty(kernel.DifferencesFrom(kernel with { RefKb = -1 })); // an older case without ref=
        Assert.Equal(-1, FuzzText.ParseOutcome("0 pte=12 anon=64", Slot).RefKb);
        Assert.Throws<FormatException>(() => FuzzText.ParseOutcome("0 pte=12 anon=64 ref=x", Slot));
    }

    [Fact]
    public void ACaseFileReadsBackAsWrittenAndItsErrorsNameTheLine()
    {
        const string text = """
            # a comment
            slot 0x7e0000000000
            design pt-reclaim
            memtotal 1048576
            mmap S+0x0 0x200000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS => S+0x0 pte=0 anon=0 | S+0x0-S+0x200000:rw-p
            write S+0x0 0x1000 => 0 pte=12 anon=4 | S+0x0-S+0x200000:rw-p
            """;
        var c = FuzzCase.Parse(text, "a.case");
        Assert.Equal(Slot, c.Slot);
        Assert.Equal("pt-reclaim", c.Design);
        Assert.Equal(1048576, c.MemTotalKb);
        Assert.Equal(["a comment"], c.Comments);
        Assert.Equal(2, c.Steps.Count);
        Assert.Equal(12, c.Steps[1].Expected!.PteKb);
        Assert.Equal(c.Format(), FuzzCase.Parse(c.Format(), "b.case").Format());
        Assert.True(c.ZeroPage);

        // A case recorded on a host whose read faults take private pages says so, and the model
        // replays it that way: the read is 4 kB of RssAnon, not the zero page.
        string noZero = text.Replace("memtotal 1048576", "memtotal 1048576\nzeropage 0", StringComparison.Ordinal)
            .Replace("write S+0x0 0x1000 => 0 pte=12 anon=4", "read S+0x0 0x1000 => 0 pte=12 anon=4", StringComparison.Ordinal);
        var z = FuzzCase.Parse(noZero, "z.case");
        Assert.False(z.ZeroPage);
        Assert.Contains("zeropage 0", z.Format(), StringComparison.Ordinal);
        Assert.False(FuzzCase.Parse(z.Format(), "z2.case").ZeroPage);
        Assert.Empty(z.CheckOnModel());
        Assert.Single(FuzzCase.Parse(noZero.Replace("zeropage 0", "zeropage 1", StringComparison.Ordinal), "z3.case").CheckOnModel());
        Assert.Contains("zeropage 2 is not 0 or 1", Assert.Throws<FormatException>(() => FuzzCase.Parse(noZero.Replace("zeropage 0", "zeropage 2", StringComparison.Ordinal), "z4.case")).Message, StringComparison.Ordinal);

        var e = Assert.Throws<FormatException>(() => FuzzCase.Parse(text.Replace("write S+0x0", "write S+0x0 0x1 0x2", StringComparison.Ordinal), "a.case"));
        Assert.StartsWith("a.case:6: write takes 2 arguments", e.Message);
        e = Assert.Throws<FormatException>(() => FuzzCase.Parse("read S+0x0 0x1\n", "b.case"));
        Assert.Equal("b.case:1: an operation before the 'slot' line", e.Message);
    }

    [Fact]
    public void ACaseFromAHostWithExecOnlyKeysSaysSoAndTheModelReplaysItThatWay()
    {
        // The same read of execute-only memory: on a host without protection keys x86 serves it
        // (zero page, a PTE table); with them the VMA's key denies it, SEGV_PKUERR, nothing mapped.
        const string plain = """
            slot 0x7e0000000000
            design pt-reclaim
            memtotal 1048576
            mmap S+0x0 0x200000 PROT_EXEC MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS => S+0x0 pte=0 anon=0 | S+0x0-S+0x200000:--xp
            read S+0x0 0x1000 => 0 pte=12 anon=0 | S+0x0-S+0x200000:--xp
            """;
        string keyed = plain.Replace("memtotal 1048576", "memtotal 1048576\npkey exec-only", StringComparison.Ordinal)
            .Replace("read S+0x0 0x1000 => 0 pte=12 anon=0", "read S+0x0 0x1000 => SIGSEGV:SEGV_PKUERR@S+0x0 pte=0 anon=0", StringComparison.Ordinal);
        var c = FuzzCase.Parse(keyed, "k.case");
        Assert.True(c.ExecOnlyPkey);
        Assert.Contains("pkey exec-only", c.Format(), StringComparison.Ordinal);
        Assert.Contains("SIGSEGV:SEGV_PKUERR@S+0x0", c.Format(), StringComparison.Ordinal);
        Assert.True(FuzzCase.Parse(c.Format(), "k2.case").ExecOnlyPkey);
        Assert.Empty(c.CheckOnModel());

        var p = FuzzCase.Parse(plain, "p.case");
        Assert.False(p.ExecOnlyPkey);
        Assert.DoesNotContain("pkey", p.Format(), StringComparison.Ordinal);
        Assert.Empty(p.CheckOnModel());

        // Each file replayed as the other host: the step differs.
        Assert.Single(FuzzCase.Parse(keyed.Replace("pkey exec-only", "pkey none", StringComparison.Ordinal), "k3.case").CheckOnModel());
        Assert.Contains("pkey both is not 'exec-only' or 'none'", Assert.Throws<FormatException>(() => FuzzCase.Parse(keyed.Replace("pkey exec-only", "pkey both", StringComparison.Ordinal), "k4.case")).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheModelReplaysARecordedCaseAndNamesTheStepThatDiffers()
    {
        const string agree = """
            slot 0x7e0000000000
            design pt-reclaim
            memtotal 1048576
            mmap S+0x0 0x200000 PROT_READ|PROT_WRITE MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS => S+0x0 pte=0 anon=0 | S+0x0-S+0x200000:rw-p
            write S+0x1000 0x1000 => 0 pte=12 anon=4 | S+0x0-S+0x200000:rw-p
            madvise S+0x0 0x200000 MADV_DONTNEED => 0 pte=8 anon=0 | S+0x0-S+0x200000:rw-p
            """;
        Assert.Empty(FuzzCase.Parse(agree, "a.case").CheckOnModel());

        // The same case as a kernel without page-table reclaim answered it: the model (pt-reclaim) differs.
        var problems = FuzzCase.Parse(agree.Replace("pte=8", "pte=12", StringComparison.Ordinal), "a.case").CheckOnModel();
        string p = Assert.Single(problems);
        Assert.StartsWith("operation 3 (madvise S+0x0 0x200000 MADV_DONTNEED) differs in VmPTE", p);
    }

    [Fact]
    public void RebasingMovesAddressesAndKeepsWrappedEnds()
    {
        const ulong other = 0x7d80_0000_0000;
        var op = FuzzText.ParseOp("madvise S+0x2000 0xffff81ffffffe000 MADV_DONTNEED", Slot);
        ulong end = op.Args[0] + op.Args[1]; // wraps past 2^64
        var moved = op.Rebase(Slot, other);
        Assert.Equal(other + 0x2000, moved.Args[0]);
        Assert.Equal(end, moved.Args[0] + moved.Args[1]);
        Assert.True(moved.Args[0] + moved.Args[1] < moved.Args[0]);

        var plain = FuzzText.ParseOp("munmap S+0x2000 0x3000", Slot).Rebase(Slot, other);
        Assert.Equal([other + 0x2000, 0x3000UL], plain.Args);
        var none = FuzzText.ParseOp("mmap 0 0x3000 PROT_READ MAP_PRIVATE|MAP_ANONYMOUS", Slot).Rebase(Slot, other);
        Assert.Equal(0UL, none.Args[0]);
    }

    [Fact]
    public void TheGeneratorIsRepeatableAndStaysInTheSlotOrWraps()
    {
        var a = new OpGenerator(new Random(7), Slot) { AllowLocked = true, AllowGuard = true, AllowMseal = true, AllowKsm = true, AllowDroppable = true };
        var b = new OpGenerator(new Random(7), Slot) { AllowLocked = true, AllowGuard = true, AllowMseal = true, AllowKsm = true, AllowDroppable = true };
        var layout = new List<VmaLine> { new(Slot + 0x200000, Slot + 0x600000, "rw-p"), new(Slot + (511UL << 30), Slot + FuzzText.SlotSize, "---p") };
        a.Layout = layout;
        b.Layout = layout;
        var kinds = new HashSet<string>();
        for (int i = 0; i < 20_000; i++)
        {
            var op = a.Next();
            Assert.True(op.SameAs(b.Next()), $"draw {i} differs between two generators of one seed");
            kinds.Add(FuzzCampaign.CoverageKey(op));
            Assert.Equal(op.Kind.Args.Count, op.Args.Count);
            AssertInSlotOrWraps(op);
            if (op.Kind.Name == "madvise")
            {
                Assert.DoesNotContain(op.Args[2], new ulong[] { 100, 101 }); // MADV_HWPOISON, MADV_SOFT_OFFLINE
            }
        }

        foreach (string k in new[] { "mmap fixed", "mmap fixed-noreplace", "mmap hint", "mmap none", "munmap", "mprotect", "read", "write",
                     "madvise MADV_DONTNEED", "madvise MADV_FREE", "madvise MADV_PAGEOUT", "madvise MADV_HUGEPAGE", "madvise MADV_REMOVE",
                     "madvise MADV_NOHUGEPAGE", "madvise MADV_POPULATE_READ", "madvise MADV_POPULATE_WRITE", "mremap in-place", "mremap maymove",
                     "mremap fixed", "mremap fixed-dontunmap", "mremap dontunmap", "mremap invalid", "mlock", "mlock2", "mlock2 onfault", "munlock",
                     "mlockall 5", "mlockall 6", "mlockall 7", "munlockall", "madvise MADV_GUARD_INSTALL", "madvise MADV_GUARD_REMOVE",
                     "mseal", "mmap droppable", "madvise MADV_DONTFORK", "madvise MADV_WIPEONFORK", "madvise MADV_KEEPONFORK", "madvise MADV_MERGEABLE" })
        {
            Assert.Contains(k, kinds);
        }
    }

    /// <summary>Guard advice is drawn only for a host that has guard regions as the model has them.</summary>
    [Fact]
    public void GuardAdviceIsDrawnOnlyWhereAllowed()
    {
        foreach (bool allow in new[] { false, true })
        {
            var g = new OpGenerator(new Random(11), Slot) { AllowGuard = allow };
            int guards = Enumerable.Range(0, 20_000).Select(_ => g.Advice()).Count(a => a is 102 or 103);
            Assert.True(allow ? guards > 0 : guards == 0, $"AllowGuard {allow}: {guards} guard advices in 20000 draws");
        }
    }

    /// <summary>The executor's checks of a generated operation's ranges.</summary>
    private static void AssertInSlotOrWraps(FuzzOp op)
    {
        if (op.Args.Count < 2)
        {
            return; // mlockall, munlockall: no range
        }

        ulong addr = op.Args[0], len = op.Args[1];
        switch (op.Kind.Name)
        {
            case "mlock" or "mlock2":
            case "madvise" when op.Args[2] is 22 or 23:
                Assert.True(InSlotOrWraps(addr, len), $"{op.Format(Slot)} leaves the slot");
                Assert.True(len <= 1UL << 20 || addr + len < addr, $"{op.Format(Slot)} would fault in more than 1 MiB");
                break;
            case "mmap" when (op.Args[3] & 0x100010) != 0:
            case "munmap" or "mprotect" or "madvise" or "munlock":
                Assert.True(InSlotOrWraps(addr, len), $"{op.Format(Slot)} leaves the slot");
                break;
            case "mremap":
                Assert.True(InSlotOrWraps(addr, len), $"{op.Format(Slot)} leaves the slot");
                Assert.True((op.Args[3] & 6) == 0 || InSlotOrWraps(op.Args[4], op.Args[2]), $"{op.Format(Slot)} moves out of the slot");
                break;
            case "read" or "write":
                Assert.True(addr >= Slot && len <= Slot + FuzzText.SlotSize - addr, $"{op.Format(Slot)} leaves the slot");
                Assert.InRange(len, 1UL, 4UL << 20);
                break;
        }
    }

    // What the executor accepts: every named range inside the slot, or one that wraps past 2^64.
    private static bool InSlotOrWraps(ulong addr, ulong len)
    {
        ulong aligned = (len + 4095) & ~4095UL;
        if (len != 0 && (aligned == 0 || addr + aligned < addr))
        {
            return true;
        }

        return addr >= Slot && addr <= Slot + FuzzText.SlotSize && aligned <= Slot + FuzzText.SlotSize - addr;
    }

    /// <summary>
    /// The generator's range checks across many seeds and both modes, with and without a mapping
    /// above. (A campaign once drew a MAP_FIXED mmap from an unaligned address with the rest of the
    /// slot as its length, which the executor's page rounding took past the slot's end; these draws
    /// do not meet that case, which `fuzz kernel --collapse --seed 107` did.)
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EveryDrawOfManySeedsStaysInTheSlotOrWraps(bool collapse)
    {
        // With nothing mapped above an address, a length "to the next edge" reaches the slot's end.
        var layout = new List<VmaLine> { new(Slot + 0x200000, Slot + 0x600000, "rw-p") };
        for (int seed = 0; seed < 40; seed++)
        {
            var g = new OpGenerator(new Random(seed), Slot) { AllowLocked = true, Collapse = collapse, Layout = seed % 2 == 0 ? layout : [] };
            for (int i = 0; i < 5_000; i++)
            {
                AssertInSlotOrWraps(g.Next());
            }
        }
    }
}
