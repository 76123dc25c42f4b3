using System.Globalization;

namespace PtLab.Kernel;

/// <summary>
/// One running DAMON worker (<c>kdamond.N</c>) of the host: what it monitors (<c>paddr</c>, the
/// physical address space, or <c>vaddr</c>/<c>fvaddr</c>, some processes) and what its schemes do
/// (<c>pageout</c>, <c>cold</c>, <c>lru_prio</c>, ...). Empty lists when the worker was started
/// without the sysfs interface (the DAMON_RECLAIM or DAMON_LRU_SORT modules).
/// </summary>
/// <param name="Name">The thread's name, <c>kdamond.N</c>.</param>
/// <param name="Operations">The operations set of each of its contexts.</param>
/// <param name="Actions">The action of each of its schemes.</param>
public sealed record Kdamond(string Name, IReadOnlyList<string> Operations, IReadOnlyList<string> Actions)
{
    /// <summary>
    /// Whether it can change any process's pages behind its back: physical-address monitoring
    /// clears the accessed bit of every PTE that maps a sampled page (moving it to the folio's
    /// young flag, which MADV_PAGEOUT clears although it leaves a young PTE alone), and
    /// a <c>pageout</c> scheme clears the folio's young and referenced flags, mlocked folios
    /// included, and reclaims what it can. True when the worker's setup is unknown.
    /// </summary>
    public bool TouchesEveryProcess => Operations.Count == 0 || Operations.Contains("paddr");

    /// <inheritdoc/>
    public override string ToString()
    {
        if (Operations.Count == 0)
        {
            return $"{Name} (set up without the sysfs interface)";
        }

        string schemes = Actions.Count == 0 ? "no scheme" : "scheme " + string.Join(", ", Actions);
        return $"{Name} ({string.Join(", ", Operations)} monitoring, {schemes})";
    }
}

/// <summary>
/// Finds the host's running DAMON workers, which reclaim and age pages of every process on their
/// own schedule: a differential run against the host kernel sees their work as changes of RssFile
/// and Referenced between two operations that no operation made.
/// </summary>
public static class DamonProbe
{
    /// <summary>Where the sysfs interface lists its workers.</summary>
    public const string AdminRoot = "/sys/kernel/mm/damon/admin/kdamonds";

    /// <summary>
    /// The running workers: those the sysfs interface under <paramref name="adminRoot"/> shows in
    /// state <c>on</c>, and then any other <c>kdamond.N</c> kernel thread in
    /// <paramref name="procRoot"/>. Empty where DAMON is absent or nothing can be read.
    /// </summary>
    public static IReadOnlyList<Kdamond> Running(string adminRoot = AdminRoot, string procRoot = "/proc")
    {
        var found = new List<Kdamond>();
        foreach (var (index, dir) in NumberedDirectories(adminRoot))
        {
            if (Read(Path.Combine(dir, "state")) != "on")
            {
                continue;
            }

            var ops = new List<string>();
            var actions = new List<string>();
            foreach (var (_, context) in NumberedDirectories(Path.Combine(dir, "contexts")))
            {
                if (Read(Path.Combine(context, "operations")) is { Length: > 0 } op)
                {
                    ops.Add(op);
                }

                foreach (var (_, scheme) in NumberedDirectories(Path.Combine(context, "schemes")))
                {
                    if (Read(Path.Combine(scheme, "action")) is { Length: > 0 } action)
                    {
                        actions.Add(action);
                    }
                }
            }

            // The sysfs index and the thread's number agree only while workers start in order;
            // the pid file names the thread for certain.
            string name = int.TryParse(Read(Path.Combine(dir, "pid")), NumberStyles.Integer, CultureInfo.InvariantCulture, out int pid)
                          && Read(Path.Combine(procRoot, pid.ToString(CultureInfo.InvariantCulture), "comm")) is { Length: > 0 } comm
                ? comm
                : $"kdamond.{index}";
            found.Add(new Kdamond(name, ops, actions));
        }

        foreach (var (_, dir) in NumberedDirectories(procRoot))
        {
            if (Read(Path.Combine(dir, "comm")) is { } comm && comm.StartsWith("kdamond.", StringComparison.Ordinal)
                && !found.Any(k => k.Name == comm))
            {
                found.Add(new Kdamond(comm, [], []));
            }
        }

        return found;
    }

    private static IEnumerable<(int Index, string Path)> NumberedDirectories(string parent)
    {
        string[] dirs;
        try
        {
            dirs = Directory.GetDirectories(parent);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }

        foreach (var (n, d) in dirs
                     .Select(d => (Ok: int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out int n), N: n, D: d))
                     .Where(x => x.Ok)
                     .Select(x => (x.N, x.D))
                     .OrderBy(x => x.N))
        {
            yield return (n, d);
        }
    }

    private static string? Read(string file)
    {
        try
        {
            return File.ReadAllText(file).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
