// GET /feed and GET /feed/contract: the bank's public messages (bank::public_contract) read
// from the committed journal, for consumers that poll over HTTP instead of following NATS.
//
// A page reads the journal from `after + 1` in pages of `read_page` records, translates each
// record and stops at `limit` messages, at the journal's end, or after `scan_bound` records;
// `next` is the offset of the last record it looked at, mapped or not. A long poll (`wait`)
// whose first read finds nothing registers a waiter: the journal's commit listener starts a
// new read for every waiter behind the batch's last offset, and one timer thread answers the
// waiters whose time is up. No thread blocks while a request waits.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include "account/public_contract.hpp"
#include "annals/error.hpp"
#include "service/bank/request_fields.hpp"
#include "service/bank/routes.hpp"

namespace service {

namespace json = boost::json;
namespace ap = annals::persistence;
namespace aa = annals::actors;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t default_limit = 100;
constexpr std::uint64_t max_limit = 1000;
constexpr std::uint64_t max_wait_seconds = 30;
constexpr std::size_t read_page = 500;
// Records one request reads at most, so that a long run of unmapped events (football) costs
// a bounded read; the consumer continues from `next`.
constexpr std::size_t scan_bound = 10 * read_page;

using clock = std::chrono::steady_clock;

/// What one read found: the messages in wire form and where to continue.
struct feed_page {
  std::vector<std::string> messages;
  std::uint64_t next = 0;
};

http::response page_response(const feed_page& p) {
  std::string body = "{\"messages\":[";
  for (std::size_t i = 0; i < p.messages.size(); ++i) {
    if (i > 0)
      body += ',';
    body += p.messages[i];
  }
  body += "],\"next\":" + std::to_string(p.next) + "}\n";
  return http::response{200, std::move(body)};
}

http::response read_error(const caf::error& err) {
  return http::json_error(503, "journal_unavailable", annals::render(err));
}

/// The reads and the waiting long polls of one service; see the file comment.
class feed : public std::enable_shared_from_this<feed> {
public:
  using done_fn = std::function<void(caf::expected<feed_page>)>;

  explicit feed(ap::journal_ptr journal)
    : journal_(std::move(journal)), contract_(bank::public_contract()) {}

  feed(const feed&) = delete;
  feed& operator=(const feed&) = delete;

  ~feed() {
    stop();
  }

  const aa::public_contract& contract() const noexcept {
    return contract_;
  }

  /// Subscribes to the journal's commits and starts the timer thread.
  void start() {
    std::weak_ptr<feed> weak = weak_from_this();
    subscription_ = journal_->subscribe([weak](const std::vector<ap::event_record>& batch) {
      if (auto self = weak.lock(); self && !batch.empty())
        self->on_commit(batch.back().offset);
    });
    timer_ = std::thread{[this] { run_timer(); }};
  }

  /// Answers every waiting request with what it has (an empty page), stops listening and
  /// joins the timer thread. Idempotent.
  void stop() {
    std::map<std::uint64_t, waiter> pending;
    {
      std::lock_guard guard{mtx_};
      if (stopped_)
        return;
      stopped_ = true;
      pending.swap(waiters_);
    }
    cv_.notify_all();
    if (timer_.joinable())
      timer_.join();
    if (subscription_)
      journal_->unsubscribe(*subscription_);
    for (auto& [id, w] : pending)
      w.respond(page_response({{}, w.after}));
  }

  /// Reads up to `limit` messages after `after` and calls `done` (on a journal thread).
  void read(std::uint64_t after, std::size_t limit, done_fn done) {
    auto acc = std::make_shared<feed_page>();
    acc->next = after;
    read_more(std::move(acc), limit, scan_bound, std::move(done));
  }

  /// Answers `respond` once a read after `after` finds anything new, or with an empty page
  /// at `deadline`.
  void wait(std::uint64_t after, std::size_t limit, clock::time_point deadline,
            http::responder respond) {
    std::uint64_t id = 0;
    {
      std::lock_guard guard{mtx_};
      if (stopped_) {
        respond(page_response({{}, after}));
        return;
      }
      id = next_waiter_++;
      waiters_.emplace(id, waiter{after, limit, deadline, std::move(respond)});
    }
    cv_.notify_all(); // the deadline may be the earliest now
    attempt(id);
  }

private:
  struct waiter {
    std::uint64_t after;
    std::size_t limit;
    clock::time_point deadline;
    http::responder respond;
  };

  void read_more(std::shared_ptr<feed_page> acc, std::size_t limit, std::size_t budget,
                 done_fn done) {
    auto n = std::min(read_page, budget);
    journal_->read_all(acc->next + 1, n,
                       [self = shared_from_this(), acc, limit, budget, n,
                        done](caf::expected<std::vector<ap::event_record>> recs) mutable {
                         if (!recs)
                           return done(std::move(recs.error()));
                         for (const auto& rec : *recs) {
                           auto msg = self->contract_.translate(rec);
                           if (!msg)
                             return done(std::move(msg.error()));
                           if (*msg)
                             acc->messages.push_back(aa::to_json(**msg));
                           acc->next = rec.offset;
                           if (acc->messages.size() >= limit)
                             return done(std::move(*acc));
                         }
                         if (recs->size() < n || budget <= n)
                           return done(std::move(*acc));
                         self->read_more(std::move(acc), limit, budget - n, std::move(done));
                       });
  }

  /// Reads for waiter `id`: answers it when the read found messages; moves its position
  /// over unmapped events otherwise and lets it wait on.
  void attempt(std::uint64_t id) {
    std::uint64_t after = 0;
    std::size_t limit = 0;
    {
      std::lock_guard guard{mtx_};
      auto i = waiters_.find(id);
      if (i == waiters_.end())
        return;
      after = i->second.after;
      limit = i->second.limit;
    }
    read(after, limit, [self = shared_from_this(), id](caf::expected<feed_page> page) {
      std::unique_lock lk{self->mtx_};
      auto i = self->waiters_.find(id);
      if (i == self->waiters_.end())
        return;
      if (page && page->messages.empty()) {
        i->second.after = std::max(i->second.after, page->next);
        return;
      }
      auto respond = std::move(i->second.respond);
      self->waiters_.erase(i);
      lk.unlock();
      respond(page ? page_response(*page) : read_error(page.error()));
    });
  }

  void on_commit(std::uint64_t last_offset) {
    std::vector<std::uint64_t> due;
    {
      std::lock_guard guard{mtx_};
      for (const auto& [id, w] : waiters_)
        if (w.after < last_offset)
          due.push_back(id);
    }
    for (auto id : due)
      attempt(id);
  }

  void run_timer() {
    std::unique_lock lk{mtx_};
    while (!stopped_) {
      auto now = clock::now();
      std::vector<waiter> expired;
      auto earliest = clock::time_point::max();
      for (auto i = waiters_.begin(); i != waiters_.end();) {
        if (i->second.deadline <= now) {
          expired.push_back(std::move(i->second));
          i = waiters_.erase(i);
        } else {
          earliest = std::min(earliest, i->second.deadline);
          ++i;
        }
      }
      if (!expired.empty()) {
        lk.unlock();
        for (auto& w : expired)
          w.respond(page_response({{}, w.after}));
        lk.lock();
        continue;
      }
      if (earliest == clock::time_point::max())
        cv_.wait(lk);
      else
        cv_.wait_until(lk, earliest);
    }
  }

  ap::journal_ptr journal_;
  aa::public_contract contract_;
  std::optional<std::uint64_t> subscription_;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stopped_ = false;
  std::uint64_t next_waiter_ = 0;
  std::map<std::uint64_t, waiter> waiters_;
  std::thread timer_;
};

} // namespace

void add_feed_routes(bank_context& ctx) {
  auto f = std::make_shared<feed>(ctx.journal);
  f->start();
  ctx.stop_hooks.push_back([f] { f->stop(); });

  ctx.routes.add("GET", {"feed"}, [f](req_t req, args_t, resp_t respond) {
    auto after = query_number(req, "after", 0, 0,
                              static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    auto limit = query_number(req, "limit", default_limit, 1, max_limit);
    auto wait = query_number(req, "wait", 0, 0, max_wait_seconds);
    if (wait == 0) {
      f->read(after, limit, [respond](caf::expected<feed_page> page) {
        respond(page ? page_response(*page) : read_error(page.error()));
      });
      return;
    }
    f->wait(after, limit, clock::now() + std::chrono::seconds{wait}, respond);
  });

  ctx.routes.add("GET", {"feed", "contract"}, [f](req_t, args_t, resp_t respond) {
    json::array types;
    for (const auto& t : f->contract().types())
      types.push_back(json::object{{"type", t.type},
                                   {"version", t.version},
                                   {"aggregate", t.aggregate},
                                   {"internal_event", t.internal_event}});
    respond(json_response(
      200, json::object{{"source", f->contract().source()}, {"types", std::move(types)}}));
  });
}

} // namespace service
