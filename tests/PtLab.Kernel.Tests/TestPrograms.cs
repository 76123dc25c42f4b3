using PtLab.Kernel;

namespace PtLab.Kernel.Tests;

/// <summary>The C programs of tests/Programs, built from source with <see cref="NativeBuild"/> (common.h inlined).</summary>
public static class TestPrograms
{
    public static string Build(string name)
    {
        string source = Resource(name + ".c").Replace("#include \"common.h\"", Resource("common.h"), StringComparison.Ordinal);
        return NativeBuild.Build(name, source, "-pthread");
    }

    private static string Resource(string file)
    {
        using var stream = typeof(TestPrograms).Assembly.GetManifestResourceStream("Programs." + file)
            ?? throw new InvalidOperationException($"no embedded test program {file}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
