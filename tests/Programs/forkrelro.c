/* Children forked by a dynamically linked program, which do nothing but exit: fork copies the
 * page tables of the VMAs that have an anon_vma only, so a child's RssFile holds the parent's
 * file pages of its written (private, copied-on-write) segments and not those of its read-only
 * ones. The dynamic loader's read-only segment and its RELRO segment (read-only after
 * relocation, charged as writable) lie at adjoining file offsets but stay two VMAs, as
 * VM_ACCOUNT differs: a model that merges them copies the read-only segment's pages into every
 * child.
 *   forkrelro */
#define _GNU_SOURCE
#include "common.h"

int main(void)
{
    for (int i = 0; i < 2; i++)
        if (run_child(NULL))
            return 1;
    print_status("end");
    return 0;
}
