using System.Globalization;
using ScottPlot;

namespace PtLab.Cli;

/// <summary>One series of a <see cref="BarPlot"/>: a value per category, drawn in one colour with a legend entry.</summary>
/// <param name="Name">The legend text.</param>
/// <param name="Values">One value per category, in the categories' order.</param>
internal sealed record BarSeries(string Name, IReadOnlyList<double> Values);

/// <summary>
/// A grouped bar chart as a PNG: one group per category (a design, a CPU count), one bar per
/// series in each group, each bar labelled with its value so a bar too short to see still reads.
/// </summary>
internal static class BarPlot
{
    private static readonly Color[] s_palette =
    [
        Color.FromHex("#9E9E9E"), Color.FromHex("#1F77B4"), Color.FromHex("#FF7F0E"), Color.FromHex("#2CA02C"), Color.FromHex("#D62728"),
    ];

    /// <summary>Draws the chart and writes it to <paramref name="path"/> as a PNG.</summary>
    /// <param name="path">The PNG to write.</param>
    /// <param name="title">The title line.</param>
    /// <param name="yLabel">What the values are, with their unit.</param>
    /// <param name="categories">The group names along the bottom axis.</param>
    /// <param name="series">The series; each has one value per category.</param>
    /// <param name="label">How a value is written on its bar (default: with thousands separators).</param>
    /// <param name="width">Width in pixels.</param>
    /// <param name="height">Height in pixels.</param>
    public static void Save(
        string path, string title, string yLabel, IReadOnlyList<string> categories, IReadOnlyList<BarSeries> series,
        Func<double, string>? label = null, int width = 900, int height = 520)
    {
        ArgumentOutOfRangeException.ThrowIfZero(categories.Count);
        ArgumentOutOfRangeException.ThrowIfZero(series.Count);
        label ??= v => v.ToString("N0", CultureInfo.InvariantCulture);
        var plot = new Plot();
        plot.Font.Set("DejaVu Sans"); // where it is missing, Skia's default face draws the text
        double groupWidth = 0.8;
        double barWidth = groupWidth / series.Count;
        var bars = new List<Bar>();
        for (int s = 0; s < series.Count; s++)
        {
            if (series[s].Values.Count != categories.Count)
            {
                throw new ArgumentException($"series '{series[s].Name}' has {series[s].Values.Count} values for {categories.Count} categories", nameof(series));
            }

            var color = s_palette[(series.Count == 1 ? 1 : s) % s_palette.Length];
            for (int c = 0; c < categories.Count; c++)
            {
                double v = series[s].Values[c];
                bars.Add(new Bar
                {
                    Position = c - (groupWidth / 2) + (barWidth * (s + 0.5)),
                    Value = v,
                    Size = barWidth * 0.92,
                    FillColor = color,
                    LineWidth = 0,
                    Label = label(v),
                });
            }

            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[s].Name, FillColor = color });
        }

        var barPlot = plot.Add.Bars(bars);
        barPlot.ValueLabelStyle.FontSize = 13;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. Enumerable.Range(0, categories.Count).Select(i => (double)i)], [.. categories]);
        plot.Axes.Bottom.TickLabelStyle.FontSize = 14;
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = v => v.ToString("N0", CultureInfo.InvariantCulture),
        };
        plot.Axes.Margins(bottom: 0, top: 0.15);
        plot.Axes.SetLimitsX(-0.6, categories.Count - 0.4);
        plot.Grid.XAxisStyle.MajorLineStyle.Width = 0;
        plot.Title(title);
        plot.YLabel(yLabel);
        if (series.Count > 1)
        {
            plot.Legend.IsVisible = true;
            plot.Legend.Alignment = Alignment.UpperRight;
        }

        plot.SavePng(path, width, height);
    }
}
