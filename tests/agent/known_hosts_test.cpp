#include "agent/git/known_hosts.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>

#include <doctest/doctest.h>

#include "common/encoding.hpp"

using tether::HostKeyMatch;
using tether::MatchKnownHost;

namespace {

const std::string kKeyA = "key-a-blob";
const std::string kKeyB = "key-b-blob";

std::string Line(const std::string& hosts, const std::string& blob) {
  return hosts + " ssh-ed25519 " + tether::Base64Encode(blob) + " comment\n";
}

// ssh-keygen -H's hashed host name for `name` with `salt`.
std::string Hashed(const std::string& name, const std::string& salt) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha1(), salt.data(), static_cast<int>(salt.size()),
       reinterpret_cast<const unsigned char*>(name.data()), name.size(), digest, &length);
  return "|1|" + tether::Base64Encode(salt) + "|" +
         tether::Base64Encode(std::string(reinterpret_cast<char*>(digest), length));
}

}  // namespace

TEST_CASE("known_hosts: plain, bracketed port, wildcards, negation, hashed, revoked") {
  const std::string file = "# comment\n\n" + Line("git.example.com,10.0.0.1", kKeyA) +
                           Line("[127.0.0.1]:2222", kKeyB) +
                           Line("*.fleet.example.com,!bad.fleet.example.com", kKeyA) +
                           Line(Hashed("[hashed.example.com]:2200", "salt-0123456789abcd"), kKeyB) +
                           "@revoked * ssh-ed25519 " + tether::Base64Encode("stolen") + "\n";
  CHECK(MatchKnownHost(file, "git.example.com", 22, kKeyA) == HostKeyMatch::kTrusted);
  CHECK(MatchKnownHost(file, "10.0.0.1", 22, kKeyA) == HostKeyMatch::kTrusted);
  CHECK(MatchKnownHost(file, "git.example.com", 22, kKeyB) == HostKeyMatch::kMismatch);
  CHECK(MatchKnownHost(file, "127.0.0.1", 2222, kKeyB) == HostKeyMatch::kTrusted);
  CHECK(MatchKnownHost(file, "127.0.0.1", 22, kKeyB) == HostKeyMatch::kUnknown);
  CHECK(MatchKnownHost(file, "a.fleet.example.com", 22, kKeyA) == HostKeyMatch::kTrusted);
  CHECK(MatchKnownHost(file, "bad.fleet.example.com", 22, kKeyA) == HostKeyMatch::kUnknown);
  CHECK(MatchKnownHost(file, "hashed.example.com", 2200, kKeyB) == HostKeyMatch::kTrusted);
  CHECK(MatchKnownHost(file, "hashed.example.com", 22, kKeyB) == HostKeyMatch::kUnknown);
  CHECK(MatchKnownHost(file, "git.example.com", 22, "stolen") == HostKeyMatch::kRevoked);
  CHECK(MatchKnownHost("", "git.example.com", 22, kKeyA) == HostKeyMatch::kUnknown);
  CHECK(MatchKnownHost("garbage\nonly two\n", "git.example.com", 22, kKeyA) ==
        HostKeyMatch::kUnknown);
}
