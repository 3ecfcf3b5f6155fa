#pragma once

// One hiredis connection with pipelined round trips: what the Redis sink and
// `redis_client` share. A lost connection closes it; `open` again to go on.

#include <sys/time.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <hiredis/hiredis.h>

#include "annals/actors/redis_projection.hpp"

namespace annals::actors {

class redis_connection {
public:
  redis_connection() = default;
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;
  ~redis_connection();

  /// Connects to `addr` (AUTH, SELECT, PING); `timeout` bounds the connect and every later
  /// reply. Fails with `read_model_failed` naming the server.
  caf::error open(const redis_address& addr, std::chrono::milliseconds timeout);

  /// Sends every command of `commands`, then reads their replies, in order. A lost
  /// connection fails with `read_model_failed` and closes the connection.
  caf::expected<std::vector<redis_value>>
  pipeline(const std::vector<std::vector<std::string>>& commands);

  bool connected() const noexcept {
    return ctx_ != nullptr;
  }

  void close();

  /// `HOST:PORT/DB`.
  const std::string& where() const noexcept {
    return where_;
  }

  /// `read_model_failed`: "<what> on Redis <where>: <detail>".
  caf::error fail(std::string_view what, std::string_view detail) const;

private:
  caf::error lost(std::string_view what);

  redisContext* ctx_ = nullptr;
  std::string where_;
};

} // namespace annals::actors
