// Errors as values: Result<T> = tl::expected<T, Error>.
//
// An Error carries a std::error_code (errno values use std::generic_category) and a
// human-readable message. Each layer that passes an error up adds its context once, in
// front: "apply 'file:/etc/motd': write: No space left on device".
#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <tl/expected.hpp>

namespace tether {

class Error {
 public:
  Error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}
  Error(std::errc code, std::string message)
      : Error(std::make_error_code(code), std::move(message)) {}

  // "WHAT: strerror(err)", with code `err` in the generic category.
  [[nodiscard]] static Error FromErrno(int err, std::string_view what);

  [[nodiscard]] const std::error_code& code() const { return code_; }
  [[nodiscard]] const std::string& message() const { return message_; }

  // True when the error's code is `errc` (e.g. std::errc::no_such_file_or_directory).
  [[nodiscard]] bool Is(std::errc errc) const { return code_ == std::make_error_code(errc); }

  // Returns this error with "CONTEXT: " put in front of the message; the code is kept.
  [[nodiscard]] Error WithContext(std::string_view context) const&;
  [[nodiscard]] Error WithContext(std::string_view context) &&;

 private:
  std::error_code code_;
  std::string message_;
};

template <typename T>
using Result = tl::expected<T, Error>;

// The result of an operation that yields nothing but success or an Error.
using Status = Result<void>;

[[nodiscard]] inline tl::unexpected<Error> Fail(Error error) {
  return tl::unexpected<Error>(std::move(error));
}
[[nodiscard]] inline tl::unexpected<Error> Fail(std::errc code, std::string message) {
  return tl::unexpected<Error>(Error(code, std::move(message)));
}
[[nodiscard]] inline tl::unexpected<Error> FailErrno(int err, std::string_view what) {
  return tl::unexpected<Error>(Error::FromErrno(err, what));
}

// Passes a failed result up with context added: `return AddContext(r, "read profile")`.
template <typename T>
[[nodiscard]] tl::unexpected<Error> AddContext(const Result<T>& failed, std::string_view context) {
  return tl::unexpected<Error>(failed.error().WithContext(context));
}

}  // namespace tether
