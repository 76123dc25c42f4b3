namespace PtLab.Mm;

/// <summary>
/// The VMAs of one address space: the maple tree's job in the kernel. An AVL tree keyed by
/// <c>vm_start</c>, linked through the VMAs themselves, each node augmented with the largest gap
/// below any VMA of its subtree (the gap below a VMA runs from its predecessor's end to its
/// start, as <c>rb_subtree_gap</c> did in the rb-tree the maple tree replaced), plus the
/// address-ordered list. Lookup, insertion, removal and each change of a boundary are
/// O(log n), and so is the search for the highest gap that fits (<c>mas_empty_area_rev</c>).
/// </summary>
/// <remarks>
/// Writers hold <c>mmap_lock</c> for write, as in the kernel; readers that hold it for read may
/// use <see cref="Find"/> and the links freely. Every structural change also takes
/// <see cref="Sync"/>, so that <see cref="Snapshot"/> can be taken without <c>mmap_lock</c>.
/// </remarks>
internal sealed class VmaTree
{
    private Vma? _root;
    private Vma? _first;
    private Vma? _last;
    private int _count;
    private long _totalBytes;

    /// <summary>Taken by every structural change and by <see cref="Snapshot"/>.</summary>
    public Lock Sync { get; } = new();

    // Bumped under Sync by every change of the tree's shape or of a VMA's range, so a cached
    // lookup result is known stale (the kernel's old mm->vmacache_seqnum).
    private long _seq;

    /// <summary>The change count: differs from an earlier read once any VMA was added, removed or resized.</summary>
    public long Seq => Volatile.Read(ref _seq);

    /// <summary><c>mm-&gt;map_count</c>.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Bytes covered by all VMAs (<c>mm-&gt;total_vm</c> in bytes).</summary>
    public ulong TotalBytes => (ulong)Volatile.Read(ref _totalBytes);

    /// <summary>The lowest VMA, or null.</summary>
    public Vma? First => _first;

    /// <summary>The highest VMA, or null.</summary>
    public Vma? Last => _last;

    /// <summary><c>find_vma</c>: the first VMA ending above <paramref name="addr"/>, or null.</summary>
    public Vma? Find(ulong addr)
    {
        Vma? best = null;
        for (var x = _root; x is not null;)
        {
            if (x.End > addr)
            {
                best = x;
                x = x.TreeLeft;
            }
            else
            {
                x = x.TreeRight;
            }
        }

        return best;
    }

    /// <summary>The VMAs in address order, copied under <see cref="Sync"/>.</summary>
    public List<Vma> Snapshot()
    {
        lock (Sync)
        {
            var list = new List<Vma>(_count);
            for (var v = _first; v is not null; v = v.NextVma)
            {
                list.Add(v);
            }

            return list;
        }
    }

    /// <summary>Links a VMA that overlaps none (<c>vma_link</c>).</summary>
    public void Insert(Vma v)
    {
        if (v.End <= v.Start)
        {
            throw new InvalidOperationException($"inserting an empty or inverted VMA {v}");
        }

        lock (Sync)
        {
            _seq++;
            Vma? parent = null, pred = null, succ = null;
            bool left = false;
            for (var x = _root; x is not null;)
            {
                parent = x;
                if (v.Start < x.Start)
                {
                    succ = x;
                    left = true;
                    x = x.TreeLeft;
                }
                else
                {
                    pred = x;
                    left = false;
                    x = x.TreeRight;
                }
            }

            if ((pred is not null && pred.End > v.Start) || (succ is not null && succ.Start < v.End))
            {
                throw new InvalidOperationException($"VMA {v} overlaps {(pred is not null && pred.End > v.Start ? pred : succ)}");
            }

            v.TreeLeft = v.TreeRight = null;
            v.TreeParent = parent;
            v.TreeHeight = 1;
            if (parent is null)
            {
                _root = v;
            }
            else if (left)
            {
                parent.TreeLeft = v;
            }
            else
            {
                parent.TreeRight = v;
            }

            v.PrevVma = pred;
            v.NextVma = succ;
            if (pred is null)
            {
                _first = v;
            }
            else
            {
                pred.NextVma = v;
            }

            if (succ is null)
            {
                _last = v;
            }
            else
            {
                succ.PrevVma = v;
            }

            _count++;
            Interlocked.Add(ref _totalBytes, (long)v.Length);
            RebalanceUp(v);
            if (succ is not null)
            {
                Propagate(succ); // its gap now runs from v's end
            }
        }
    }

    /// <summary>Unlinks a VMA (<c>vma_iter_clear</c> / <c>vms_complete_munmap_vmas</c>' removal).</summary>
    public void Remove(Vma v)
    {
        lock (Sync)
        {
            _seq++;
            var prev = v.PrevVma;
            var next = v.NextVma;
            if (prev is null)
            {
                _first = next;
            }
            else
            {
                prev.NextVma = next;
            }

            if (next is null)
            {
                _last = prev;
            }
            else
            {
                next.PrevVma = prev;
            }

            if (v.TreeLeft is not null && v.TreeRight is not null)
            {
                // The in-order successor (next) has no left child: it takes v's place.
                var s = next!;
                Vma fixFrom;
                if (s.TreeParent == v)
                {
                    fixFrom = s;
                }
                else
                {
                    fixFrom = s.TreeParent!;
                    fixFrom.TreeLeft = s.TreeRight;
                    if (s.TreeRight is not null)
                    {
                        s.TreeRight.TreeParent = fixFrom;
                    }

                    s.TreeRight = v.TreeRight;
                    v.TreeRight!.TreeParent = s;
                }

                s.TreeLeft = v.TreeLeft;
                v.TreeLeft!.TreeParent = s;
                ReplaceChild(v.TreeParent, v, s);
                s.TreeParent = v.TreeParent;
                s.TreeHeight = v.TreeHeight;
                RebalanceUp(fixFrom);
            }
            else
            {
                var child = v.TreeLeft ?? v.TreeRight;
                ReplaceChild(v.TreeParent, v, child);
                if (child is not null)
                {
                    child.TreeParent = v.TreeParent;
                }

                RebalanceUp(v.TreeParent);
            }

            if (next is not null)
            {
                Propagate(next); // its gap now runs from prev's end
            }

            v.TreeLeft = v.TreeRight = v.TreeParent = null;
            v.PrevVma = v.NextVma = null;
            _count--;
            Interlocked.Add(ref _totalBytes, -(long)v.Length);
        }
    }

    /// <summary>Unlinks every VMA (exit).</summary>
    public void Clear()
    {
        lock (Sync)
        {
            _seq++;
            for (var v = _first; v is not null;)
            {
                var n = v.NextVma;
                v.TreeLeft = v.TreeRight = v.TreeParent = null;
                v.PrevVma = v.NextVma = null;
                v = n;
            }

            _root = _first = _last = null;
            _count = 0;
            Volatile.Write(ref _totalBytes, 0);
        }
    }

    /// <summary>Moves a VMA's end within the room its neighbours leave (split, merge, shrink).</summary>
    public void SetEnd(Vma v, ulong end)
    {
        lock (Sync)
        {
            _seq++;
            if (end <= v.Start || (v.NextVma is { } n && end > n.Start))
            {
                throw new InvalidOperationException($"moving the end of {v} to 0x{end:x} would empty it or overlap {v.NextVma}");
            }

            Interlocked.Add(ref _totalBytes, (long)end - (long)v.End);
            v.End = end;
            if (v.NextVma is { } next)
            {
                Propagate(next);
            }
        }
    }

    /// <summary>Moves a VMA's start within the room its neighbours leave (split, merge, stack growth).</summary>
    public void SetStart(Vma v, ulong start)
    {
        lock (Sync)
        {
            _seq++;
            if (start >= v.End || (v.PrevVma is { } p && start < p.End))
            {
                throw new InvalidOperationException($"moving the start of {v} to 0x{start:x} would empty it or overlap {v.PrevVma}");
            }

            Interlocked.Add(ref _totalBytes, (long)v.Start - (long)start);
            v.Start = start;
            Propagate(v);
        }
    }

    /// <summary>
    /// <c>mas_empty_area_rev</c>: the highest free range inside [<paramref name="low"/>,
    /// <paramref name="high"/>) at least <paramref name="length"/> long, as the part of one gap
    /// between VMAs that lies inside the bounds. False when none is.
    /// </summary>
    public bool HighestGap(ulong low, ulong high, ulong length, out ulong gapStart, out ulong gapEnd)
    {
        gapStart = gapEnd = 0;
        if (high <= low || high - low < length)
        {
            return false;
        }

        // The gap above the last VMA is indexed by no node.
        ulong topStart = Math.Max(_last?.End ?? 0, low);
        if (high > topStart && high - topStart >= length)
        {
            gapStart = topStart;
            gapEnd = high;
            return true;
        }

        return Search(_root, low, high, length, ref gapStart, ref gapEnd);
    }

    private static bool Search(Vma? x, ulong low, ulong high, ulong length, ref ulong gapStart, ref ulong gapEnd)
    {
        if (x is null || x.SubtreeMaxGap < length)
        {
            return false;
        }

        // Gaps of the right subtree start at x.End or above.
        if (x.End < high && Search(x.TreeRight, low, high, length, ref gapStart, ref gapEnd))
        {
            return true;
        }

        ulong gs = Math.Max(x.PrevVma?.End ?? 0, low);
        ulong ge = Math.Min(x.Start, high);
        if (ge > gs && ge - gs >= length)
        {
            gapStart = gs;
            gapEnd = ge;
            return true;
        }

        // Gaps of the left subtree end at or below x's predecessor's start.
        if (x.TreeLeft is null || x.PrevVma!.Start <= low || x.PrevVma.Start - low < length)
        {
            return false;
        }

        return Search(x.TreeLeft, low, high, length, ref gapStart, ref gapEnd);
    }

    /// <summary>Checks the links, balance and augmentation (for tests); throws on the first broken invariant.</summary>
    public void Validate()
    {
        lock (Sync)
        {
            int n = 0;
            ulong total = 0;
            Vma? prev = null;
            for (var v = _first; v is not null; v = v.NextVma)
            {
                if (v.PrevVma != prev || (prev is not null && prev.End > v.Start) || v.End <= v.Start)
                {
                    throw new InvalidOperationException($"VMA list broken at {v}");
                }

                total += v.Length;
                prev = v;
                n++;
            }

            if (prev != _last || n != _count || total != TotalBytes)
            {
                throw new InvalidOperationException($"VMA list has {n} VMAs and {total} bytes; the tree says {_count} and {TotalBytes}");
            }

            int inOrder = 0;
            Vma? last = null;
            Check(_root, null, ref inOrder, ref last);
            if (inOrder != n)
            {
                throw new InvalidOperationException($"the tree holds {inOrder} VMAs, the list {n}");
            }
        }
    }

    private static int Check(Vma? x, Vma? parent, ref int count, ref Vma? last)
    {
        if (x is null)
        {
            return 0;
        }

        if (x.TreeParent != parent)
        {
            throw new InvalidOperationException($"parent link of {x} is wrong");
        }

        int hl = Check(x.TreeLeft, x, ref count, ref last);
        if (last != x.PrevVma)
        {
            throw new InvalidOperationException($"in-order predecessor of {x} is {last}, the list says {x.PrevVma}");
        }

        last = x;
        count++;
        int hr = Check(x.TreeRight, x, ref count, ref last);
        if (Math.Abs(hl - hr) > 1 || x.TreeHeight != 1 + Math.Max(hl, hr))
        {
            throw new InvalidOperationException($"AVL balance or height broken at {x}");
        }

        ulong want = Math.Max(Gap(x), Math.Max(x.TreeLeft?.SubtreeMaxGap ?? 0, x.TreeRight?.SubtreeMaxGap ?? 0));
        if (x.SubtreeMaxGap != want)
        {
            throw new InvalidOperationException($"subtree gap of {x} is 0x{x.SubtreeMaxGap:x}, should be 0x{want:x}");
        }

        return x.TreeHeight;
    }

    private static ulong Gap(Vma v) => v.Start - (v.PrevVma?.End ?? 0);

    private static int Height(Vma? v) => v?.TreeHeight ?? 0;

    private static void Update(Vma v)
    {
        v.TreeHeight = 1 + Math.Max(Height(v.TreeLeft), Height(v.TreeRight));
        v.SubtreeMaxGap = Math.Max(Gap(v), Math.Max(v.TreeLeft?.SubtreeMaxGap ?? 0, v.TreeRight?.SubtreeMaxGap ?? 0));
    }

    /// <summary>Recomputes the augmentation from <paramref name="v"/> to the root after its gap changed.</summary>
    private static void Propagate(Vma? v)
    {
        for (; v is not null; v = v.TreeParent)
        {
            Update(v);
        }
    }

    private void ReplaceChild(Vma? parent, Vma old, Vma? replacement)
    {
        if (parent is null)
        {
            _root = replacement;
        }
        else if (parent.TreeLeft == old)
        {
            parent.TreeLeft = replacement;
        }
        else
        {
            parent.TreeRight = replacement;
        }
    }

    private void RebalanceUp(Vma? x)
    {
        while (x is not null)
        {
            Update(x);
            int balance = Height(x.TreeLeft) - Height(x.TreeRight);
            if (balance > 1)
            {
                if (Height(x.TreeLeft!.TreeLeft) < Height(x.TreeLeft.TreeRight))
                {
                    RotateLeft(x.TreeLeft);
                }

                x = RotateRight(x);
            }
            else if (balance < -1)
            {
                if (Height(x.TreeRight!.TreeRight) < Height(x.TreeRight.TreeLeft))
                {
                    RotateRight(x.TreeRight);
                }

                x = RotateLeft(x);
            }

            x = x.TreeParent;
        }
    }

    private Vma RotateLeft(Vma x)
    {
        var y = x.TreeRight!;
        x.TreeRight = y.TreeLeft;
        if (y.TreeLeft is not null)
        {
            y.TreeLeft.TreeParent = x;
        }

        ReplaceChild(x.TreeParent, x, y);
        y.TreeParent = x.TreeParent;
        y.TreeLeft = x;
        x.TreeParent = y;
        Update(x);
        Update(y);
        return y;
    }

    private Vma RotateRight(Vma x)
    {
        var y = x.TreeLeft!;
        x.TreeLeft = y.TreeRight;
        if (y.TreeRight is not null)
        {
            y.TreeRight.TreeParent = x;
        }

        ReplaceChild(x.TreeParent, x, y);
        y.TreeParent = x.TreeParent;
        y.TreeRight = x;
        x.TreeParent = y;
        Update(x);
        Update(y);
        return y;
    }
}
