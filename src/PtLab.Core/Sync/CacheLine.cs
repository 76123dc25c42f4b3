using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PtLab.Sync;

/// <summary>
/// The one padding vocabulary of PtLab, after the runtime's <c>PaddingHelpers</c> and BitFaster's
/// <c>PaddedLong</c>: a word that one CPU writes while others read or write its neighbours gets a
/// cache line of its own, so no write to a neighbour invalidates it (false sharing).
/// </summary>
public static class CacheLine
{
    /// <summary>Bytes in a cache line on x86-64.</summary>
    public const int Size = 64;
}

/// <summary>
/// A value alone on its cache line: a whole line of padding before it and after it, so two cells
/// side by side in an array, or a cell and the fields around it in an object, never share a line.
/// Works on arrays in place (<c>ref cells[cpu].Value</c>); the operations for counters are in
/// <see cref="PaddedCell"/>.
/// </summary>
/// <typeparam name="T">The value; unmanaged, so the layout stays sequential.</typeparam>
[StructLayout(LayoutKind.Sequential)]
public struct Padded<T>
    where T : unmanaged
{
    private CacheLinePad _before;

    /// <summary>The value.</summary>
    public T Value;

    private CacheLinePad _after;
}

/// <summary>The operations on a padded counter cell (<c>this_cpu_*</c> and friends).</summary>
public static class PaddedCell
{
    /// <summary>Reads the counter (<c>READ_ONCE</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Read(ref this Padded<long> cell) => Volatile.Read(ref cell.Value);

    /// <summary>Writes the counter (<c>WRITE_ONCE</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(ref this Padded<long> cell, long value) => Volatile.Write(ref cell.Value, value);

    /// <summary>
    /// <c>this_cpu_add</c>: a plain read-modify-write, for a cell only its owner CPU writes (a CPU is
    /// driven by one thread at a time); readers sum the cells with <see cref="Read"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddOwned(ref this Padded<long> cell, long delta) => Volatile.Write(ref cell.Value, cell.Value + delta);

    /// <summary>An atomic add, for a cell any thread may write. Returns the new value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long AddAtomic(ref this Padded<long> cell, long delta) => Interlocked.Add(ref cell.Value, delta);

    /// <summary>The sum of the cells, each read once.</summary>
    public static long Sum(this Padded<long>[] cells)
    {
        long sum = 0;
        for (int i = 0; i < cells.Length; i++)
        {
            sum += Volatile.Read(ref cells[i].Value);
        }

        return sum;
    }
}

/// <summary>One cache line of padding.</summary>
[InlineArray(CacheLine.Size / sizeof(long))]
internal struct CacheLinePad
{
    private long _element;
}
