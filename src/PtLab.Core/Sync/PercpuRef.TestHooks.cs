namespace PtLab.Sync;

/// <summary>Test hooks: deterministic interleavings and the pre-patch-02 behaviour, for tests only.</summary>
public sealed partial class PercpuRef
{
    /// <summary>Runs on the switching thread right after the switch's RCU callback is queued.</summary>
    internal Action? AfterSwitchQueued { get; set; }

    /// <summary>Runs in the RCU callback right after the switch is confirmed, before any put it makes.</summary>
    internal Action? AfterConfirmCleared { get; set; }

    /// <summary>
    /// Makes <see cref="SwitchToAtomicSync"/> behave as before the seed's patch 02: the RCU callback
    /// drops the switch's reference after waking the waiter, so the count may still be one too high
    /// when the waiter returns.
    /// </summary>
    internal bool UnpatchedSyncSwitch { get; set; }

    /// <summary>
    /// Mutation: fold the stripes at once instead of after a grace period, so a get or put still
    /// inside its RCU section, having seen percpu mode, lands on a stripe already summed.
    /// </summary>
    public bool SkipGracePeriodForTesting { get; set; }

    /// <summary>The shared counter as stored (biased in percpu mode).</summary>
    internal long SharedCount => Volatile.Read(ref _count);

    /// <summary>The sum of the stripes, or 0 once they are freed.</summary>
    internal long StripeSum
    {
        get
        {
            var stripes = Volatile.Read(ref _stripes);
            return stripes is null ? 0 : stripes.Sum();
        }
    }

    /// <summary>The true count whatever the mode: the shared counter less the bias plus the stripes when percpu.</summary>
    internal long TrueCount => IsPercpu ? unchecked(SharedCount - CountBias + StripeSum) : SharedCount;
}
