// A content's identity: its Git blob id, the SHA-1 of "blob <size>\0" and the bytes. A file
// taken from a commit is known by the id its tree already records, without being read.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace tether {

using ContentId = std::array<unsigned char, 20>;

[[nodiscard]] ContentId ContentIdOf(std::string_view content);

// The id of any Git object: the SHA-1 of "TYPE SIZE\0" and `data` (TYPE: "blob", "tree",
// "commit", "tag").
[[nodiscard]] ContentId GitObjectIdOf(std::string_view type, std::string_view data);

// As lowercase hex (40 characters), as Git prints a blob id.
[[nodiscard]] std::string ContentIdHex(const ContentId& id);
// The same into `out`, which has room for the 40 characters.
void ContentIdHexInto(const ContentId& id, char* out);

}  // namespace tether
