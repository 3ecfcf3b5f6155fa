#pragma once

// What the fixtures that run real servers (nats-server, postgres) share, without Catch2 so
// that drivers such as the crash test can use them: a scratch directory, a file's text and
// a free loopback port.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace annals::persistence::test {

/// A fresh directory under the system's temp directory, removed with everything in it.
class server_dir {
public:
  server_dir() {
    auto pattern = (std::filesystem::temp_directory_path() / "annals-server-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error{"cannot create a directory for nats-server under " + pattern};
    path_ = pattern;
  }
  ~server_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  server_dir(const server_dir&) = delete;
  server_dir& operator=(const server_dir&) = delete;
  const std::filesystem::path& path() const {
    return path_;
  }

private:
  std::filesystem::path path_;
};

/// The whole content of the file at `path` (empty if it cannot be read).
inline std::string file_text(const std::filesystem::path& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream all;
  all << in.rdbuf();
  return all.str();
}

/// A port nobody listens on right now (the kernel's choice for an ephemeral bind).
inline std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

} // namespace annals::persistence::test
