#pragma once

// What a jetstream_journal shares between its threads: the connection, the writer's
// queue and per-id cache, the reader's task queue, and the commit listeners.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nats/nats.h>

#include "annals/persistence/jetstream_journal.hpp"
#include "jetstream/api.hpp"
#include "jetstream/envelope.hpp"

namespace annals::persistence::jetstream {

using clock = std::chrono::steady_clock;

/// `journal_errc::unavailable` for statuses that mean "no server or no leader answered",
/// `storage_error` for the rest; the context names `what` and the client's text.
caf::error nats_error(natsStatus s, const std::string& what, jsErrCode code = jsErrCode{});

struct msg_deleter {
  void operator()(natsMsg* m) const noexcept {
    natsMsg_Destroy(m);
  }
};
using msg_ptr = std::unique_ptr<natsMsg, msg_deleter>;

/// The payload of a message, without a copy.
inline std::string_view data_of(natsMsg* m) {
  return {natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))};
}

/// The last stored append of one persistence id, as far as this writer knows.
struct id_head {
  std::uint64_t seq = 0;        ///< aggregate seq of its last event (0: no events)
  std::uint64_t stream_seq = 0; ///< stream sequence of its message (0: none)
  event_hash hash{};            ///< chain value after it
  std::string msg_id;           ///< its Nats-Msg-Id
};

/// The last message of one persistence id's subject.
struct stored_append {
  envelope env;
  std::uint64_t stream_seq = 0;
  std::string msg_id; ///< its Nats-Msg-Id header (empty if none)
};

/// An append between submission and completion.
struct pending_append {
  append_request req;
  callback<append_result> done;
  clock::time_point give_up;
  std::string msg_id; ///< Nats-Msg-Id, the same for every retry of one publish
  std::string body;   ///< the encoded envelope as published
  std::int64_t timestamp_us = 0;
  std::uint64_t expected_stream_seq = 0;
  clock::time_point retry_at;
  std::string token;       ///< reply subject suffix of what is in flight for it
  bool lookup = false;     ///< in flight: a lookup of the id's head, not the publish
  bool fresh_head = false; ///< the id's head was read for this append
};

/// A reply on the writer's inbox: the token after the inbox prefix, and the message.
struct reply {
  std::string token;
  msg_ptr msg;
};

/// The writer's per-id state: a cached head and the appends waiting for it; only the
/// front one is in flight.
struct id_queue {
  bool known = false;
  id_head head;
  std::deque<pending_append> waiting;
};

struct listener_slot {
  std::mutex mtx;
  bool active = true;
  commit_listener fn;
  natsSubscription* sub = nullptr;
};

} // namespace annals::persistence::jetstream

namespace annals::persistence {

struct jetstream_journal::impl : std::enable_shared_from_this<jetstream_journal::impl> {
  jetstream_options opts;
  jetstream::subjects names;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* inbox_sub = nullptr;
  std::string inbox; ///< reply prefix; a publish's reply subject is inbox + "." + token
  std::string msg_id_prefix;
  std::uint64_t next_token = 1;

  // Writer.
  std::mutex wmtx;
  std::condition_variable wcv;
  std::deque<jetstream::pending_append> submitted;
  std::deque<jetstream::reply> replies;
  bool stopping = false;
  std::thread writer;
  // Writer thread only.
  std::unordered_map<std::string, jetstream::id_queue> ids;
  std::unordered_map<std::string, std::string> in_flight; ///< token -> persistence id
  std::size_t waiting = 0; ///< appends taken from `submitted` and not finished

  // Reader.
  std::mutex rmtx;
  std::condition_variable rcv;
  std::deque<std::function<void(bool)>> tasks; ///< called with true once closed
  bool rstopping = false;
  std::thread reader;

  // Listeners.
  std::mutex lmtx;
  std::map<std::uint64_t, std::shared_ptr<jetstream::listener_slot>> listeners;
  std::uint64_t next_listener = 1;

  std::mutex close_mtx;
  std::atomic<bool> closed{false};

  ~impl();

  caf::error connect();
  caf::error ensure_streams();
  void run_writer();
  void run_reader();
  void post_read(std::function<void(bool)> task);
  void shutdown();

  // Blocking helpers used by the reader thread (and the writer for lookups).
  caf::expected<std::optional<jetstream::stored_append>>
  last_append(const std::string& persistence_id);
  caf::expected<std::uint64_t> stream_last_seq(const std::string& stream);
  /// Delivers the messages on `filter` with stream sequence in [first, last] to `visit`
  /// (message, stream seq) until it returns false.
  caf::error scan(const std::string& stream, const std::string& filter, std::uint64_t first,
                  std::uint64_t last, const std::function<bool(natsMsg*, std::uint64_t)>& visit);
  /// As `scan` without a filter, one direct get per sequence: no consumer to create, which
  /// costs more than a few gets (a follower's or a projection's read of the newest appends).
  caf::error fetch(const std::string& stream, std::uint64_t first, std::uint64_t last,
                   const std::function<bool(natsMsg*, std::uint64_t)>& visit);

  // Writer internals (writer.cpp).
  void start_front(const std::string& persistence_id);
  void publish(jetstream::pending_append& p);
  void on_reply(jetstream::reply& r);
  /// Completes the front append of `id` as stored at `stream_seq`.
  void complete_stored(const std::string& id, std::uint64_t stream_seq);
  void finish_front(const std::string& persistence_id, caf::expected<append_result> res);
  void send_lookup(jetstream::pending_append& p);
  void on_lookup(const std::string& persistence_id, jetstream::api_reply& ans);
  void check_timeouts();
};

} // namespace annals::persistence
