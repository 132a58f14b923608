// A file's metadata as one short string: it changes when the device, inode, size, mtime,
// ctime, mode or owner does. Any write, rename, chmod or chown moves the ctime, which no
// one can set back, so a file whose mark is the one taken after tether wrote it is as
// tether left it. Not a cryptographic hash, and need not be: whoever could make two
// stats collide could as well keep the stat unchanged.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "common/filesystem.hpp"

namespace tether {

inline constexpr std::size_t kStatMarkSize = 7;  // characters: 42 bits

[[nodiscard]] std::string StatMark(const FileStat& stat);

// The same characters, held inline: for a plan that compares one per file.
using StatMarkChars = std::array<char, kStatMarkSize>;
[[nodiscard]] StatMarkChars StatMarkOf(const FileStat& stat);

}  // namespace tether
