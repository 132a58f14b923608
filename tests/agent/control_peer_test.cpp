// Who may use the control socket: the peer's groups as the kernel recorded them when it
// connected, not as /proc says later.
#include <grp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <doctest/doctest.h>

#include "agent/daemon/control_server.hpp"
#include "common/unique_fd.hpp"
#include "tests/support/temp_dir.hpp"

TEST_CASE("A peer's groups are those it had when it connected, though it exited since") {
  if (geteuid() != 0) return;  // setgroups needs root; CI runs as root
  tether::testing::TempDir dir("control-peer");
  const std::string path = dir.Path("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  tether::UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(listener.valid());
  REQUIRE(bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(listen(listener.get(), 4) == 0);

  const gid_t supplementary[] = {54321, 54323};
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const int peer = socket(AF_UNIX, SOCK_STREAM, 0);
    const bool ok = setgroups(2, supplementary) == 0 && setgid(54322) == 0 &&
                    connect(peer, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);  // gone, its pid free for reuse
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  tether::UniqueFd accepted(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(accepted.valid());
  CHECK(tether::PeerHasGroup(accepted.get(), 54321));
  CHECK(tether::PeerHasGroup(accepted.get(), 54323));
  CHECK(tether::PeerHasGroup(accepted.get(), 54322));  // primary
  CHECK_FALSE(tether::PeerHasGroup(accepted.get(), 0));
  CHECK_FALSE(tether::PeerHasGroup(accepted.get(), 54324));
}
