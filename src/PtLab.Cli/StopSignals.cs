using System.Runtime.InteropServices;

namespace PtLab.Cli;

/// <summary>
/// Ctrl-C (SIGINT) and SIGTERM as the polite end of a command that runs until stopped (<c>scan
/// --watch</c>, <c>exporter</c>): either one cancels <see cref="Token"/> and keeps the process alive,
/// so that the command finishes its output (the series, the plot) and exits 0. One registration per
/// signal for the command's whole life: a signal is never left to its default action by
/// registrations that come and go (a <c>--freeze</c> freezer registers its own handlers around each
/// sample; they resume the target, and these decide that ptlab lives on).
/// A SIGINT that ptlab inherited as ignored stays ignored: a non-interactive shell starts a
/// background job so (POSIX, for an asynchronous list without job control), that a Ctrl-C at the
/// terminal reaches only the foreground, the disposition survives exec, and the .NET runtime installs
/// no handler over it. SIGTERM (<c>kill PID</c>) is then how a script stops the command.
/// </summary>
internal sealed class StopSignals : IDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private readonly PosixSignalRegistration _sigint;
    private readonly PosixSignalRegistration _sigterm;
    private bool _disposed;

    public StopSignals()
    {
        _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    /// <summary>Cancelled by the first SIGINT or SIGTERM.</summary>
    public CancellationToken Token => _stop.Token;

    public bool IsStopRequested => _stop.IsCancellationRequested;

    public void Dispose()
    {
        _sigint.Dispose();
        _sigterm.Dispose();

        // The runtime runs the handlers of a signal on a thread of their own, from a copy of the
        // registrations taken when the signal came: one can still run after the registration's
        // Dispose returned, and must then not touch a disposed token source.
        lock (_gate)
        {
            _disposed = true;
            _stop.Dispose();
        }
    }

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        lock (_gate)
        {
            if (!_disposed)
            {
                _stop.Cancel();
            }
        }
    }
}
