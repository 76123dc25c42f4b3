using System.Globalization;

namespace PtLab.Cli;

/// <summary>
/// A run's parameters for reports. JSON gets numbers where the value is a number, with the unit
/// in the key for sizes (<c>sizeBytes</c>, <c>ramBytes</c>); the human line gets sizes in binary
/// units (<c>size=50 GiB</c>). Scenarios hand their parameters over as text; <see cref="AddScenario"/>
/// types them.
/// </summary>
internal sealed class ReportParameters
{
    // Scenario parameters that are byte counts: the JSON key gets "Bytes".
    private static readonly HashSet<string> s_sizes = new(StringComparer.Ordinal) { "size", "chunk", "ram", "swap" };

    // Scenario keys that are not camelCase.
    private static readonly Dictionary<string, string> s_renamed = new(StringComparer.Ordinal) { ["calls-per-2m"] = "callsPer2M" };

    private readonly SortedDictionary<string, object> _values = new(StringComparer.Ordinal);

    /// <summary>Key to value: a number (long, ulong, double) or text.</summary>
    public IReadOnlyDictionary<string, object> Values => _values;

    public ReportParameters Add(string key, object value)
    {
        _values[key] = value;
        return this;
    }

    /// <summary>Adds a scenario's text parameters, typed and named as the report vocabulary says.</summary>
    public ReportParameters AddScenario(IEnumerable<KeyValuePair<string, string>> parameters)
    {
        foreach (var (key, text) in parameters)
        {
            string k = s_renamed.GetValueOrDefault(key, key);
            if (s_sizes.Contains(k) && ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong bytes))
            {
                _values[k + "Bytes"] = bytes;
            }
            else if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                     && ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong address))
            {
                _values[k] = address;
            }
            else if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n))
            {
                _values[k] = n;
            }
            else
            {
                _values[k] = text;
            }
        }

        return this;
    }

    /// <summary>One line for people: <c>size=50 GiB chunk=2 MiB advice=dontneed at=any ...</c>.</summary>
    public string Human() => Describe(_values);

    /// <summary>The human line of any typed parameter map.</summary>
    public static string Describe(IReadOnlyDictionary<string, object> values) =>
        string.Join(" ", values.Select(kv => kv switch
        {
            { Key: "at", Value: ulong a } => a == 0 ? "at=any" : $"at=0x{a:x}",
            { Key: var k, Value: ulong b } when k.EndsWith("Bytes", StringComparison.Ordinal) => $"{k[..^5]}={PtLab.Cli.Human.Bytes(b)}",
            { Value: long n } => $"{kv.Key}={PtLab.Cli.Human.Count(n)}",
            { Value: int n } => $"{kv.Key}={PtLab.Cli.Human.Count(n)}",
            _ => $"{kv.Key}={Convert.ToString(kv.Value, CultureInfo.InvariantCulture)}",
        }));
}
