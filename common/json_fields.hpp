// Typed, non-throwing reads of a JSON object's members: for JSON that comes from another
// process or a file (a client, a child, a state file), where nlohmann's value() and get()
// would throw on a wrong type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace tether {

// Typed, non-throwing reads of a JSON object's members. A missing member (or a non-object)
// yields the fallback; a member of another type yields an Error naming it.
class JsonFields {
 public:
  explicit JsonFields(const nlohmann::json& json) : json_(json) {}

  [[nodiscard]] Result<bool> Bool(std::string_view key, bool fallback) const;
  [[nodiscard]] Result<std::int64_t> Int(std::string_view key, std::int64_t fallback) const;
  [[nodiscard]] Result<std::string> String(std::string_view key,
                                           std::string_view fallback = {}) const;

  // Lenient reads for showing what a daemon sent: the fallback also for a wrong type.
  [[nodiscard]] bool BoolOr(std::string_view key, bool fallback) const;
  [[nodiscard]] std::int64_t IntOr(std::string_view key, std::int64_t fallback) const;
  [[nodiscard]] std::string StringOr(std::string_view key, std::string_view fallback = {}) const;

 private:
  // The member, or nullptr when there is none (or json_ is not an object).
  [[nodiscard]] const nlohmann::json* Find(std::string_view key) const;

  const nlohmann::json& json_;
};

}  // namespace tether
