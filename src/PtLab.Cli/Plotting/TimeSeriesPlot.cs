using ScottPlot;

namespace PtLab.Cli.Plotting;

/// <summary>One named line of a time series: <see cref="Seconds"/> and <see cref="Values"/> pair up.</summary>
/// <param name="Name">The legend text.</param>
/// <param name="Seconds">Sample times, seconds from the start, ascending.</param>
/// <param name="Values">Values at those times.</param>
internal sealed record TimeSeries(string Name, double[] Seconds, double[] Values);

/// <summary>
/// A line plot of named series over time, with optional point series (markers only: events such as
/// a madvise call or a sample taken elsewhere), written as PNG or SVG by the file's extension.
/// </summary>
internal static class TimeSeriesPlot
{
    /// <summary>
    /// Writes the plot to <paramref name="path"/> (.png or .svg). With <paramref name="nested"/>, for
    /// lines that may lie on top of each other, the points go under the lines and each line is drawn
    /// thinner than the one before, so lines that coincide show as nested stripes.
    /// </summary>
    public static void Save(
        string path, string title, string yLabel, IReadOnlyList<TimeSeries> lines, IReadOnlyList<TimeSeries>? points = null,
        int width = 1000, int height = 560, bool nested = false)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("seconds");
        plot.YLabel(yLabel);
        if (nested)
        {
            AddPoints(plot, points, markerSize: 9);
        }

        for (int i = 0; i < lines.Count; i++)
        {
            var s = lines[i];
            Check(s);
            var scatter = plot.Add.Scatter(s.Seconds, s.Values);
            scatter.LegendText = s.Name;
            scatter.MarkerSize = s.Seconds.Length <= 60 ? 4 : 0;
            scatter.LineWidth = nested ? 2 + (2.5f * (lines.Count - 1 - i)) : 2;
        }

        if (!nested)
        {
            AddPoints(plot, points, markerSize: 7);
        }

        plot.Axes.Bottom.Min = 0;
        plot.ShowLegend(Alignment.UpperLeft);
        plot.Axes.AutoScale();
        plot.Axes.SetLimitsY(0, Math.Max(1, lines.Concat(points ?? []).SelectMany(s => s.Values).DefaultIfEmpty(1).Max()) * 1.1);
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        if (path.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
        {
            plot.SaveSvg(path, width, height);
        }
        else
        {
            plot.SavePng(path, width, height);
        }
    }

    private static void AddPoints(Plot plot, IReadOnlyList<TimeSeries>? points, float markerSize)
    {
        foreach (var s in points ?? [])
        {
            Check(s);
            var markers = plot.Add.ScatterPoints(s.Seconds, s.Values);
            markers.LegendText = s.Name;
            markers.MarkerSize = markerSize;
        }
    }

    private static void Check(TimeSeries s)
    {
        if (s.Seconds.Length != s.Values.Length)
        {
            throw new ArgumentException($"series '{s.Name}' has {s.Seconds.Length} times but {s.Values.Length} values");
        }
    }
}
