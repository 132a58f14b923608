// ParseAllowedSigners: ssh-keygen's ALLOWED SIGNERS format, parsed as OpenSSH 9 does
// (sshsig.c parse_principals_key_and_options and sshsigopt_parse), but strictly: every line
// is checked, not only those whose principal is looked for.
#include <cctype>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/trust/ssh_key.hpp"
#include "agent/trust/ssh_signature.hpp"

namespace tether {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

void SkipBlanks(std::string_view& rest) {
  while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
}

// The next blank-separated token.
std::string_view NextToken(std::string_view& rest) {
  std::size_t end = 0;
  while (end < rest.size() && !IsBlank(rest[end])) ++end;
  const std::string_view token = rest.substr(0, end);
  rest.remove_prefix(end);
  SkipBlanks(rest);
  return token;
}

// The principals token, like OpenSSH's strdelimw: up to a blank, or a double-quoted part that
// may hold blanks (the quotes are dropped and the closing quote ends the token).
std::optional<std::string> NextPrincipals(std::string_view& rest) {
  std::string token;
  while (!rest.empty() && !IsBlank(rest.front())) {
    if (rest.front() == '"') {
      const std::size_t close = rest.find('"', 1);
      if (close == std::string_view::npos) return std::nullopt;
      token.append(rest.substr(1, close - 1));
      rest.remove_prefix(close + 1);
      break;
    }
    token += rest.front();
    rest.remove_prefix(1);
  }
  SkipBlanks(rest);
  return token;
}

// The options token, like sshkey_advance_past_options: up to a blank outside double quotes
// (\" inside quotes is an escaped quote). Nullopt for an unterminated quote.
std::optional<std::string_view> NextOptions(std::string_view& rest) {
  bool quoted = false;
  std::size_t end = 0;
  for (; end < rest.size() && (quoted || !IsBlank(rest[end])); ++end) {
    if (rest[end] == '\\' && end + 1 < rest.size() && rest[end + 1] == '"') {
      ++end;
    } else if (rest[end] == '"') {
      quoted = !quoted;
    }
  }
  if (quoted) return std::nullopt;
  const std::string_view token = rest.substr(0, end);
  rest.remove_prefix(end);
  SkipBlanks(rest);
  return token;
}

bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

// A quoted option value, like OpenSSH's opt_dequote.
Result<std::string> Dequote(std::string_view& options, std::string_view name) {
  if (options.empty() || options.front() != '"') {
    return Fail(std::errc::invalid_argument, std::string(name) + ": missing opening quote");
  }
  options.remove_prefix(1);
  std::string value;
  while (!options.empty() && options.front() != '"') {
    if (options.front() == '\\' && options.size() > 1 && options[1] == '"') {
      options.remove_prefix(1);
    }
    value += options.front();
    options.remove_prefix(1);
  }
  if (options.empty()) {
    return Fail(std::errc::invalid_argument, std::string(name) + ": missing closing quote");
  }
  options.remove_prefix(1);
  return value;
}

bool ParseDigits(std::string_view text, int& value) {
  value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  return true;
}

bool IsLeapYear(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

// YYYYMMDD[HHMM[SS]] in local time, or UTC with a "Z" or "UTC" suffix: OpenSSH's
// parse_absolute_time, with the fields range-checked.
std::optional<std::int64_t> ParseAbsoluteTime(std::string_view text) {
  bool utc = false;
  if (text.size() > 1 && (text.back() == 'Z' || text.back() == 'z')) {
    utc = true;
    text.remove_suffix(1);
  } else if (text.size() > 3 && StartsWithNoCase(text.substr(text.size() - 3), "utc")) {
    utc = true;
    text.remove_suffix(3);
  }
  if (text.size() != 8 && text.size() != 12 && text.size() != 14) return std::nullopt;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ParseDigits(text.substr(0, 4), year) || !ParseDigits(text.substr(4, 2), month) ||
      !ParseDigits(text.substr(6, 2), day)) {
    return std::nullopt;
  }
  if (text.size() >= 12 &&
      (!ParseDigits(text.substr(8, 2), hour) || !ParseDigits(text.substr(10, 2), minute))) {
    return std::nullopt;
  }
  if (text.size() == 14 && !ParseDigits(text.substr(12, 2), second)) return std::nullopt;
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 ||
      day > kDays[month - 1] + (month == 2 && IsLeapYear(year) ? 1 : 0) || hour > 23 ||
      minute > 59 || second > 59) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  tm.tm_isdst = -1;
  const std::time_t t = utc ? timegm(&tm) : std::mktime(&tm);
  if (t <= 0) return std::nullopt;  // OpenSSH refuses the epoch (0 means "no limit" there)
  return static_cast<std::int64_t>(t);
}

// The options field (sshsigopt_parse), into `signer`.
Status ParseOptions(std::string_view options, AllowedSigner& signer) {
  bool cert_authority = false;
  while (!options.empty()) {
    if (StartsWithNoCase(options, "cert-authority")) {
      options.remove_prefix(std::string_view("cert-authority").size());
      cert_authority = true;
    } else if (StartsWithNoCase(options, "namespaces=")) {
      options.remove_prefix(std::string_view("namespaces=").size());
      if (signer.namespaces) return Fail(std::errc::invalid_argument, "namespaces given twice");
      auto value = Dequote(options, "namespaces");
      if (!value) return Fail(value.error());
      signer.namespaces = std::move(*value);
    } else if (StartsWithNoCase(options, "valid-after=") ||
               StartsWithNoCase(options, "valid-before=")) {
      const bool after = StartsWithNoCase(options, "valid-after=");
      const std::string_view name = after ? "valid-after" : "valid-before";
      options.remove_prefix(name.size() + 1);
      std::optional<std::int64_t>& field = after ? signer.valid_after : signer.valid_before;
      if (field) return Fail(std::errc::invalid_argument, std::string(name) + " given twice");
      auto value = Dequote(options, name);
      if (!value) return Fail(value.error());
      field = ParseAbsoluteTime(*value);
      if (!field) {
        return Fail(std::errc::invalid_argument, std::string(name) + ": invalid time \"" + *value +
                                                     "\" (use YYYYMMDD[HHMM[SS]], with Z for UTC)");
      }
    } else {
      const std::size_t end = options.find_first_of("=,");
      return Fail(std::errc::invalid_argument,
                  "unknown option '" + std::string(options.substr(0, end)) + "'");
    }
    if (options.empty()) break;
    if (options.front() != ',') {
      return Fail(std::errc::invalid_argument,
                  "unexpected '" + std::string(options.substr(0, 1)) + "' after an option");
    }
    options.remove_prefix(1);
    if (options.empty()) return Fail(std::errc::invalid_argument, "option list ends with ','");
  }
  if (cert_authority) {
    return Fail(std::errc::not_supported,
                "cert-authority is not supported (only plain keys, not certificates)");
  }
  if (signer.valid_after && signer.valid_before && *signer.valid_before <= *signer.valid_after) {
    return Fail(std::errc::invalid_argument, "valid-before is not after valid-after");
  }
  return {};
}

// A token that names a key type rather than options (which have '=' or are a flag).
bool LooksLikeKeyType(std::string_view token) {
  return token.find_first_of("=\"") == std::string_view::npos &&
         !StartsWithNoCase(token, "cert-authority") &&
         (ssh::IsSupportedKeyType(token) || ssh::IsKnownUnsupportedKeyType(token) ||
          token.starts_with("ssh-") || token.starts_with("ecdsa-") ||
          token.find('@') != std::string_view::npos);
}

Result<AllowedSigner> ParseLine(std::string_view rest) {
  AllowedSigner signer;
  const std::optional<std::string> principals = NextPrincipals(rest);
  if (!principals) return Fail(std::errc::invalid_argument, "missing closing quote");
  if (principals->empty()) return Fail(std::errc::invalid_argument, "empty principals");
  signer.principals = *principals;
  if (rest.empty()) return Fail(std::errc::invalid_argument, "missing key after the principals");

  std::string_view type;
  {
    std::string_view lookahead = rest;
    type = NextToken(lookahead);
    if (LooksLikeKeyType(type)) {
      rest = lookahead;
    } else {
      const std::optional<std::string_view> options = NextOptions(rest);
      if (!options) return Fail(std::errc::invalid_argument, "unterminated quote in options");
      if (auto parsed = ParseOptions(*options, signer); !parsed) return Fail(parsed.error());
      if (rest.empty()) return Fail(std::errc::invalid_argument, "missing key after the options");
      type = NextToken(rest);
    }
  }
  if (!ssh::IsSupportedKeyType(type)) {
    return Fail(std::errc::not_supported, "unsupported key type '" + std::string(type) +
                                              "' (supported: " + ssh::SupportedKeyTypes() + ")");
  }
  const std::string_view base64 = NextToken(rest);  // the rest is a comment
  if (base64.empty()) return Fail(std::errc::invalid_argument, "missing key data");
  const std::optional<std::string> blob = ssh::Base64Decode(base64);
  if (!blob) return Fail(std::errc::invalid_argument, "key data is not valid base64");
  auto key = ssh::ParsePublicKey(*blob);
  if (!key) return Fail(std::errc::invalid_argument, "invalid key: " + key.error().message());
  if (key->type != type) {
    return Fail(std::errc::invalid_argument, "key type '" + std::string(type) +
                                                 "' does not match the key's '" + key->type + "'");
  }
  signer.key_type = key->type;
  signer.fingerprint = ssh::Fingerprint(key->blob);
  signer.key_blob = std::move(key->blob);
  return signer;
}

}  // namespace

Result<std::vector<AllowedSigner>> ParseAllowedSigners(std::string_view text,
                                                       const std::string& file) {
  std::vector<AllowedSigner> signers;
  int number = 0;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    ++number;
    while (!line.empty() && (line.back() == '\r' || IsBlank(line.back()))) line.remove_suffix(1);
    SkipBlanks(line);
    if (line.empty() || line.front() == '#') continue;
    auto signer = ParseLine(line);
    if (!signer) {
      return Fail(Error(SignatureErrc::kBadAllowedSigners,
                        file + ":" + std::to_string(number) + ": " + signer.error().message()));
    }
    signer->file = file;
    signer->line = number;
    signers.push_back(std::move(*signer));
  }
  return signers;
}

}  // namespace tether
