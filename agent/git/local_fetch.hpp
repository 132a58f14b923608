// A fetch from a repository on this machine (a file:// source), without libgit2's local
// transport.
//
// That transport hands the objects over as a pack it builds as a server would for a
// network: it searches each object for a delta against ten others and compresses it at
// zlib's default level, and then the mirror's indexer inflates everything again. For a
// copy between two directories of one machine the delta search is most of the fetch
// (about 60% of a first `tetherd --once` over 1,000 files). Here the objects the mirror
// lacks are read from the source, each checked against its id, and written as one pack
// of whole objects (stored under 16 KiB, at zlib's fastest level above) with its index,
// made from the ids, offsets and CRC-32s as they are written: nothing is inflated or
// hashed twice.
//
// Threading: one caller at a time (libgit2's objects of both repositories).
#pragma once

#include <git2.h>

#include <cstdint>
#include <string>

namespace tether {

// Fetches `ref` (a full ref name) of the repository at `source_path` into `mirror`: the
// objects reachable from it that the mirror lacks, as one new pack, then the mirror's
// refs/tether/fetched set to what `ref` names (a commit, or an annotated tag). An object
// the mirror has is taken to come with everything it reaches, as a fetched pack does.
// `max_fetch` bounds the pack's size (0: no bound). False, with `error`, when the source
// cannot be read, lacks `ref` or an object, or the pack is refused; the mirror then has
// no new ref, and no new pack (but temporary files, tmp_pack_* and tmp_idx_*, if the
// process is killed while it writes them).
[[nodiscard]] bool FetchLocal(git_repository* mirror, const std::string& source_path,
                              const std::string& ref, std::uint64_t max_fetch, std::string& error);

}  // namespace tether
