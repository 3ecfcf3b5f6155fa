#pragma once

// Real nats-server processes: one server (R1) or a three-server cluster (R3, routes between
// all three), each with a config file and a store directory in a temporary directory, on
// free loopback ports. Servers are waited for with a bound (their /healthz monitoring
// endpoint) and SIGKILLed in the destructor; PR_SET_PDEATHSIG kills them too if the process
// that started them dies without running destructors. Free of Catch2, so that drivers
// that are not test suites (the crash test) use it too; failures throw std::runtime_error.

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "server_support.hpp"

#ifndef ANNALS_NATS_SERVER_BINARY
#define ANNALS_NATS_SERVER_BINARY "nats-server"
#endif

namespace annals::persistence::test {

/// The HTTP status of GET `path` on 127.0.0.1:`port`, or 0 if nothing answers.
inline int http_status(std::uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  int status = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    auto req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[64] = {};
      if (::recv(fd, buf, sizeof buf - 1, 0) > 12)
        status = std::atoi(buf + 9); // "HTTP/1.1 200 OK"
    }
  }
  ::close(fd);
  return status;
}

/// One nats-server process with JetStream, started from a config file in its own directory.
class nats_server {
public:
  nats_server(std::string name, const std::filesystem::path& dir, std::vector<std::uint16_t> routes,
              std::uint16_t cluster_port)
    : name_(std::move(name)), dir_(dir / name_), port_(free_port()), http_port_(free_port()) {
    std::filesystem::create_directories(dir_ / "store");
    std::ofstream conf{dir_ / "server.conf"};
    conf << "server_name: " << name_ << "\n"
         << "listen: 127.0.0.1:" << port_ << "\n"
         << "http: 127.0.0.1:" << http_port_ << "\n"
         << "max_payload: 2097152\n"
         << "jetstream { store_dir: \"" << (dir_ / "store").string() << "\" }\n";
    if (cluster_port != 0) {
      conf << "cluster {\n  name: annals\n  listen: 127.0.0.1:" << cluster_port
           << "\n  routes: [\n";
      for (auto r : routes)
        conf << "    nats-route://127.0.0.1:" << r << "\n";
      conf << "  ]\n}\n";
    }
  }
  ~nats_server() {
    kill9();
  }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;

  void start() {
    if (pid_ > 0)
      return;
    auto conf = (dir_ / "server.conf").string();
    auto log = (dir_ / "server.log").string();
    std::string bin = ANNALS_NATS_SERVER_BINARY;
    std::vector<char*> argv{bin.data(), const_cast<char*>("-c"), conf.data(), nullptr};
    auto parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
  }
  /// SIGKILL, then reap: what a crash of the machine's process looks like.
  void kill9() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool running() const {
    return pid_ > 0;
  }
  /// True once /healthz answers 200 (JetStream ready), false after `bound`.
  bool wait_healthy(std::chrono::milliseconds bound_ms = std::chrono::milliseconds{20'000}) const {
    auto deadline = std::chrono::steady_clock::now() + bound_ms;
    while (std::chrono::steady_clock::now() < deadline) {
      if (http_status(http_port_, "/healthz") == 200)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    return false;
  }
  std::string url() const {
    return "nats://127.0.0.1:" + std::to_string(port_);
  }
  const std::string& name() const {
    return name_;
  }
  std::string log() const {
    return file_text(dir_ / "server.log");
  }

private:
  std::string name_;
  std::filesystem::path dir_;
  std::uint16_t port_;
  std::uint16_t http_port_;
  pid_t pid_ = -1;
};

/// One server (`size` 1) or a cluster of `size` servers with routes to each other.
class nats_cluster {
public:
  explicit nats_cluster(int size) {
    std::vector<std::uint16_t> cluster_ports;
    for (int i = 0; i < size && size > 1; ++i)
      cluster_ports.push_back(free_port());
    for (int i = 0; i < size; ++i)
      servers_.push_back(std::make_unique<nats_server>(
        "n" + std::to_string(i + 1), dir_.path(), cluster_ports,
        size > 1 ? cluster_ports[static_cast<std::size_t>(i)] : std::uint16_t{0}));
    start_all();
  }

  void start_all() {
    for (auto& s : servers_)
      s->start();
    for (auto& s : servers_)
      if (!s->wait_healthy())
        throw std::runtime_error{"nats-server " + s->name() + " did not become healthy:\n"
                                 + s->log()};
  }
  void kill_all() {
    for (auto& s : servers_)
      s->kill9();
  }
  nats_server& server(std::size_t i) {
    return *servers_.at(i);
  }
  std::size_t size() const {
    return servers_.size();
  }
  /// All server URLs, comma-separated (what `jetstream_options::servers` takes).
  std::string urls() const {
    std::string out;
    for (const auto& s : servers_)
      out += (out.empty() ? "" : ",") + s->url();
    return out;
  }
  /// The index of the server whose name is `name`.
  std::size_t index_of(const std::string& name) const {
    for (std::size_t i = 0; i < servers_.size(); ++i)
      if (servers_[i]->name() == name)
        return i;
    return servers_.size();
  }

private:
  server_dir dir_;
  std::vector<std::unique_ptr<nats_server>> servers_;
};

/// A stream name no other test in this process uses.
inline std::string fresh_stream_name(const std::string& prefix = "T") {
  static std::mt19937_64 rng{std::random_device{}()};
  return prefix + std::to_string(rng() % 1'000'000'000);
}

} // namespace annals::persistence::test
