#include "common/json_fields.hpp"

#include <limits>

namespace tether {

namespace {

using Json = nlohmann::json;

tl::unexpected<Error> WrongType(std::string_view key, const char* wanted) {
  return Fail(std::errc::invalid_argument, "'" + std::string(key) + "' must be " + wanted);
}

}  // namespace

const Json* JsonFields::Find(std::string_view key) const {
  if (!json_.is_object()) return nullptr;
  const auto it = json_.find(key);
  return it == json_.end() ? nullptr : &*it;
}

Result<bool> JsonFields::Bool(std::string_view key, bool fallback) const {
  const Json* value = Find(key);
  if (value == nullptr) return fallback;
  if (!value->is_boolean()) return WrongType(key, "true or false");
  return value->get<bool>();
}

Result<std::int64_t> JsonFields::Int(std::string_view key, std::int64_t fallback) const {
  const Json* value = Find(key);
  if (value == nullptr) return fallback;
  if (value->is_number_integer()) {
    // An unsigned value above the signed range is refused rather than wrapped.
    if (value->is_number_unsigned() &&
        value->get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return WrongType(key, "an integer in range");
    }
    return value->get<std::int64_t>();
  }
  return WrongType(key, "an integer");
}

Result<std::string> JsonFields::String(std::string_view key, std::string_view fallback) const {
  const Json* value = Find(key);
  if (value == nullptr) return std::string(fallback);
  if (!value->is_string()) return WrongType(key, "a string");
  return value->get<std::string>();
}

bool JsonFields::BoolOr(std::string_view key, bool fallback) const {
  return Bool(key, fallback).value_or(fallback);
}

std::int64_t JsonFields::IntOr(std::string_view key, std::int64_t fallback) const {
  const Json* value = Find(key);
  if (value != nullptr && value->is_number()) {
    if (value->is_number_float()) {
      const double number = value->get<double>();
      // Out of range (or NaN) is no integer: converting it would be undefined.
      if (!(number > -9.2e18 && number < 9.2e18)) return fallback;
      return static_cast<std::int64_t>(number);
    }
    return Int(key, fallback).value_or(fallback);
  }
  return fallback;
}

std::string JsonFields::StringOr(std::string_view key, std::string_view fallback) const {
  return String(key, fallback).value_or(std::string(fallback));
}

}  // namespace tether
