using PtLab.Phys;

namespace PtLab.Tests.Storage;

public class ByteContentStoreTests
{
    // Frames of two chunks, at both ends of a chunk and in its middle.
    private static readonly long[] s_frames = [0, 1, 31, 63, 64, 127];

    [Fact]
    public void PagesReadBackWhatWasWrittenAsWholePagesWould()
    {
        var store = new ByteContentStore();
        var pages = s_frames.ToDictionary(f => f, _ => new byte[PhysMemory.PageSize]);
        var rng = new Random(7);
        for (int i = 0; i < 400; i++)
        {
            long pfn = s_frames[rng.Next(s_frames.Length)];
            int offset = rng.Next(PhysMemory.PageSize);
            int length = rng.Next(4) switch
            {
                0 => 1,
                1 => rng.Next(1, 130),
                2 => 0,
                _ => rng.Next(PhysMemory.PageSize - offset + 1),
            };
            length = Math.Min(length, PhysMemory.PageSize - offset);
            var data = new byte[length];
            rng.NextBytes(data);
            switch (rng.Next(10))
            {
                case 0:
                    store.Zero(pfn);
                    Array.Clear(pages[pfn]);
                    break;
                case 1:
                    long dst = s_frames[rng.Next(s_frames.Length)];
                    if (dst == pfn)
                    {
                        continue; // copy_page never copies a frame onto itself
                    }

                    store.Copy(pfn, dst);
                    pages[pfn].CopyTo(pages[dst], 0);
                    break;
                default:
                    store.Write(pfn, offset, data);
                    data.CopyTo(pages[pfn], offset);
                    break;
            }

            foreach (long f in s_frames)
            {
                var whole = new byte[PhysMemory.PageSize];
                store.Read(f, 0, whole);
                Assert.Equal(pages[f], whole);
                var piece = new byte[length];
                store.Read(f, offset, piece);
                Assert.Equal(pages[f].AsSpan(offset, length).ToArray(), piece);
                ulong expected = pages[f].AsSpan().ContainsAnyExcept((byte)0) ? ContentToken.Hash(pages[f], 0) : 0;
                Assert.Equal(expected, store.Token(f));
            }
        }
    }

    [Fact]
    public void AFrameNeverWrittenReadsAsZerosAndHasNoToken()
    {
        var store = new ByteContentStore();
        store.Write(1, 100, [7]);
        var page = new byte[PhysMemory.PageSize];
        page.AsSpan().Fill(0xFF);
        store.Read(2, 0, page); // same chunk, never written
        Assert.All(page, b => Assert.Equal(0, b));
        Assert.Equal(0UL, store.Token(2));
        Assert.Equal(0UL, store.Token(5000)); // a chunk never made
        store.Zero(1);
        Assert.Equal(0UL, store.Token(1));
    }

    [Fact]
    public void ARangeBeyondThePageIsRefused()
    {
        var store = new ByteContentStore();
        Assert.Throws<ArgumentOutOfRangeException>(() => store.Write(3, PhysMemory.PageSize - 1, [1, 2]));
        store.Write(3, 0, [1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => store.Read(3, PhysMemory.PageSize - 1, new byte[2]));
    }
}
