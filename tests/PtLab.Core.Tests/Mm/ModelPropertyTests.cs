using CsCheck;
using PtLab.Mm;
using PtLab.Paging;
using FaultOutcome = PtLab.Mm.FaultOutcome;

namespace PtLab.Tests.Mm;

/// <summary>
/// Random sequences of mmap/munmap/mprotect/madvise (DONTNEED, FREE, HUGEPAGE, POPULATE_WRITE),
/// mremap moves and read/write against the model and a plain reference (page number to protection
/// and bytes), with transparent huge pages in MADV_HUGEPAGE ranges, checking after every step that reads agree,
/// that VmPTE equals the tables present, and that VmRSS equals the present private pages; and
/// after teardown, that no frame leaked.
/// </summary>
public class ModelPropertyTests
{
    private const ulong ArenaBase = 0x40000000UL - (2UL << 20); // straddles a 1 GiB boundary
    private const int ArenaPages = 1536;                          // 6 MiB: three PMD ranges

    private enum Kind { Map, Unmap, Protect, DontNeed, Free, Write, Read, HugePage, Move, Populate }

    private sealed record Op(Kind Kind, int Page, int Pages, Prot Prot, byte Seed, int Offset)
    {
        /// <summary>A move's destination page: the offset, scaled over the arena.</summary>
        public int Destination => Offset * ArenaPages / 4096;
    }

    private static readonly Gen<Op> s_op =
        Gen.Select(
            Gen.Enum<Kind>(),
            Gen.Int[0, ArenaPages - 1],
            Gen.Frequency((3, Gen.Int[1, 4]), (2, Gen.Int[1, 64]), (1, Gen.Int[1, 700])),
            Gen.OneOfConst(Prot.Read | Prot.Write, Prot.Read, Prot.None, Prot.Write),
            Gen.Byte,
            Gen.Int[0, 4095])
        .Select(t => new Op(t.Item1, t.Item2, Math.Min(t.Item3, ArenaPages - t.Item2), t.Item4, t.Item5, t.Item6));

    [Fact]
    public void TheModelAgreesWithASimpleReferenceOverRandomOperationSequences()
    {
        s_op.Array[1, 60].Sample(ops => Run(ops, pageData: true), iter: 400);
    }

    [Fact]
    public void TheModelAgreesWithTheReferenceWhenTheArenaStartsAsTransparentHugePages()
    {
        // The whole arena mapped and MADV_HUGEPAGE first, so faults map PMD leaves that the random
        // operations then split (partial munmap, mprotect, DONTNEED, FREE), move and zap whole.
        long huge = 0, splits = 0;
        s_op.Array[1, 40].Sample(ops =>
        {
            var (h, sp) = Run(ops, pageData: true, hugeArena: true);
            Interlocked.Add(ref huge, h);
            Interlocked.Add(ref splits, sp);
        }, iter: 150);
        Assert.True(huge > 0 && splits > 0, $"the sample made {huge} huge pages and {splits} splits");
    }

    [Fact]
    public void TokenModeReadsBackTheTokensOfTheWritesThatMadeThem()
    {
        s_op.Array[1, 40].Sample(ops => RunTokens(ops), iter: 100);
    }

    private static (long HugePages, long Splits) Run(Op[] ops, bool pageData, bool hugeArena = false)
    {
        using var s = new Sim(ramBytes: 64L << 20, pageData: pageData);
        var prot = new Dictionary<ulong, Prot>();
        var data = new Dictionary<ulong, byte[]>();
        if (hugeArena)
        {
            ulong all = (ulong)ArenaPages * Sim.K4;
            s.Map(all, addr: ArenaBase, flags: Sim.Anon | MapFlags.Fixed);
            Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, ArenaBase, all, Advice.HugePage));
            for (ulong p = 0; p < (ulong)ArenaPages; p++)
            {
                prot[ArenaBase + (p * Sim.K4)] = Sim.Rw;
            }
        }

        foreach (var op in ops)
        {
            ulong start = ArenaBase + ((ulong)op.Page * Sim.K4);
            ulong len = (ulong)op.Pages * Sim.K4;
            switch (op.Kind)
            {
                case Kind.Map:
                    Assert.True(s.Mm.Mmap(s.Cpu, start, len, op.Prot, Sim.Anon | MapFlags.Fixed).Ok);
                    for (ulong p = 0; p < (ulong)op.Pages; p++)
                    {
                        prot[start + (p * Sim.K4)] = op.Prot;
                        data.Remove(start + (p * Sim.K4));
                    }

                    break;
                case Kind.Unmap:
                    Assert.Equal(Errno.None, s.Mm.Munmap(s.Cpu, start, len));
                    for (ulong p = 0; p < (ulong)op.Pages; p++)
                    {
                        prot.Remove(start + (p * Sim.K4));
                        data.Remove(start + (p * Sim.K4));
                    }

                    break;
                case Kind.Protect:
                    {
                        Errno expected = Errno.None;
                        for (ulong p = 0; p < (ulong)op.Pages; p++)
                        {
                            ulong page = start + (p * Sim.K4);
                            if (!prot.ContainsKey(page))
                            {
                                expected = Errno.ENOMEM;
                                break;
                            }

                            prot[page] = op.Prot;
                        }

                        Assert.Equal(expected, s.Mm.Mprotect(s.Cpu, start, len, op.Prot));
                        break;
                    }

                case Kind.DontNeed:
                case Kind.Free:
                    {
                        bool any = false, hole = false;
                        for (ulong p = 0; p < (ulong)op.Pages; p++)
                        {
                            ulong page = start + (p * Sim.K4);
                            if (prot.ContainsKey(page))
                            {
                                any = true;
                                if (op.Kind == Kind.DontNeed)
                                {
                                    data.Remove(page);
                                }
                            }
                            else
                            {
                                hole = true;
                            }
                        }

                        var advice = op.Kind == Kind.DontNeed ? Advice.DontNeed : Advice.Free;
                        Assert.Equal(any && !hole ? Errno.None : Errno.ENOMEM, s.Mm.Madvise(s.Cpu, start, len, advice));
                        break;
                    }

                case Kind.HugePage:
                    {
                        bool any = false, hole = false;
                        for (ulong p = 0; p < (ulong)op.Pages; p++)
                        {
                            bool mapped = prot.ContainsKey(start + (p * Sim.K4));
                            any |= mapped;
                            hole |= !mapped;
                        }

                        Assert.Equal(any && !hole ? Errno.None : Errno.ENOMEM, s.Mm.Madvise(s.Cpu, start, len, Advice.HugePage));
                        break;
                    }

                case Kind.Populate:
                    {
                        // madvise_populate: the first page that is unmapped (ENOMEM) or not writable (EINVAL) stops it.
                        Errno expected = Errno.None;
                        for (ulong p = 0; p < (ulong)op.Pages; p++)
                        {
                            if (!prot.TryGetValue(start + (p * Sim.K4), out var pp))
                            {
                                expected = Errno.ENOMEM;
                                break;
                            }

                            if ((pp & Prot.Write) == 0)
                            {
                                expected = Errno.EINVAL;
                                break;
                            }
                        }

                        Assert.Equal(expected, s.Mm.Madvise(s.Cpu, start, len, Advice.PopulateWrite));
                        break;
                    }

                case Kind.Move:
                    {
                        // mremap(MREMAP_MAYMOVE | MREMAP_FIXED) of a fully mapped range to another place in the arena.
                        ulong dest = ArenaBase + ((ulong)Math.Min(op.Destination, ArenaPages - op.Pages) * Sim.K4);
                        bool mappedWhole = Enumerable.Range(0, op.Pages).All(p => prot.ContainsKey(start + ((ulong)p * Sim.K4)));
                        if (!mappedWhole)
                        {
                            break;
                        }

                        bool overlaps = start < dest + len && dest < start + len;
                        var r = s.Mm.Mremap(s.Cpu, start, len, len, MremapFlags.MayMove | MremapFlags.Fixed, dest);
                        if (overlaps)
                        {
                            Assert.Equal(Errno.EINVAL, r.Error);
                            break;
                        }

                        Assert.Equal(dest, r.Address);
                        var movedProt = new Prot[op.Pages];
                        var movedData = new byte[]?[op.Pages];
                        for (int p = 0; p < op.Pages; p++)
                        {
                            ulong from = start + ((ulong)p * Sim.K4);
                            movedProt[p] = prot[from];
                            movedData[p] = data.GetValueOrDefault(from);
                            prot.Remove(from);
                            data.Remove(from);
                        }

                        for (int p = 0; p < op.Pages; p++)
                        {
                            ulong to = dest + ((ulong)p * Sim.K4);
                            prot[to] = movedProt[p];
                            data.Remove(to);
                            if (movedData[p] is { } bytes)
                            {
                                data[to] = bytes;
                            }
                        }

                        break;
                    }

                case Kind.Write:
                    {
                        ulong va = start + (ulong)op.Offset;
                        var bytes = Enumerable.Range(0, Math.Min(op.Pages * 37, 9000)).Select(i => (byte)(op.Seed + i)).ToArray();
                        var r = s.Cpu.Write(va, bytes);
                        var (outcome, at) = ApplyWrite(prot, data, va, bytes);
                        Assert.Equal(outcome, r.Outcome);
                        if (outcome != FaultOutcome.Ok)
                        {
                            Assert.Equal(at, r.Address);
                        }

                        break;
                    }

                case Kind.Read:
                    {
                        ulong va = start + (ulong)op.Offset;
                        var buf = new byte[Math.Min(op.Pages * 29, 9000)];
                        var r = s.Cpu.Read(va, buf);
                        var (outcome, expect) = ExpectRead(prot, data, va, buf.Length);
                        Assert.Equal(outcome, r.Outcome);
                        if (outcome == FaultOutcome.Ok)
                        {
                            Assert.Equal(expect, buf);
                        }

                        break;
                    }
            }

            s.AssertAccountingConsistent();
            AssertRssMatchesPresentPages(s);
        }

        var thp = s.Mm.ThpCounters();
        s.Dispose();
        Assert.Equal(s.Machine.Phys.ReservedFrames, s.Machine.Phys.UsedFrames); // only the zero pages
        return (thp.FaultAlloc + thp.ZeroPageMapped, thp.SplitPmd);
    }

    private static void RunTokens(Op[] ops)
    {
        using var s = new Sim(ramBytes: 64L << 20, pageData: false);
        ulong a = s.Map((ulong)ArenaPages * Sim.K4, addr: ArenaBase, flags: Sim.Anon | MapFlags.Fixed);
        var tokens = new Dictionary<ulong, ulong>();
        foreach (var op in ops)
        {
            ulong page = a + ((ulong)op.Page * Sim.K4);
            if (op.Kind is Kind.DontNeed or Kind.Unmap or Kind.Map)
            {
                Assert.Equal(Errno.None, s.Mm.Madvise(s.Cpu, page, Sim.K4, Advice.DontNeed));
                tokens.Remove(page);
                continue;
            }

            var bytes = new[] { op.Seed, (byte)op.Pages };
            int off = Math.Min(op.Offset, 4094);
            Assert.True(s.Cpu.Write(page + (ulong)off, bytes).Ok);
            tokens[page] = Phys.ContentToken.AfterWrite(tokens.GetValueOrDefault(page), off, bytes);
            Assert.True(s.Cpu.ReadToken(page, out ulong t).Ok);
            Assert.Equal(tokens[page], t);
        }

        foreach (var (page, token) in tokens)
        {
            Assert.True(s.Cpu.ReadToken(page, out ulong t).Ok);
            Assert.Equal(token, t);
        }
    }

    private static (FaultOutcome, ulong) ApplyWrite(Dictionary<ulong, Prot> prot, Dictionary<ulong, byte[]> data, ulong va, byte[] bytes)
    {
        int done = 0;
        while (done < bytes.Length)
        {
            ulong page = (va + (ulong)done) & Geometry.PageMask;
            if (!prot.TryGetValue(page, out var p))
            {
                return (FaultOutcome.SegvMapErr, va + (ulong)done);
            }

            if ((p & Prot.Write) == 0)
            {
                return (FaultOutcome.SegvAccErr, va + (ulong)done);
            }

            int off = (int)((va + (ulong)done) - page);
            int n = Math.Min(4096 - off, bytes.Length - done);
            if (!data.TryGetValue(page, out var content))
            {
                content = new byte[4096];
                data[page] = content;
            }

            Array.Copy(bytes, done, content, off, n);
            done += n;
        }

        return (FaultOutcome.Ok, 0);
    }

    private static (FaultOutcome, byte[]) ExpectRead(Dictionary<ulong, Prot> prot, Dictionary<ulong, byte[]> data, ulong va, int length)
    {
        var result = new byte[length];
        int done = 0;
        while (done < length)
        {
            ulong page = (va + (ulong)done) & Geometry.PageMask;
            if (!prot.TryGetValue(page, out var p))
            {
                return (FaultOutcome.SegvMapErr, result);
            }

            if (p == Prot.None)
            {
                return (FaultOutcome.SegvAccErr, result);
            }

            int off = (int)((va + (ulong)done) - page);
            int n = Math.Min(4096 - off, length - done);
            if (data.TryGetValue(page, out var content))
            {
                Array.Copy(content, off, result, done, n);
            }

            done += n;
        }

        return (FaultOutcome.Ok, result);
    }

    private static void AssertRssMatchesPresentPages(Sim s)
    {
        long present = 0;
        for (ulong va = ArenaBase; va < ArenaBase + ((ulong)ArenaPages * Sim.K4); va += Sim.K4)
        {
            ulong e = s.Mm.PeekPte(va);
            if (Entry.IsPresent(e) && !Entry.IsSpecial(e))
            {
                present++;
            }
        }

        Assert.Equal(present * 4, s.Mm.Status().RssAnonKb);
    }
}
