using BenchmarkDotNet.Running;

namespace PtLab.Bench;

/// <summary>Entry point: <c>dotnet run -c Release --project bench/PtLab.Bench -- --filter '*'</c>.</summary>
public static class Program
{
    /// <summary>Runs the benchmarks the command line selects.</summary>
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
