using System.CommandLine;
using PtLab.Cli;

return Cli.Run(args, Console.Out, Console.Error);
