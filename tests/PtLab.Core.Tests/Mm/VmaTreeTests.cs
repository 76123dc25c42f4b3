using CsCheck;
using PtLab.Mm;

namespace PtLab.Tests.Mm;

/// <summary>
/// The VMA store against a sorted list: random insertions, removals and boundary moves, with
/// find_vma and the highest-gap search compared to a linear scan after every step.
/// </summary>
public class VmaTreeTests
{
    private const ulong Page = 4096;
    private const int Pages = 4096;

    private enum Kind { Insert, Remove, MoveEnd, MoveStart, Query }

    private static readonly Gen<(Kind Kind, int A, int B, int C)> s_op =
        Gen.Select(Gen.Frequency((5, Gen.Const(Kind.Insert)), (2, Gen.Const(Kind.Remove)), (1, Gen.Const(Kind.MoveEnd)),
                (1, Gen.Const(Kind.MoveStart)), (3, Gen.Const(Kind.Query))),
            Gen.Int[0, Pages - 1], Gen.Int[1, 64], Gen.Int[0, Pages - 1]);

    [Fact]
    public void TheTreeAgreesWithASortedListOverRandomChanges()
    {
        s_op.Array[1, 200].Sample(ops =>
        {
            var tree = new VmaTree();
            var list = new List<Vma>();
            foreach (var (kind, a, b, c) in ops)
            {
                switch (kind)
                {
                    case Kind.Insert:
                        {
                            ulong start = (ulong)a * Page, end = start + ((ulong)b * Page);
                            if (!list.Any(v => v.Start < end && v.End > start))
                            {
                                var v = new Vma(start, end, VmFlags.Read, null, (ulong)a);
                                tree.Insert(v);
                                list.Add(v);
                                list.Sort((x, y) => x.Start.CompareTo(y.Start));
                            }

                            break;
                        }

                    case Kind.Remove when list.Count > 0:
                        {
                            var v = list[a % list.Count];
                            tree.Remove(v);
                            list.Remove(v);
                            break;
                        }

                    case Kind.MoveEnd when list.Count > 0:
                        {
                            int i = a % list.Count;
                            var v = list[i];
                            ulong limit = i + 1 < list.Count ? list[i + 1].Start : (ulong)Pages * Page * 2;
                            ulong end = Math.Min(limit, v.Start + ((ulong)b * Page));
                            tree.SetEnd(v, end);
                            break;
                        }

                    case Kind.MoveStart when list.Count > 0:
                        {
                            int i = a % list.Count;
                            var v = list[i];
                            ulong floor = i > 0 ? list[i - 1].End : 0;
                            ulong want = v.End > (ulong)b * Page ? v.End - ((ulong)b * Page) : 0;
                            tree.SetStart(v, Math.Max(floor, want));
                            break;
                        }

                    case Kind.Query:
                        {
                            ulong addr = (ulong)c * Page;
                            Assert.Same(list.FirstOrDefault(v => v.End > addr), tree.Find(addr));
                            ulong low = (ulong)Math.Min(a, c) * Page, high = (ulong)Math.Max(a, c) * Page + Page;
                            ulong length = (ulong)b * Page;
                            bool found = tree.HighestGap(low, high, length, out ulong gs, out ulong ge);
                            var expected = HighestGapByScan(list, low, high, length);
                            Assert.Equal(expected.HasValue, found);
                            if (found)
                            {
                                Assert.Equal(expected!.Value, (gs, ge));
                            }

                            break;
                        }
                }

                tree.Validate();
                Assert.Equal(list.Count, tree.Count);
                Assert.Equal((ulong)list.Sum(v => (long)v.Length), tree.TotalBytes);
            }
        }, iter: 300);
    }

    private static (ulong, ulong)? HighestGapByScan(List<Vma> list, ulong low, ulong high, ulong length)
    {
        for (int i = list.Count; i >= 0; i--)
        {
            ulong gs = Math.Max(i > 0 ? list[i - 1].End : 0, low);
            ulong ge = Math.Min(i < list.Count ? list[i].Start : ulong.MaxValue, high);
            if (ge > gs && ge - gs >= length)
            {
                return (gs, ge);
            }
        }

        return null;
    }

    [Fact]
    public void TopDownMappingsOfAlternatingProtectionPlaceInLogarithmicTimeAndStaySeparate()
    {
        // 20,000 one-page mappings of alternating protection, each placed below the last: a linear
        // gap search would be quadratic; the tree's augmented search stays logarithmic.
        using var s = new Sim(pageData: false);
        ulong prev = ulong.MaxValue;
        for (int i = 0; i < 20_000; i++)
        {
            ulong a = s.Map(Sim.K4, i % 2 == 0 ? Sim.Rw : Prot.Read, Sim.Anon | MapFlags.NoReserve);
            Assert.Equal(prev == ulong.MaxValue ? a : prev - Sim.K4, a);
            prev = a;
        }

        Assert.Equal(20_000, s.Mm.MapCount);
        Assert.Equal(Errno.None, s.Mm.Mprotect(s.Cpu, prev, 20_000 * Sim.K4, Prot.Read));
        Assert.Equal(1, s.Mm.MapCount); // all merged back into one
        s.Mm.ValidateVmas();
    }
}
