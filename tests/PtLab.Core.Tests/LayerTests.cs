using System.Text;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace PtLab.Tests;

/// <summary>
/// The layer order of the source folders, bottom up: each folder may use only the folders below
/// it. Read from the sources themselves (their usings, and names qualified with a folder's
/// namespace), so a new dependency that breaks the order fails here, with the file and line.
/// </summary>
public partial class LayerTests(ITestOutputHelper output)
{
    /// <summary>The folders bottom up, each with the namespace its files declare.</summary>
    internal static readonly (string Folder, string Namespace)[] Order =
    [
        ("src/PtLab.Core/Sync", "PtLab.Sync"),
        ("src/PtLab.Core/Phys", "PtLab.Phys"),
        ("src/PtLab.Core/Paging", "PtLab.Paging"),
        ("src/PtLab.Core/Mm", "PtLab.Mm"),
        ("src/PtLab.Core/Reclaim", "PtLab.Reclaim"),
        ("src/PtLab.Core/Systematic", "PtLab.Systematic"),
        ("src/PtLab.Traces", "PtLab.Traces"), // the trace format: uses nothing else in PtLab
        ("src/PtLab.Workloads", "PtLab.Workloads"),
        ("src/PtLab.Kernel", "PtLab.Kernel"),
        ("src/PtLab.Cli", "PtLab.Cli"),
        ("bench/PtLab.Bench", "PtLab.Bench"),
    ];

    [Fact]
    public void EachFolderUsesOnlyTheFoldersBelowIt()
    {
        var sources = SourceFiles(RepoRoot());
        var uses = Uses(sources, out var violations);
        foreach (var (folder, _) in Order)
        {
            var below = uses.GetValueOrDefault(folder) ?? [];
            output.WriteLine($"{folder,-28} uses {(below.Count == 0 ? "nothing" : string.Join(", ", Order.Where(o => below.Contains(o.Folder)).Select(o => o.Namespace["PtLab.".Length..])))}");
        }

        Assert.True(violations.Count == 0, "layer order broken (see DESIGN.md's layers):\n" + string.Join("\n", violations));
    }

    [Fact]
    public void EverySourceFileLivesInALayerAndDeclaresItsNamespace()
    {
        var problems = new List<string>();
        foreach (var (path, text) in SourceFiles(RepoRoot()))
        {
            int layer = LayerOfPath(path);
            if (layer < 0)
            {
                problems.Add($"{path}: its folder is in no layer; add it to LayerTests.Order where it belongs");
                continue;
            }

            var ns = NamespaceRegex().Match(CodeOnly(text));
            if (ns.Success && LayerOfNamespace(ns.Groups[1].Value) != layer)
            {
                problems.Add($"{path}: declares namespace {ns.Groups[1].Value}, but its folder is {Order[layer].Folder} ({Order[layer].Namespace})");
            }
        }

        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void TheCheckFindsAUsingAQualifiedNameAndAShortQualifiedNameThatPointUpwards()
    {
        var sources = new List<(string, string)>
        {
            ("src/PtLab.Core/Reclaim/Designs.cs", "namespace PtLab.Reclaim;\npublic static class Designs { }\n"),
            ("src/PtLab.Core/Mm/A.cs", "using PtLab.Reclaim;\nnamespace PtLab.Mm;\n"),
            ("src/PtLab.Core/Mm/B.cs", "namespace PtLab.Mm;\nclass B { object F() => PtLab.Systematic.Soak.Run(); }\n"),
            ("src/PtLab.Core/Paging/C.cs", "namespace PtLab.Paging;\nclass C { object F() => Reclaim.Designs.Names; }\n"),
            ("src/PtLab.Core/Sync/D.cs", "namespace PtLab.Sync;\n// using PtLab.Mm; in a comment\nclass D { string S = \"PtLab.Mm.Cpu\"; object P => Phys.Table; }\n"),
        };

        Uses(sources, out var violations);
        Assert.Equal(3, violations.Count);
        Assert.Contains(violations, v => v.StartsWith("src/PtLab.Core/Mm/A.cs:1:", StringComparison.Ordinal) && v.Contains("PtLab.Reclaim", StringComparison.Ordinal));
        Assert.Contains(violations, v => v.StartsWith("src/PtLab.Core/Mm/B.cs:2:", StringComparison.Ordinal) && v.Contains("PtLab.Systematic", StringComparison.Ordinal));
        Assert.Contains(violations, v => v.StartsWith("src/PtLab.Core/Paging/C.cs:2:", StringComparison.Ordinal) && v.Contains("PtLab.Reclaim", StringComparison.Ordinal));
    }

    /// <summary>Which folders each folder uses, and every use of a folder that is not below.</summary>
    private static Dictionary<string, HashSet<string>> Uses(IReadOnlyList<(string Path, string Text)> sources, out List<string> violations)
    {
        // Types each layer declares, to recognise a name qualified with a layer's short namespace
        // ("Reclaim.Designs") from a property access ("Phys.Table").
        var declared = new Dictionary<int, HashSet<string>>();
        var code = sources.Select(s => (s.Path, Code: CodeOnly(s.Text), Layer: LayerOfPath(s.Path))).ToList();
        foreach (var (_, text, layer) in code.Where(c => c.Layer >= 0))
        {
            var set = declared.TryGetValue(layer, out var s) ? s : declared[layer] = [];
            foreach (Match m in TypeDeclarationRegex().Matches(text))
            {
                set.Add(m.Groups[1].Value);
            }
        }

        var anyType = declared.Values.SelectMany(t => t).ToHashSet();
        var uses = new Dictionary<string, HashSet<string>>();
        violations = [];
        foreach (var (path, text, layer) in code.Where(c => c.Layer >= 0))
        {
            var found = new List<(int Offset, int Layer, string What)>();
            foreach (Match m in QualifiedRegex().Matches(text))
            {
                int used = LayerOfNamespace(m.Groups[1].Value);
                if (used >= 0)
                {
                    found.Add((m.Index, used, m.Groups[1].Value));
                }
            }

            foreach (Match m in ShortQualifiedRegex().Matches(text))
            {
                int used = LayerOfNamespace("PtLab." + m.Groups[1].Value);
                // Bench.Command is the Cli's class Bench, not the bench folder's namespace.
                if (used >= 0 && !anyType.Contains(m.Groups[1].Value) && declared.GetValueOrDefault(used)?.Contains(m.Groups[2].Value) == true)
                {
                    found.Add((m.Index, used, $"PtLab.{m.Groups[1].Value} ({m.Value})"));
                }
            }

            foreach (var (offset, used, what) in found)
            {
                if (used == layer)
                {
                    continue;
                }

                (uses.TryGetValue(Order[layer].Folder, out var set) ? set : uses[Order[layer].Folder] = []).Add(Order[used].Folder);
                if (used > layer)
                {
                    int line = 1 + text.AsSpan(0, offset).Count('\n');
                    violations.Add($"{path}:{line}: {Order[layer].Folder} uses {what}, which is above it");
                }
            }
        }

        return uses;
    }

    private static int LayerOfPath(string path)
    {
        // The deepest listed folder that holds the file.
        int best = -1;
        for (int i = 0; i < Order.Length; i++)
        {
            if (path.StartsWith(Order[i].Folder + "/", StringComparison.Ordinal) && (best < 0 || Order[i].Folder.Length > Order[best].Folder.Length))
            {
                best = i;
            }
        }

        return best;
    }

    private static int LayerOfNamespace(string ns)
    {
        for (int i = 0; i < Order.Length; i++)
        {
            if (ns == Order[i].Namespace || ns.StartsWith(Order[i].Namespace + ".", StringComparison.Ordinal))
            {
                return i;
            }
        }

        return -1;
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "PtLab.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"no PtLab.sln above {AppContext.BaseDirectory}: the layer check reads the sources of a checkout");
    }

    private static List<(string Path, string Text)> SourceFiles(string root)
    {
        var files = new List<(string, string)>();
        foreach (var top in new[] { "src", "bench" })
        {
            foreach (var f in Directory.EnumerateFiles(Path.Combine(root, top), "*.cs", SearchOption.AllDirectories))
            {
                string rel = Path.GetRelativePath(root, f).Replace('\\', '/');
                if (!rel.Contains("/obj/", StringComparison.Ordinal) && !rel.Contains("/bin/", StringComparison.Ordinal))
                {
                    files.Add((rel, File.ReadAllText(f)));
                }
            }
        }

        Assert.NotEmpty(files);
        return files;
    }

    /// <summary>The source with comments and the text of string and char literals blanked (line breaks kept), holes of interpolated strings kept.</summary>
    internal static string CodeOnly(string s)
    {
        var sb = new StringBuilder(s.Length);
        int i = 0;
        Code(s, ref i, sb, stopAtBrace: false);
        return sb.ToString();
    }

    private static void Code(string s, ref int i, StringBuilder sb, bool stopAtBrace)
    {
        int depth = 0;
        while (i < s.Length)
        {
            char c = s[i];
            char next = i + 1 < s.Length ? s[i + 1] : '\0';
            if (c == '/' && next == '/')
            {
                while (i < s.Length && s[i] != '\n')
                {
                    i++;
                }
            }
            else if (c == '/' && next == '*')
            {
                int end = s.IndexOf("*/", i + 2, StringComparison.Ordinal);
                end = end < 0 ? s.Length : end + 2;
                Blank(s, i, end, sb);
                i = end;
            }
            else if (c == '\'')
            {
                int j = i + 1;
                while (j < s.Length && s[j] != '\'' && s[j] != '\n')
                {
                    j += s[j] == '\\' ? 2 : 1;
                }

                Blank(s, i, Math.Min(j + 1, s.Length), sb);
                i = Math.Min(j + 1, s.Length);
            }
            else if (c == '"' || ((c == '$' || c == '@') && (next == '"' || next == '$' || next == '@')))
            {
                StringLiteral(s, ref i, sb);
            }
            else
            {
                if (stopAtBrace && c == '{')
                {
                    depth++;
                }
                else if (stopAtBrace && c == '}' && depth-- == 0)
                {
                    return;
                }

                sb.Append(c);
                i++;
            }
        }
    }

    private static void StringLiteral(string s, ref int i, StringBuilder sb)
    {
        bool interpolated = false, verbatim = false;
        while (s[i] is '$' or '@')
        {
            interpolated |= s[i] == '$';
            verbatim |= s[i] == '@';
            sb.Append(' ');
            i++;
        }

        int quotes = 0;
        while (i + quotes < s.Length && s[i + quotes] == '"')
        {
            quotes++;
        }

        if (quotes >= 3)
        {
            // A raw string literal: its text ends at the same run of quotes; holes are not read.
            string fence = new('"', quotes);
            int end = s.IndexOf(fence, i + quotes, StringComparison.Ordinal);
            end = end < 0 ? s.Length : end + quotes;
            Blank(s, i, end, sb);
            i = end;
            return;
        }

        sb.Append(' ');
        i++;
        while (i < s.Length)
        {
            char c = s[i];
            if (c == '"' && verbatim && i + 1 < s.Length && s[i + 1] == '"')
            {
                sb.Append("  ");
                i += 2;
            }
            else if (c == '"')
            {
                sb.Append(' ');
                i++;
                return;
            }
            else if (c == '\\' && !verbatim)
            {
                Blank(s, i, Math.Min(i + 2, s.Length), sb);
                i += 2;
            }
            else if (interpolated && c == '{' && i + 1 < s.Length && s[i + 1] == '{')
            {
                sb.Append("  ");
                i += 2;
            }
            else if (interpolated && c == '{')
            {
                sb.Append(' ');
                i++;
                Code(s, ref i, sb, stopAtBrace: true);
                sb.Append(' ');
                i++;
            }
            else
            {
                sb.Append(c == '\n' ? '\n' : ' ');
                i++;
            }
        }
    }

    private static void Blank(string s, int from, int to, StringBuilder sb)
    {
        for (int k = from; k < to && k < s.Length; k++)
        {
            sb.Append(s[k] == '\n' ? '\n' : ' ');
        }
    }

    // A using of a PtLab namespace, or a name qualified with one (PtLab.Mm.Cpu, global::PtLab.Mm).
    [GeneratedRegex(@"(?<![\w.])(?:global::)?(PtLab(?:\.[A-Z]\w*)+?)(?=\s*;|\.[A-Z]\w*)")]
    private static partial Regex QualifiedRegex();

    // A name qualified with a short namespace, as code inside namespace PtLab may write it: Reclaim.Designs.
    [GeneratedRegex(@"(?<![\w.])([A-Z]\w*)\.([A-Z]\w*)")]
    private static partial Regex ShortQualifiedRegex();

    [GeneratedRegex(@"\b(?:class|struct|record|interface|enum)\s+(?:struct\s+|class\s+)?([A-Z]\w*)")]
    private static partial Regex TypeDeclarationRegex();

    [GeneratedRegex(@"^\s*namespace\s+([\w.]+)", RegexOptions.Multiline)]
    private static partial Regex NamespaceRegex();
}
