using System.CommandLine;
using System.CommandLine.Parsing;

namespace PtLab.Cli;

/// <summary>
/// Turns the command-line parser's errors into one line in the user's words: the option or
/// command at fault, what was expected (never a .NET type name), the choices where there is a
/// list (scenarios, commands), the nearest option for a misspelt one, and the help to ask for.
/// </summary>
internal static class ParseErrors
{
    public static string Describe(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        string path = CommandPath(parse.CommandResult);
        string help = $"(try '{path} --help')";
        string? token = parse.UnmatchedTokens.FirstOrDefault();
        if (token is not null)
        {
            if (token.StartsWith('-'))
            {
                string? near = Nearest(token, command.Options.SelectMany(o => o.Aliases.Prepend(o.Name)));
                return $"unknown option '{token}' for '{path}'" + (near is null ? " " + help : $"; did you mean {near}?");
            }

            var subcommands = command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name).ToList();
            return subcommands.Count > 0
                ? $"'{token}' is not {Kind(command)} of '{path}'; {Plural(command)}: {string.Join(", ", subcommands)}"
                : $"unexpected argument '{token}' for '{path}' {help}";
        }

        var error = parse.Errors[0];
        string message = string.Join(" ", error.Message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
        switch (error.SymbolResult)
        {
            case OptionResult o when message.StartsWith("Cannot parse argument", StringComparison.Ordinal):
                return $"{o.Option.Name}: '{string.Join(" ", o.Tokens.Select(t => t.Value))}' is not {Expected(o.Option.ValueType)} {help}";
            case ArgumentResult { Parent: OptionResult o } when message.StartsWith("Cannot parse argument", StringComparison.Ordinal):
                return $"{o.Option.Name}: '{string.Join(" ", o.Tokens.Select(t => t.Value))}' is not {Expected(o.Option.ValueType)} {help}";
            case OptionResult o when message.StartsWith("Required argument missing", StringComparison.Ordinal):
                return $"{o.Option.Name} needs a value {help}";
            case OptionResult o:
                return $"{o.Option.Name}: {message} {help}";
            case ArgumentResult { Parent: OptionResult o }:
                return $"{o.Option.Name}: {message} {help}";
        }

        if (command.Subcommands.Count > 0 && message.StartsWith("Required command", StringComparison.Ordinal))
        {
            return $"'{path}' needs {Kind(command)}; {Plural(command)}: {string.Join(", ", command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name))}";
        }

        if (message.StartsWith("Required argument missing", StringComparison.Ordinal) && command.Arguments.Count > 0)
        {
            var a = command.Arguments[0];
            return $"'{path}' needs a {a.Name}. {a.Description}";
        }

        return $"{message} {help}";
    }

    private static string Kind(Command c) => c.Name is "run" or "compare" ? "a scenario" : "a command";

    private static string Plural(Command c) => c.Name is "run" or "compare" ? "scenarios" : "commands";

    private static string CommandPath(CommandResult r)
    {
        var names = new List<string>();
        for (SymbolResult? s = r; s is not null; s = s.Parent)
        {
            if (s is CommandResult c)
            {
                names.Add(c.Command is RootCommand ? "ptlab" : c.Command.Name);
            }
        }

        names.Reverse();
        return string.Join(" ", names);
    }

    private static string Expected(Type t) => (Nullable.GetUnderlyingType(t) ?? t) switch
    {
        var x when x == typeof(int) || x == typeof(long) => "a whole number",
        var x when x == typeof(double) || x == typeof(float) => "a number",
        var x when x == typeof(bool) => "true or false",
        _ => "a valid value",
    };

    /// <summary>The name closest to <paramref name="token"/>: one it starts or ends, or within two edits.</summary>
    private static string? Nearest(string token, IEnumerable<string> names)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var n in names.Where(n => n.StartsWith('-')).Distinct())
        {
            int d = n.StartsWith(token, StringComparison.Ordinal) || token.StartsWith(n, StringComparison.Ordinal) ? 1 : Distance(token, n);
            if (d < bestDistance)
            {
                (best, bestDistance) = (n, d);
            }
        }

        return bestDistance <= 2 ? best : null;
    }

    private static int Distance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++)
        {
            prev[j] = j;
        }

        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            }

            (prev, cur) = (cur, prev);
        }

        return prev[b.Length];
    }
}
