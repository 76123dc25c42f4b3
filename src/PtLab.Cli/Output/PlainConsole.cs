using Spectre.Console;

namespace PtLab.Cli;

/// <summary>A Spectre console over a writer with no colours, no ANSI codes and a fixed width, so tables read the same in a terminal, a pipe and a test.</summary>
internal static class PlainConsole
{
    public static IAnsiConsole Create(TextWriter writer, int width = 120)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        console.Profile.Width = width;
        return console;
    }
}
