// The exactly-once sink into Redis: each batch's commands and the projection's offset in
// one WATCH / MULTI / EXEC (annals/actors/redis_projection.hpp says how a batch runs), with
// a reconnect when the server went away between two batches or during one.

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "annals/actors/projection_sink.hpp"
#include "annals/actors/redis_projection.hpp"
#include "redis/redis_connection.hpp"

namespace annals::actors {

namespace {

using commands = std::vector<std::vector<std::string>>;

// `prefix` with the glob characters of SCAN's MATCH escaped, followed by `*`.
std::string glob_of_prefix(std::string_view prefix) {
  std::string out;
  for (char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
      out += '\\';
    out += c;
  }
  return out + '*';
}

// A reply that says the server cannot answer yet (it is loading its data after a restart):
// worth a retry like a lost connection.
bool transient(const redis_value& v) {
  return v.type == redis_value::kind::error
         && (v.text.starts_with("LOADING") || v.text.starts_with("TRYAGAIN"));
}

class redis_sink final : public projection_sink {
public:
  redis_sink(redis_projection_options opts, std::shared_ptr<redis_projection_handler> h)
    : opts_(std::move(opts)), handler_(std::move(h)) {
    if (opts_.key_prefix.empty())
      opts_.key_prefix = opts_.name + ":";
    offset_key_ = redis_offset_key(opts_.key_prefix);
  }

  caf::expected<std::uint64_t> open() override {
    auto addr = parse_redis_url(opts_.url);
    if (!addr)
      return make_error(projection_errc::read_model_failed,
                        "projection '" + opts_.name + "': " + render(addr.error()));
    addr_ = std::move(*addr);
    // A server that is restarting (refusing connections, loading its append-only file) is
    // waited for as in `apply`.
    auto deadline = std::chrono::steady_clock::now() + opts_.retry_for;
    auto pause = std::chrono::milliseconds{50};
    for (;;) {
      caf::error err = connect();
      if (!err) {
        auto stored = stored_offset();
        if (stored)
          return stored->value_or(0);
        err = std::move(stored.error());
      }
      if (conn_.connected() || std::chrono::steady_clock::now() + pause > deadline)
        return err;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds{1'000});
    }
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    // The handler folds the batch into commands once; only sending them is retried.
    redis_batch b{opts_.key_prefix};
    batch_outcome out{prev, 0, {}};
    for (const auto& rec : batch) {
      if (opts_.filter.matches(rec)) {
        auto mark = b.commands().size();
        try {
          handler_->apply(b, rec);
        } catch (...) {
          b.truncate(mark);
          out.err = handler_error(opts_.name, rec, current_exception_text());
          break;
        }
        ++out.applied;
      }
      out.last_good = rec.offset;
    }
    if (out.last_good == prev)
      return out;
    auto deadline = std::chrono::steady_clock::now() + opts_.retry_for;
    auto pause = std::chrono::milliseconds{50};
    bool exec_unsettled = false; // an EXEC was sent and its reply lost
    for (;;) {
      caf::error err;
      if (!conn_.connected()) {
        err = connect();
        if (!err && exec_unsettled) {
          auto stored = stored_offset();
          if (!stored) {
            err = std::move(stored.error());
          } else if (stored->value_or(0) == out.last_good) { // that EXEC took effect
            return out;
          } else if (stored->value_or(0) != prev) {
            return moved(prev, *stored);
          } else {
            exec_unsettled = false; // it did not: send the batch again
          }
        }
      }
      if (!err) {
        auto res = run_batch(b.commands(), prev, out, exec_unsettled);
        if (!res.retry)
          return std::move(res.out);
        err = std::move(res.out.err);
      }
      if (std::chrono::steady_clock::now() + pause > deadline)
        return {prev, 0, std::move(err)};
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds{1'000});
    }
  }

  caf::error reset() override {
    auto deadline = std::chrono::steady_clock::now() + opts_.retry_for;
    for (;;) {
      caf::error err = conn_.connected() ? caf::error{} : connect();
      if (!err) {
        err = delete_all();
        if (!err)
          return {};
      }
      if (conn_.connected() || std::chrono::steady_clock::now() > deadline)
        return err;
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  }

  delivery guarantee() const noexcept override {
    return delivery::exactly_once;
  }

private:
  struct attempt {
    batch_outcome out;
    bool retry = false; ///< the connection was lost (or the server is loading): try again
  };

  // One try of a batch whose commands are `cmds` and whose outcome, if it commits, is `ok`.
  attempt run_batch(const commands& cmds, std::uint64_t prev, const batch_outcome& ok,
                    bool& exec_unsettled) {
    auto watched = conn_.pipeline({{"WATCH", offset_key_}, {"GET", offset_key_}});
    if (!watched)
      return {{prev, 0, std::move(watched.error())}, true};
    for (const auto& r : *watched)
      if (r.type == redis_value::kind::error)
        return refused("cannot watch the offset", r, prev);
    auto stored = parse_offset((*watched)[1]);
    if (!stored)
      return {{prev, 0, std::move(stored.error())}, false};
    if (stored->value_or(0) != prev) {
      (void)conn_.pipeline({{"UNWATCH"}});
      return {moved(prev, *stored), false};
    }
    commands tx;
    tx.reserve(cmds.size() + 3);
    tx.push_back({"MULTI"});
    tx.insert(tx.end(), cmds.begin(), cmds.end());
    tx.push_back({"SET", offset_key_, std::to_string(ok.last_good)});
    tx.push_back({"EXEC"});
    exec_unsettled = true;
    auto replies = conn_.pipeline(tx);
    if (!replies)
      return {{prev, 0, std::move(replies.error())}, true};
    exec_unsettled = false;
    const auto& exec = replies->back();
    if (exec.is_nil()) { // the offset key changed after WATCH
      auto now = stored_offset();
      if (!now)
        return {{prev, 0, std::move(now.error())}, false};
      return {moved(prev, *now), false};
    }
    if (exec.type != redis_value::kind::array) {
      // EXECABORT: a command was refused while queued, and nothing ran.
      std::string why = exec.text;
      for (std::size_t i = 1; i + 1 < replies->size(); ++i)
        if ((*replies)[i].type == redis_value::kind::error) {
          why += "; refused: " + describe(tx[i]) + ": " + (*replies)[i].text;
          break;
        }
      if (transient(exec))
        return {{prev, 0, conn_.fail("the server is not ready", why)}, true};
      return {{prev, 0, fail("Redis refused the batch's transaction", why)}, false};
    }
    // Commands that failed as they ran did not undo the others, nor the offset's SET.
    for (std::size_t i = 0; i < exec.elements.size() && i < cmds.size(); ++i) {
      if (exec.elements[i].type == redis_value::kind::error) {
        auto out = ok;
        out.err = fail("a command of the batch up to offset " + std::to_string(ok.last_good)
                         + " failed (the others and the offset were applied)",
                       describe(cmds[i]) + ": " + exec.elements[i].text);
        return {std::move(out), false};
      }
    }
    return {ok, false};
  }

  attempt refused(std::string_view what, const redis_value& r, std::uint64_t prev) {
    bool again = transient(r);
    if (again)
      conn_.close();
    return {{prev, 0, fail(what, r.text)}, again};
  }

  // SCAN for every key under the prefix, then delete them and store offset 0 in one EXEC.
  caf::error delete_all() {
    commands tx{{"MULTI"}};
    std::string cursor = "0";
    auto pattern = glob_of_prefix(opts_.key_prefix);
    do {
      auto page = conn_.pipeline({{"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}});
      if (!page)
        return std::move(page.error());
      const auto& r = page->front();
      if (r.type != redis_value::kind::array || r.elements.size() != 2
          || r.elements[1].type != redis_value::kind::array)
        return fail("cannot list the model's keys", r.text.empty() ? "unexpected reply" : r.text);
      cursor = r.elements[0].text;
      std::vector<std::string> del{"DEL"};
      for (const auto& k : r.elements[1].elements)
        del.push_back(k.text);
      if (del.size() > 1)
        tx.push_back(std::move(del));
    } while (cursor != "0");
    tx.push_back({"SET", offset_key_, "0"});
    tx.push_back({"EXEC"});
    auto replies = conn_.pipeline(tx);
    if (!replies)
      return std::move(replies.error());
    if (replies->back().type != redis_value::kind::array)
      return fail("cannot reset the model", replies->back().text);
    return {};
  }

  caf::expected<std::optional<std::uint64_t>> stored_offset() {
    auto r = conn_.pipeline({{"GET", offset_key_}});
    if (!r)
      return std::move(r.error());
    return parse_offset(r->front());
  }

  caf::expected<std::optional<std::uint64_t>> parse_offset(const redis_value& v) const {
    if (v.is_nil())
      return std::optional<std::uint64_t>{};
    std::uint64_t n = 0;
    if (v.type == redis_value::kind::string) {
      auto [end, ec] = std::from_chars(v.text.data(), v.text.data() + v.text.size(), n);
      if (ec == std::errc{} && end == v.text.data() + v.text.size())
        return std::optional<std::uint64_t>{n};
    }
    return fail("the offset key " + offset_key_ + " holds no offset",
                v.text.empty() ? "a value of another type" : "'" + v.text + "'");
  }

  batch_outcome moved(std::uint64_t prev, std::optional<std::uint64_t> stored) const {
    return {prev, 0,
            offset_moved_error(opts_.name, "Redis " + addr_.to_string() + " key " + offset_key_,
                               prev, stored)};
  }

  caf::error connect() {
    if (auto err = conn_.open(addr_, opts_.connect_timeout))
      return make_error(projection_errc::read_model_failed,
                        "projection '" + opts_.name + "': " + render(err));
    return {};
  }

  static std::string describe(const std::vector<std::string>& cmd) {
    std::string s;
    for (std::size_t i = 0; i < cmd.size() && i < 3; ++i)
      s += (i > 0 ? " " : "") + cmd[i];
    return s + (cmd.size() > 3 ? " ..." : "");
  }

  caf::error fail(std::string_view what, std::string_view detail) const {
    return make_error(projection_errc::read_model_failed,
                      "projection '" + opts_.name + "': " + std::string{what} + " on Redis "
                        + addr_.to_string() + ": " + std::string{detail});
  }

  redis_projection_options opts_;
  std::shared_ptr<redis_projection_handler> handler_;
  redis_address addr_;
  std::string offset_key_;
  redis_connection conn_;
};

} // namespace

redis_projection_handler::~redis_projection_handler() = default;

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<redis_projection_handler> handler,
                            redis_projection_options opts) {
  sink_options so{opts.name, opts.page_size, opts.max_queued_batches};
  return spawn_projection(sys, std::move(journal),
                          std::make_shared<redis_sink>(std::move(opts), std::move(handler)),
                          std::move(so));
}

} // namespace annals::actors
