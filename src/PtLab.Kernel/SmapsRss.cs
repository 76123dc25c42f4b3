namespace PtLab.Kernel;

/// <summary>
/// The RSS counters of one address range of this process, from <c>/proc/self/smaps</c>, read
/// without allocating on the managed heap: a caller that compares this process's page tables
/// must not grow the runtime's heap (and so its page tables) by reading them.
/// </summary>
/// <remarks>
/// smaps walks each VMA's page tables and counts what <c>vm_normal_page</c> finds
/// (<c>smaps_pte_entry</c> in <c>fs/proc/task_mmu.c</c>), so zero-page entries count nowhere, as
/// in the mm's RSS counters. A VMA's <c>Anonymous</c> pages are RssAnon; the rest of its
/// <c>Rss</c> is RssShmem for shmem (shared anonymous memory, a memfd, a SysV segment) and RssFile
/// otherwise. A file on tmpfs mapped by name would be counted as RssFile here; the kernel target
/// keeps its files on a disk-backed file system.
/// </remarks>
internal static unsafe class SmapsRss
{
    private static readonly Lock Gate = new();
    private static byte[] _buffer = new byte[1 << 20];

    /// <summary>RssAnon, RssFile and RssShmem of the VMAs that meet [start, end), in kB.</summary>
    public static (long Anon, long File, long Shmem) In(ulong start, ulong end)
    {
        lock (Gate)
        {
            int length = ReadAll();
            return Sum(_buffer.AsSpan(0, length), start, end);
        }
    }

    /// <summary>Sums the counters of the VMAs of smaps <paramref name="text"/> that meet [start, end).</summary>
    internal static (long Anon, long File, long Shmem) Sum(ReadOnlySpan<byte> text, ulong start, ulong end)
    {
        long anon = 0, file = 0, shmem = 0, rss = 0, anonymous = 0;
        bool inside = false, isShmem = false;
        void Close()
        {
            if (inside)
            {
                anon += anonymous;
                if (isShmem)
                {
                    shmem += rss - anonymous;
                }
                else
                {
                    file += rss - anonymous;
                }
            }
        }

        while (text.Length > 0)
        {
            int nl = text.IndexOf((byte)'\n');
            var line = nl < 0 ? text : text[..nl];
            text = nl < 0 ? default : text[(nl + 1)..];
            if (TryHeader(line, out ulong lo, out ulong hi, out var name))
            {
                Close();
                inside = lo < end && hi > start;
                isShmem = IsShmem(name);
                rss = anonymous = 0;
            }
            else if (inside && line.StartsWith("Rss:"u8))
            {
                rss = Kb(line);
            }
            else if (inside && line.StartsWith("Anonymous:"u8))
            {
                anonymous = Kb(line);
            }
        }

        Close();
        return (anon, file, shmem);
    }

    // The whole file, through one descriptor read to its end (a seq_file gives a consistent
    // record per VMA, and pread at other offsets would restart its walk).
    private static int ReadAll()
    {
        int fd = LibC.Open("/proc/self/smaps", LibC.OpenReadOnly);
        if (fd < 0)
        {
            throw new IOException($"/proc/self/smaps: {LinuxErrno.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }

        try
        {
            int length = 0;
            while (true)
            {
                if (length == _buffer.Length)
                {
                    Array.Resize(ref _buffer, _buffer.Length * 2);
                }

                nint n;
                fixed (byte* p = &_buffer[length])
                {
                    n = LibC.Read(fd, p, (nuint)(_buffer.Length - length));
                }

                if (n < 0)
                {
                    throw new IOException($"/proc/self/smaps: {LinuxErrno.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
                }

                if (n == 0)
                {
                    return length;
                }

                length += (int)n;
            }
        }
        finally
        {
            LibC.Close(fd);
        }
    }

    // "start-end perms offset dev inode   name": the name is what follows the fifth field.
    private static bool TryHeader(ReadOnlySpan<byte> line, out ulong lo, out ulong hi, out ReadOnlySpan<byte> name)
    {
        lo = hi = 0;
        name = default;
        int dash = line.IndexOf((byte)'-');
        int space = line.IndexOf((byte)' ');
        if (dash <= 0 || space < dash || !Hex(line[..dash], out lo) || !Hex(line[(dash + 1)..space], out hi))
        {
            return false;
        }

        var rest = line[(space + 1)..];
        for (int field = 0; field < 4; field++)
        {
            rest = rest.TrimStart((byte)' ');
            int next = rest.IndexOf((byte)' ');
            rest = next < 0 ? default : rest[next..];
        }

        name = rest.TrimStart((byte)' ');
        return true;
    }

    private static bool Hex(ReadOnlySpan<byte> digits, out ulong value)
    {
        value = 0;
        if (digits.Length is 0 or > 16)
        {
            return false;
        }

        foreach (byte b in digits)
        {
            int d = b is >= (byte)'0' and <= (byte)'9' ? b - '0' : b is >= (byte)'a' and <= (byte)'f' ? b - 'a' + 10 : -1;
            if (d < 0)
            {
                return false;
            }

            value = (value << 4) | (uint)d;
        }

        return true;
    }

    // "Name:   1234 kB"
    private static long Kb(ReadOnlySpan<byte> line)
    {
        long v = 0;
        foreach (byte b in line[(line.IndexOf((byte)':') + 1)..])
        {
            if (b is >= (byte)'0' and <= (byte)'9')
            {
                v = (v * 10) + (b - '0');
            }
            else if (b != ' ' || v != 0)
            {
                break;
            }
        }

        return v;
    }

    /// <summary>Whether a maps name is shmem's: shared anonymous memory (<c>/dev/zero (deleted)</c>, or named by prctl), a memfd or a SysV segment.</summary>
    private static bool IsShmem(ReadOnlySpan<byte> name) =>
        name.StartsWith("/dev/zero"u8) || name.StartsWith("[anon_shmem:"u8) || name.StartsWith("/memfd:"u8) || name.StartsWith("/SYSV"u8);
}
