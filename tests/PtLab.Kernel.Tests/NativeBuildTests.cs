using System.Diagnostics;
using PtLab.Kernel;

namespace PtLab.Kernel.Tests;

/// <summary>A fact that needs Linux x86-64 and a C compiler (programs are built from source at test time).</summary>
public sealed class NativeFactAttribute : FactAttribute
{
    public NativeFactAttribute()
    {
        if (!KernelTarget.IsSupported)
        {
            Skip = "needs Linux on x86-64: this test builds and runs a C program on the host";
        }
        else if (!NativeBuild.IsAvailable(out string reason))
        {
            Skip = reason;
        }
    }
}

public sealed class NativeBuildTests
{
    [NativeFact]
    public void AProgramBuiltFromSourceRunsAndIsCachedByItsSource()
    {
        const string source = "#include <stdio.h>\nint main(void) { puts(\"built\"); return 3; }\n";
        string exe = NativeBuild.Build("hello", source);
        Assert.Equal(exe, NativeBuild.Build("hello", source));
        Assert.NotEqual(exe, NativeBuild.Build("hello", source + "\n"));

        using var p = Process.Start(new ProcessStartInfo(exe) { RedirectStandardOutput = true })!;
        Assert.Equal("built", p.StandardOutput.ReadToEnd().Trim());
        p.WaitForExit();
        Assert.Equal(3, p.ExitCode);
    }

    [Fact]
    public void EveryEmbeddedProgramHasItsOwnFileName()
    {
        // Two programs of one name in different folders made a suffix lookup pick either,
        // depending on resource order; the lookup refuses that now, and this keeps it from arising.
        var names = typeof(NativeBuildTests).Assembly.GetManifestResourceNames()
            .Where(r => r.EndsWith(".c", StringComparison.Ordinal))
            .Select(r => string.Join('.', r.Split('.')[^2..]))
            .ToList();
        Assert.NotEmpty(names);
        Assert.Equal(names.Count, names.Distinct(StringComparer.Ordinal).Count());
        Assert.Throws<ArgumentException>(() => NativeBuild.BuildEmbedded(typeof(NativeBuildTests).Assembly, "no-such-program.c", "x"));
    }

    [NativeFact]
    public void ACompileErrorNamesTheProgramAndTheError()
    {
        var e = Assert.Throws<NativeBuildException>(() => NativeBuild.Build("broken", "int main(void) { return nope; }\n"));
        Assert.Contains("cannot build broken", e.Message);
        Assert.Contains("nope", e.Message);
    }

    [Fact]
    public void AMissingCompilerIsReportedNotThrown()
    {
        Assert.False(NativeBuild.IsAvailable("/nonexistent/cc", out string reason));
        Assert.Contains("/nonexistent/cc", reason);
    }
}
