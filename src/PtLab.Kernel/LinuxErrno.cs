using System.Runtime.InteropServices;
using PtLab.Mm;

namespace PtLab.Kernel;

/// <summary>One errno the host kernel returned, with its name and message.</summary>
/// <param name="Raw">The value of <c>errno</c>.</param>
/// <param name="Name">The Linux name ("EINVAL"), or "E?" when PtLab does not know it.</param>
/// <param name="Message">The C library's message for it (<c>strerror</c>).</param>
public readonly record struct KernelError(int Raw, string Name, string Message)
{
    /// <summary>Whether <see cref="Errno"/> has a member for this value.</summary>
    public bool IsKnown => Enum.IsDefined((Errno)Raw);

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Raw}): {Message}";
}

/// <summary>Maps Linux errno values onto <see cref="Errno"/>.</summary>
public static class LinuxErrno
{
    /// <summary>
    /// The <see cref="Errno"/> for a raw Linux errno. The enum's members carry Linux's x86-64 values,
    /// so a known value maps to itself. A value the enum lacks is returned unchanged as an undefined
    /// <see cref="Errno"/> (its number is still Linux's) rather than folded into another member; call
    /// <see cref="Describe"/> to name it.
    /// </summary>
    public static Errno ToErrno(int raw) => (Errno)raw;

    /// <summary>The name and message of a raw errno, for reports.</summary>
    public static KernelError Describe(int raw)
    {
        string name = Enum.IsDefined((Errno)raw) ? ((Errno)raw).ToString() : NameOf(raw);
        return new KernelError(raw, name, Marshal.GetPInvokeErrorMessage(raw));
    }

    /// <summary>Names of the errno values the memory calls, /proc reads and ioctls can return that <see cref="Errno"/> lacks.</summary>
    private static string NameOf(int raw) => raw switch
    {
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        16 => "EBUSY",
        19 => "ENODEV",
        23 => "ENFILE",
        24 => "EMFILE",
        25 => "ENOTTY",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        38 => "ENOSYS",
        133 => "EHWPOISON",
        _ => $"E?{raw}",
    };
}
