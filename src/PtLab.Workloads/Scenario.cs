using PtLab.Mm;

namespace PtLab.Workloads;

/// <summary>Thrown when a scenario's own system call fails where it must not; the message names the call.</summary>
public sealed class ScenarioException(string message) : Exception(message);

/// <summary>What one scenario run measured.</summary>
public sealed record ScenarioResult
{
    /// <summary>The scenario's name.</summary>
    public required string Scenario { get; init; }

    /// <summary>The target it ran on ("model:none", "kernel").</summary>
    public required string Target { get; init; }

    /// <summary>The parameters as given, for reports.</summary>
    public required IReadOnlyDictionary<string, string> Parameters { get; init; }

    /// <summary>Status before the measured phase (after the mapping was made).</summary>
    public required MmStatus Before { get; init; }

    /// <summary>Status after the measured phase.</summary>
    public required MmStatus After { get; init; }

    /// <summary>Named intermediate figures (for scenarios with several phases).</summary>
    public IReadOnlyList<(string Label, MmStatus Status)> Checkpoints { get; init; } = [];

    /// <summary>Wall time of the measured phase.</summary>
    public required double WallSeconds { get; init; }
}

/// <summary>A scenario: a workload description that runs on any <see cref="IMemoryTarget"/>.</summary>
public interface IScenario
{
    /// <summary>The name on the command line.</summary>
    string Name { get; }

    /// <summary>The parameters, for reports.</summary>
    IReadOnlyDictionary<string, string> Parameters { get; }

    /// <summary>Runs once. <paramref name="progress"/> receives a fraction in [0, 1].</summary>
    ScenarioResult Run(IMemoryTarget target, Action<double>? progress = null);
}
