using System.CommandLine;

namespace PtLab.Cli;

/// <summary>
/// The output options every reporting command shares: <c>--format</c> chooses what stdout shows,
/// and <c>--output FILE</c> also writes the JSON report to FILE, so a run can be saved while its
/// table prints. A command adds both in one line, <c>var report = ReportOptions.AddTo(cmd);</c>,
/// and ends its action with <c>return report.Write(p, stdout, json, csv, table);</c>.
/// </summary>
internal sealed class ReportOptions
{
    private ReportOptions(Option<string> format, Option<string> output)
    {
        Format = format;
        Output = output;
    }

    /// <summary><c>--format</c>: the human format first (the default), then the machine ones.</summary>
    public Option<string> Format { get; }

    /// <summary><c>--output FILE</c>: where the JSON report goes as well; absent means nowhere.</summary>
    public Option<string> Output { get; }

    /// <summary>Adds <c>--format</c> (one of <paramref name="formats"/>, the first the default) and <c>--output</c> to <paramref name="cmd"/>.</summary>
    public static ReportOptions AddTo(Command cmd, params string[] formats)
    {
        if (formats.Length == 0)
        {
            formats = ["table", "json", "csv"];
        }

        string human = formats[0];
        var format = new Option<string>("--format")
        {
            Description = $"What stdout shows: {human} (for people)" +
                          (formats.Contains("json") ? ", json (the stable machine interface)" : "") +
                          (formats.Contains("csv") ? " or csv" : "") + ".",
            DefaultValueFactory = _ => human,
        };
        format.AcceptOnlyFromAmong(formats);
        var output = new Option<string>("--output")
        {
            Description = "Also write the JSON report to this file (the table still prints), so a run can be saved and compared later.",
            HelpName = "FILE",
        };
        output.Validators.Add(r =>
        {
            string? path = r.Tokens.Count > 0 ? r.Tokens[0].Value : null;
            if (WhyNotWritable(path) is { } why)
            {
                r.AddError(why);
            }
        });
        cmd.Options.Add(format);
        cmd.Options.Add(output);
        return new ReportOptions(format, output);
    }

    /// <summary>The chosen format.</summary>
    public string FormatOf(ParseResult p) => p.GetValue(Format)!;

    /// <summary>Whether stdout gets the human format.</summary>
    public bool IsHuman(ParseResult p) => FormatOf(p) is "table" or "text";

    /// <summary>
    /// Prints the report in the chosen format (json, csv, or the human one), writes the JSON to
    /// <c>--output</c> when given, and returns success.
    /// </summary>
    public int Write(ParseResult p, TextWriter stdout, Func<string> json, Func<string>? csv, Action<TextWriter> human)
    {
        string? file = p.GetValue(Output);
        string? text = null;
        string Json() => text ??= json();
        switch (FormatOf(p))
        {
            case "json":
                stdout.WriteLine(Json());
                break;
            case "csv" when csv is not null:
                stdout.Write(csv());
                break;
            default:
                human(stdout);
                break;
        }

        if (!string.IsNullOrEmpty(file))
        {
            try
            {
                File.WriteAllText(file, Json() + Environment.NewLine);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"--output: cannot write '{file}': {e.Message}");
            }
        }

        return Cli.ExitOk;
    }

    /// <summary>Why <paramref name="path"/> cannot take the report, or null when it can (checked before the run starts).</summary>
    internal static string? WhyNotWritable(string? path)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            return "--output needs a file name";
        }

        if (Directory.Exists(path))
        {
            return $"--output: '{path}' is a directory; give a file name";
        }

        string dir = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        return Directory.Exists(dir) ? null : $"--output: the directory of '{path}' does not exist";
    }
}
