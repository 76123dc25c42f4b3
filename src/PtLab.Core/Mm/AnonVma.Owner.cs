namespace PtLab.Mm;

public sealed partial class AnonVma
{
    /// <summary>This anon_vma's id in the page descriptors' rmap word (<c>page->mapping</c>), 0 until first used.</summary>
    internal int RmapOwnerId;
}
