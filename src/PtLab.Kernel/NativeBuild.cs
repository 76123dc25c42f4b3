using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace PtLab.Kernel;

/// <summary>Why a C program could not be built: no compiler, or the compiler refused the source.</summary>
public sealed class NativeBuildException(string message) : Exception(message);

/// <summary>
/// Builds small C programs from source at run time (the fuzzer's executor, the test programs), so
/// that no binary is ever checked in. Each build is cached by the hash of its source and flags, in a
/// per-user folder under the temporary directory; concurrent builders of the same source are safe
/// (each compiles to its own file, then renames it into place).
/// </summary>
public static class NativeBuild
{
    /// <summary>The compiler used: <c>$CC</c> when set, else <c>gcc</c>.</summary>
    public static string Compiler => Environment.GetEnvironmentVariable("CC") is { Length: > 0 } cc ? cc : "gcc";

    /// <summary>Whether <see cref="Compiler"/> can be started, with the reason when it cannot.</summary>
    public static bool IsAvailable(out string reason) => IsAvailable(Compiler, out reason);

    internal static bool IsAvailable(string compiler, out string reason)
    {
        try
        {
            var (code, _, err) = RunCompiler(compiler, ["--version"], TimeSpan.FromSeconds(30));
            reason = code == 0 ? "" : $"'{compiler} --version' failed: {err.Trim()}";
            return code == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            reason = $"no C compiler: '{compiler}' was not found on PATH (install gcc, or set CC)";
            return false;
        }
    }

    /// <summary>
    /// Compiles <paramref name="source"/> as the program <paramref name="name"/> and returns the path
    /// of the executable. <paramref name="flags"/> are extra compiler arguments (for example
    /// <c>-pthread</c>).
    /// </summary>
    /// <exception cref="NativeBuildException">There is no compiler, or it rejected the source.</exception>
    public static string Build(string name, string source, params string[] flags)
    {
        if (name.Length == 0 || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
        {
            throw new ArgumentException($"'{name}' is not a plain program name", nameof(name));
        }

        string[] args = ["-O2", "-Wall", .. flags];
        string key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Compiler + "\0" + string.Join('\0', args) + "\0" + source)))[..16];
        string dir = Path.Combine(CacheRoot(), key);
        string exe = Path.Combine(dir, name);
        if (File.Exists(exe))
        {
            return exe;
        }

        Directory.CreateDirectory(dir);
        string unique = $"{Environment.ProcessId}.{Guid.NewGuid():N}";
        string src = Path.Combine(dir, $"{name}.{unique}.c");
        string tmp = Path.Combine(dir, $"{name}.{unique}.out");
        File.WriteAllText(src, source);
        try
        {
            (int code, string _, string err) result;
            try
            {
                result = RunCompiler(Compiler, [.. args, "-o", tmp, src], TimeSpan.FromMinutes(2));
            }
            catch (System.ComponentModel.Win32Exception)
            {
                throw new NativeBuildException($"cannot build {name}: no C compiler ('{Compiler}' was not found on PATH; install gcc, or set CC)");
            }

            if (result.code != 0)
            {
                string first = result.err.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault(l => l.Contains("error", StringComparison.Ordinal)) ?? result.err.Trim();
                throw new NativeBuildException($"cannot build {name}: {Compiler} exited with {result.code}: {first}");
            }

            File.Move(tmp, exe, overwrite: true);
            return exe;
        }
        finally
        {
            File.Delete(src);
            File.Delete(tmp);
        }
    }

    /// <summary>
    /// Compiles a C source embedded in <paramref name="assembly"/> (an <c>EmbeddedResource</c> whose
    /// manifest name ends with <paramref name="resourceSuffix"/>).
    /// </summary>
    public static string BuildEmbedded(System.Reflection.Assembly assembly, string resourceSuffix, string name, params string[] flags)
    {
        // A suffix that matches two resources (two programs of the same name in different folders)
        // is a build error waiting for a resource order to change: refuse it rather than pick one.
        string[] matches = [.. assembly.GetManifestResourceNames().Where(r => r.EndsWith("." + resourceSuffix, StringComparison.Ordinal) || r == resourceSuffix)];
        string resource = matches.Length switch
        {
            0 => throw new ArgumentException($"no embedded resource ending in '{resourceSuffix}' in {assembly.GetName().Name}", nameof(resourceSuffix)),
            1 => matches[0],
            _ => throw new ArgumentException($"'{resourceSuffix}' names {matches.Length} embedded resources in {assembly.GetName().Name}: {string.Join(", ", matches)}", nameof(resourceSuffix)),
        };
        using var stream = assembly.GetManifestResourceStream(resource)!;
        using var reader = new StreamReader(stream);
        return Build(name, reader.ReadToEnd(), flags);
    }

    private static string CacheRoot()
    {
        string user = Environment.GetEnvironmentVariable("USER") is { Length: > 0 } u ? u : Environment.UserName;
        return Path.Combine(Path.GetTempPath(), $"ptlab-native-{user}");
    }

    private static (int Code, string Out, string Err) RunCompiler(string compiler, string[] args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(compiler)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new NativeBuildException($"could not start {compiler}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new NativeBuildException($"{compiler} did not finish within {timeout.TotalSeconds:0} s");
        }

        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
