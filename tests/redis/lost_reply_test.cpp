// An EXEC whose reply is lost: a TCP proxy between the projection and redis-server
// forwards one chosen EXEC to the server, waits until the server has run it (a PING of its
// own on the same connection answers after it), and then cuts the projection's connection
// without the reply. The projection must settle that batch by reading the stored offset
// back: sending it again would apply it twice (or stop with offset_moved).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/redis_projection.hpp"
#include "annals/actors/system.hpp"
#include "persistence/journal_fixtures.hpp"
#include "redis/recording_model.hpp"
#include "redis/redis_server.hpp"

using namespace annals;
using namespace annals::persistence;
using namespace annals::persistence::test;

namespace {

/// Forwards loopback connections to `target_port`; the `drop_at`-th EXEC any client sends
/// reaches the server, and its client's connection is cut before the reply.
class exec_dropping_proxy {
public:
  exec_dropping_proxy(std::uint16_t target_port, int drop_at)
    : target_(target_port), drop_at_(drop_at) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 16) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread{[this] { accept_loop(); }};
  }

  ~exec_dropping_proxy() {
    stop_ = true;
    acceptor_.join();
    ::close(listener_);
    std::lock_guard guard{mtx_};
    for (auto& t : pumps_)
      t.join();
  }

  std::uint16_t port() const {
    return port_;
  }

  /// How many EXEC replies were withheld (0 or 1).
  int dropped() const {
    return dropped_;
  }

private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0)
        continue;
      int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0)
        continue;
      int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(target_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(server);
        ::close(client);
        continue;
      }
      std::lock_guard guard{mtx_};
      pumps_.emplace_back([this, client, server] { pump(client, server); });
    }
  }

  static bool write_all(int fd, const char* data, std::size_t n) {
    while (n > 0) {
      auto w = ::write(fd, data, n);
      if (w <= 0)
        return false;
      data += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  void pump(int client, int server) {
    std::string tail; // the end of what the client sent, to find EXEC across reads
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0)
        continue;
      if (p[0].revents != 0) {
        auto n = ::read(client, buf, sizeof buf);
        if (n <= 0 || !write_all(server, buf, static_cast<std::size_t>(n)))
          break;
        tail += std::string{buf, static_cast<std::size_t>(n)};
        int execs = 0;
        for (std::size_t at = 0; (at = tail.find("$4\r\nEXEC\r\n", at)) != std::string::npos; ++at)
          ++execs;
        if (tail.size() > 16)
          tail.erase(0, tail.size() - 16);
        if (execs > 0 && (seen_ += execs) >= drop_at_ && dropped_ == 0) {
          ++dropped_;
          withhold_reply(client, server);
          break;
        }
      }
      if (p[1].revents != 0) {
        auto n = ::read(server, buf, sizeof buf);
        if (n <= 0 || !write_all(client, buf, static_cast<std::size_t>(n)))
          break;
      }
    }
    ::close(client);
    ::close(server);
  }

  // Cuts the client at once, then waits (bounded) until the server has run everything it
  // was sent: its answer to a PING sent after the EXEC.
  void withhold_reply(int client, int server) {
    ::shutdown(client, SHUT_RDWR);
    static constexpr char ping[] = "*1\r\n$4\r\nPING\r\n";
    write_all(server, ping, sizeof ping - 1);
    std::string replies;
    char buf[65536];
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (!replies.ends_with("+PONG\r\n") && std::chrono::steady_clock::now() < deadline) {
      pollfd p{server, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0)
        continue;
      auto n = ::read(server, buf, sizeof buf);
      if (n <= 0)
        break;
      replies.append(buf, static_cast<std::size_t>(n));
    }
  }

  std::uint16_t target_;
  int drop_at_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> seen_{0};
  std::atomic<int> dropped_{0};
  std::thread acceptor_;
  std::mutex mtx_;
  std::vector<std::thread> pumps_;
};

} // namespace

TEST_CASE("a Redis projection settles an EXEC whose reply was lost by reading its offset back",
          "[redis][projection]") {
  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};
  redis_server server;
  exec_dropping_proxy proxy{server.port(), 3};
  auto j = std::make_shared<memory_journal>();
  std::uint64_t seq = 0;
  for (int i = 0; i < 10; ++i) {
    auto res = append(*j, "a", seq, {ev("test.happened")});
    REQUIRE(res);
    seq = res->last_seq;
  }
  auto proj = actors::spawn_projection(
    sys, j, std::make_shared<recording_model>(),
    actors::redis_projection_options{
      .name = "seen", .url = "redis://127.0.0.1:" + std::to_string(proxy.port()), .page_size = 2});
  auto st = proj.await_offset(10, bound);
  INFO(server.log());
  REQUIRE(st);
  CHECK(st->state != actors::projection_state::failed);
  CHECK(proxy.dropped() == 1);
  auto c = server.client();
  auto m = read_recorded(c, "seen:");
  CHECK(m.offset == 10);
  CHECK(m.log == one_to(10));
  CHECK(m.sum == 55);
}
