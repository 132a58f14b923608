// A throwaway certificate authority for TLS tests, made with the openssl CLI at test start.
#pragma once

#include <string>
#include <vector>

namespace tether::testing {

struct CertificateFiles {
  std::string cert;  // PEM certificate path
  std::string key;   // PEM private key path (unencrypted)
};

class TestCa {
 public:
  // Creates a CA (RSA 2048, 1 day) under `dir`, which must exist. Aborts on failure.
  explicit TestCa(std::string dir);

  [[nodiscard]] const std::string& cert() const { return ca_.cert; }  // the CA certificate
  [[nodiscard]] const std::string& dir() const { return dir_; }

  // Issues a certificate signed by this CA with the given DNS and IP subject alternative
  // names, usable for servers and clients. `name` names the files and the CN. Aborts on
  // failure.
  [[nodiscard]] CertificateFiles Issue(const std::string& name,
                                       const std::vector<std::string>& dns_names,
                                       const std::vector<std::string>& ip_addresses = {}) const;

 private:
  std::string dir_;
  CertificateFiles ca_;
};

}  // namespace tether::testing
