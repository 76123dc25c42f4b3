namespace PtLab.Phys;

/// <summary>
/// A mapped page table: its frame and the frame's generation when it was mapped. Every access
/// through it checks the generation, so a walker still holding a table that was freed (and
/// perhaps reused) is caught instead of reading someone else's entries.
/// </summary>
/// <param name="Pfn">The table's frame, or -1 for none.</param>
/// <param name="Generation">The frame's generation when the reference was taken.</param>
public readonly record struct TableRef(long Pfn, int Generation)
{
    /// <summary>No table (<c>pte_offset_map</c> returned NULL).</summary>
    public static TableRef None => new(-1, 0);

    /// <summary>Whether this is <see cref="None"/>.</summary>
    public bool IsNone => Pfn < 0;

    /// <inheritdoc/>
    public override string ToString() => IsNone ? "none" : $"table {Pfn:x} gen {Generation}";
}

/// <summary>
/// A walker touched a page table that was freed after it mapped it: neither a reference, nor the
/// table's lock, nor an RCU read section older than the free protected the access.
/// </summary>
public sealed class UseAfterFreeException(string message, string accessStack, string? freeStack)
    : Exception($"{message}\n--- access ---\n{accessStack}\n--- free ---\n{freeStack ?? "(free stacks not recorded; set MachineOptions.RecordFreeStacks)"}")
{
    /// <summary>Where the stale access happened.</summary>
    public string AccessStack { get; } = accessStack;

    /// <summary>Where the table was freed, when free stacks are recorded.</summary>
    public string? FreeStack { get; } = freeStack;
}
