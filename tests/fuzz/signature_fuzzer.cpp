// Fuzzes what a Git server and an operator's files feed the trust code: commit objects
// with gpgsig headers, SSHSIG signatures and allowed_signers files.
//
// An input is three parts separated by lines "%%%%": an allowed_signers file, a raw
// commit object (as `git cat-file commit` prints it), and a payload that the commit's
// signature is also checked against directly. scripts/fuzz makes seeds from a real key.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/trust/ssh_signature.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 << 10) return -1;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view parts[3];
  for (int i = 0; i < 3; ++i) {
    const auto separator = input.find("\n%%%%\n");
    parts[i] = input.substr(0, separator);
    if (separator == std::string_view::npos) {
      input = {};
    } else {
      input.remove_prefix(separator + 6);
    }
  }
  auto signers = tether::ParseAllowedSigners(parts[0], "allowed_signers");
  const std::vector<tether::AllowedSigner> none;
  const auto& list = signers ? *signers : none;
  (void)tether::VerifySignedCommit(parts[1], list, 1'700'000'000);
  if (auto split = tether::SplitSignedCommit(parts[1])) {
    (void)tether::VerifySshSignature(parts[2], split->signature, list, "git", 1'700'000'000);
  }
  return 0;
}
