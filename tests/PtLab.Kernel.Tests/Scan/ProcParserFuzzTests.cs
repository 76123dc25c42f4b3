using System.Globalization;
using CsCheck;
using PtLab.Kernel.Scan;

namespace PtLab.Kernel.Tests.Scan;

/// <summary>The /proc parsers the scanner trusts: malformed text of any shape gives an error naming the line, never an exception.</summary>
public sealed class ProcParserFuzzTests
{
    private static readonly string s_maps = string.Join('\n',
        "55d1c0a00000-55d1c0a02000 r--p 00000000 fe:00 247629                     /usr/bin/cat",
        "55d1c0a02000-55d1c0a07000 r-xp 00002000 fe:00 247629                     /usr/bin/cat",
        "55d1c1e6f000-55d1c1e90000 rw-p 00000000 00:00 0                          [heap]",
        "7f2a4c000000-7f2a4c021000 rw-p 00000000 00:00 0 ",
        "7f2a4fe00000-7f2a50000000 rw-s 00000000 00:01 1055                       /memfd:ptlab (deleted)",
        "7f2a50e3e000-7f2a50e40000 r--p 00000000 00:00 0                          [anon:glibc: loader malloc]",
        "7ffd8b5e1000-7ffd8b602000 rw-p 00000000 00:00 0                          [stack]",
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]") + "\n";

    private static readonly string s_smapsBlock =
        "7f2a4c000000-7f2a4c021000 rw-p 00000000 00:00 0 \nSize:                132 kB\nKernelPageSize:        4 kB\nRss:                   8 kB\n" +
        "AnonHugePages:         0 kB\nTHPeligible:           0\nVmFlags: rd wr mr mw me ac sd \n";

    private static readonly string s_status =
        "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\nPid:\t4242\nKthread:\t0\nVmSize:\t    5520 kB\nVmRSS:\t    1920 kB\n" +
        "RssAnon:\t     128 kB\nRssFile:\t    1792 kB\nRssShmem:\t       0 kB\nVmPTE:\t      52 kB\nVmSwap:\t       0 kB\nThreads:\t1\n";

    /// <summary>A real-looking text with a few characters deleted, inserted or replaced, and lines cut or doubled.</summary>
    private static Gen<string> Mutated(string seed) =>
        Gen.Select(Gen.Int[0, 12].Array, Gen.Int[0, 1_000_000].Array, Gen.Char["0123456789abcdef-: \n\tkBxp/[]()rwx"].Array, (ops, positions, chars) =>
        {
            var sb = new System.Text.StringBuilder(seed);
            for (int i = 0; i < ops.Length && sb.Length > 0; i++)
            {
                int at = positions.Length == 0 ? 0 : positions[i % positions.Length] % sb.Length;
                char c = chars.Length == 0 ? ' ' : chars[i % chars.Length];
                switch (ops[i] % 5)
                {
                    case 0: sb.Remove(at, 1); break;
                    case 1: sb.Insert(at, c); break;
                    case 2: sb[at] = c; break;
                    case 3: sb.Length = at; break;
                    default: sb.Insert(at, sb.ToString(0, Math.Min(40, sb.Length - at))); break;
                }
            }

            return sb.ToString();
        });

    private static readonly Gen<string> s_noise = Gen.String[Gen.Char["0123456789abcdef-: \n\tkBpsrwx/[]"], 0, 400];

    [Fact]
    public void MapsParsingNeverThrowsAndNamesTheBadLine()
    {
        Assert.True(ProcMaps.TryParseEntries(s_maps, out var good, out _));
        Assert.Equal(8, good.Count);
        Gen.OneOf(Mutated(s_maps), s_noise).Sample(text =>
        {
            if (!ProcMaps.TryParseEntries(text, out var entries, out string? error))
            {
                Assert.StartsWith("line ", error);
            }
            else
            {
                Assert.All(entries, e => Assert.True(e.End > e.Start));
            }
        }, iter: 20_000);
    }

    [Fact]
    public void ValidMapsLinesRoundTrip()
    {
        var line = Gen.Select(Gen.ULong[0, 1UL << 35], Gen.ULong[1, 1UL << 20], Gen.Char["rwxps-"].Array[4], Gen.String[Gen.Char["abc/ ._[]:"], 0, 30],
            (page, pages, perms, name) => (Start: page << 12, End: (page + pages) << 12, Name: name.Trim()));
        line.Sample(l =>
        {
            string text = string.Create(CultureInfo.InvariantCulture, $"{l.Start:x}-{l.End:x} rw-p 00001000 fe:01 77    {l.Name}");
            Assert.True(ProcMaps.TryParseLine(text, out var e));
            Assert.Equal((l.Start, l.End, "rw-p", 0x1000UL, "fe:01", 77UL, l.Name), (e.Start, e.End, e.Perms, e.Offset, e.Device, e.Inode, e.Name));
        }, iter: 5_000);
    }

    [Fact]
    public void SmapsParsingNeverThrowsAndReadsVmFlags()
    {
        Assert.True(ProcSmaps.TryParse(s_smapsBlock + s_smapsBlock.Replace("7f2a4c000000-7f2a4c021000", "7f2a4d000000-7f2a4d200000", StringComparison.Ordinal), out var good, out _));
        Assert.Equal(2, good.Count);
        Assert.Equal(8, good[0].FieldsKb["Rss"]);
        Assert.Contains("sd", good[0].VmFlags);
        Gen.OneOf(Mutated(s_smapsBlock + s_smapsBlock), s_noise).Sample(text =>
        {
            if (!ProcSmaps.TryParse(text, out _, out string? error))
            {
                Assert.StartsWith("line ", error);
            }
        }, iter: 20_000);
    }

    [Fact]
    public void StatusParsingNeverThrowsAndNamesTheBadField()
    {
        Assert.True(ProcStatus.TryParseProcess(s_status, out var good, out _));
        Assert.Equal(("cat", 4242, false, 52L), (good.Name, good.Tgid, good.IsKernelThread, good.Memory!.Value.VmPteKb));
        Assert.True(ProcStatus.TryParseProcess("Name:\tkthreadd\nTgid:\t2\nKthread:\t1\n", out var kthread, out _));
        Assert.True(kthread.IsKernelThread);
        Gen.OneOf(Mutated(s_status), s_noise).Sample(text =>
        {
            if (!ProcStatus.TryParseProcess(text, out _, out string? error))
            {
                Assert.False(string.IsNullOrWhiteSpace(error));
            }
        }, iter: 20_000);
    }
}
