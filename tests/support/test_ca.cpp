#include "tests/support/test_ca.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "common/process.hpp"

namespace tether::testing {

namespace {

void RunOpenssl(const std::vector<std::string>& argv) {
  RunOptions options;
  options.argv = argv;
  options.timeout = std::chrono::seconds(60);
  auto result = Run(options);
  if (!result || !result->ok()) {
    std::fprintf(stderr, "TestCa: %s failed: %s\n", argv[1].c_str(),
                 result ? result->err.c_str() : result.error().message().c_str());
    std::abort();
  }
}

}  // namespace

TestCa::TestCa(std::string dir) : dir_(std::move(dir)) {
  ca_ = {dir_ + "/ca.pem", dir_ + "/ca.key"};
  RunOpenssl({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_.key,
              "-out", ca_.cert, "-days", "1", "-subj", "/CN=tether test CA", "-addext",
              "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"});
}

CertificateFiles TestCa::Issue(const std::string& name, const std::vector<std::string>& dns_names,
                               const std::vector<std::string>& ip_addresses) const {
  CertificateFiles files = {dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key"};
  const std::string csr = dir_ + "/" + name + ".csr";
  const std::string ext = dir_ + "/" + name + ".ext";
  std::string sans;
  for (const auto& dns : dns_names) sans += (sans.empty() ? "DNS:" : ",DNS:") + dns;
  for (const auto& ip : ip_addresses) sans += (sans.empty() ? "IP:" : ",IP:") + ip;
  {
    std::ofstream out(ext);
    out << "basicConstraints=CA:FALSE\n"
        << "keyUsage=digitalSignature,keyEncipherment\n"
        << "extendedKeyUsage=serverAuth,clientAuth\n";
    if (!sans.empty()) out << "subjectAltName=" << sans << "\n";
  }
  RunOpenssl({"openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", files.key, "-out", csr,
              "-subj", "/CN=" + name});
  RunOpenssl({"openssl", "x509", "-req", "-in", csr, "-CA", ca_.cert, "-CAkey", ca_.key,
              "-CAcreateserial", "-out", files.cert, "-days", "1", "-extfile", ext});
  return files;
}

}  // namespace tether::testing
