#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "common/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_ca.hpp"
#include "tests/support/wait_for.hpp"

using namespace std::chrono_literals;
using tether::testing::TempDir;
using tether::testing::TestCa;
using tether::testing::WaitFor;

TEST_CASE("TempDir is created empty and removed with its contents") {
  std::string path;
  {
    TempDir dir("support");
    path = dir.path();
    CHECK(std::filesystem::is_directory(path));
    CHECK(std::filesystem::is_empty(path));
    dir.WriteFile("a/b/c.txt", "hello", 0600);
    CHECK(dir.ReadFile("a/b/c.txt") == "hello");
    struct stat st {};
    REQUIRE(stat(dir.Path("a/b/c.txt").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("WaitFor returns as soon as the predicate holds") {
  std::atomic<bool> flag = false;
  std::thread setter([&] {
    std::this_thread::sleep_for(20ms);
    flag = true;
  });
  const auto start = std::chrono::steady_clock::now();
  CHECK(WaitFor([&] { return flag.load(); }, 5s));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  setter.join();
}

TEST_CASE("WaitFor gives up at its deadline") {
  int calls = 0;
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(WaitFor(
      [&] {
        ++calls;
        return false;
      },
      50ms));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 50ms);
  CHECK(elapsed < 2s);
  CHECK(calls >= 2);
}

TEST_CASE("TestCa issues certificates that openssl verifies against the CA only") {
  TempDir dir("ca");
  TestCa ca(dir.path());
  const auto server = ca.Issue("server", {"localhost"}, {"127.0.0.1"});

  tether::RunOptions verify;
  verify.argv = {"openssl", "verify", "-CAfile", ca.cert(), server.cert};
  auto good = tether::Run(verify);
  REQUIRE(good);
  CHECK(good->ok());

  TempDir other_dir("ca-other");
  TestCa other(other_dir.path());
  verify.argv = {"openssl", "verify", "-CAfile", other.cert(), server.cert};
  auto bad = tether::Run(verify);
  REQUIRE(bad);
  CHECK_FALSE(bad->ok());

  verify.argv = {"openssl", "x509", "-in", server.cert, "-noout", "-ext", "subjectAltName"};
  auto sans = tether::Run(verify);
  REQUIRE(sans);
  CHECK(sans->out.find("DNS:localhost") != std::string::npos);
  CHECK(sans->out.find("IP Address:127.0.0.1") != std::string::npos);
}
