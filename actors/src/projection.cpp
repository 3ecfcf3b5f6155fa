#include "annals/actors/projection.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <thread>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <sqlite3.h>

namespace annals::actors {

using persistence::event_record;

// -- handlers and filters -----------------------------------------------------------------

projection_handler::~projection_handler() = default;
void projection_handler::reset() {}

sqlite_projection_handler::~sqlite_projection_handler() = default;
void sqlite_projection_handler::create_schema(sqlite3*) {}

bool event_filter::matches(const event_record& rec) const {
  if (!prefix_.empty() && !rec.persistence_id.starts_with(prefix_))
    return false;
  if (!tag_.empty() && std::find(rec.tags.begin(), rec.tags.end(), tag_) == rec.tags.end())
    return false;
  return true;
}

std::string to_string(projection_state st) {
  switch (st) {
    case projection_state::catching_up:
      return "catching_up";
    case projection_state::running:
      return "running";
    case projection_state::failed:
      return "failed";
  }
  return "unknown";
}

namespace internal {

// -- sinks: where a batch goes ------------------------------------------------------------

/// What applying one batch achieved.
struct batch_outcome {
  std::uint64_t last_good = 0; // offset to continue after (stored, unless `err` says not)
  std::size_t applied = 0;     // records handed to the handler without throwing
  caf::error err;
};

std::string current_exception_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

caf::error handler_error(const std::string& name, const event_record& rec,
                         const std::string& what) {
  return make_error(projection_errc::handler_failed,
                    "projection '" + name + "' stopped at offset " + std::to_string(rec.offset)
                      + " (" + rec.persistence_id + " seq " + std::to_string(rec.seq) + ", "
                      + rec.name + "): " + what);
}

/// The read-model side of a projection: loads and stores the offset and applies batches.
/// Every call runs on the projection's own thread.
class sink {
public:
  virtual ~sink() = default;
  /// Prepares the model and returns the stored offset.
  virtual caf::expected<std::uint64_t> open() = 0;
  /// Applies `batch` (contiguous offsets, the first one right after `prev`).
  virtual batch_outcome apply(std::span<const event_record> batch, std::uint64_t prev) = 0;
  /// Clears the model and stores offset 0.
  virtual caf::error reset() = 0;
};

class handler_sink final : public sink {
public:
  handler_sink(std::string name, event_filter filter, std::shared_ptr<projection_handler> h,
               offset_store_ptr offsets)
    : name_(std::move(name)), filter_(std::move(filter)), handler_(std::move(h)),
      offsets_(std::move(offsets)) {}

  caf::expected<std::uint64_t> open() override {
    return offsets_->load(name_);
  }

  batch_outcome apply(std::span<const event_record> batch, std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    for (const auto& rec : batch) {
      if (filter_.matches(rec)) {
        try {
          handler_->apply(rec);
        } catch (...) {
          out.err = handler_error(name_, rec, current_exception_text());
          break;
        }
        ++out.applied;
      }
      out.last_good = rec.offset;
    }
    if (out.last_good != prev) {
      if (auto err = offsets_->save(name_, out.last_good); err && !out.err)
        out.err = std::move(err);
    }
    return out;
  }

  caf::error reset() override {
    try {
      handler_->reset();
    } catch (...) {
      return make_error(projection_errc::handler_failed,
                        "projection '" + name_ + "': reset threw: " + current_exception_text());
    }
    return offsets_->save(name_, 0);
  }

private:
  std::string name_;
  event_filter filter_;
  std::shared_ptr<projection_handler> handler_;
  offset_store_ptr offsets_;
};

/// A prepared statement that finalizes itself.
class statement {
public:
  statement() = default;
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  ~statement() {
    sqlite3_finalize(stmt_);
  }
  bool prepare(sqlite3* db, const char* sql) {
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
    return sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) == SQLITE_OK;
  }
  /// Steps once and resets; true on SQLITE_DONE or SQLITE_ROW.
  bool run() {
    auto rc = sqlite3_step(stmt_);
    sqlite3_reset(stmt_);
    return rc == SQLITE_DONE || rc == SQLITE_ROW;
  }
  sqlite3_stmt* get() const {
    return stmt_;
  }

private:
  sqlite3_stmt* stmt_ = nullptr;
};

class sqlite_sink final : public sink {
public:
  sqlite_sink(sqlite_projection_options opts, std::shared_ptr<sqlite_projection_handler> h)
    : opts_(std::move(opts)), handler_(std::move(h)) {}

  ~sqlite_sink() override {
    // The statements are finalized after this body; close_v2 completes the close then.
    sqlite3_close_v2(db_);
  }

  caf::expected<std::uint64_t> open() override {
    if (db_) { // a retry after a failed start
      sqlite3_close_v2(db_);
      db_ = nullptr;
    }
    if (sqlite3_open_v2(opts_.path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        nullptr)
        != SQLITE_OK)
      return fail("cannot open the read-model file");
    sqlite3_busy_timeout(db_, static_cast<int>(opts_.busy_timeout.count()));
    auto setup = std::string{"PRAGMA journal_mode=WAL; PRAGMA synchronous="}
                 + (opts_.fsync_each_batch ? "FULL" : "NORMAL")
                 + "; CREATE TABLE IF NOT EXISTS projection_offsets("
                   "name TEXT PRIMARY KEY, \"offset\" INTEGER NOT NULL)";
    // Switching a new file to WAL needs an exclusive lock, and SQLite reports BUSY for it
    // without calling the busy handler; two projections opening one new file at once
    // meet here, so the setup retries until the busy timeout has passed.
    auto deadline = std::chrono::steady_clock::now() + opts_.busy_timeout;
    while (!exec(setup.c_str())) {
      auto rc = sqlite3_errcode(db_) & 0xff;
      if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || std::chrono::steady_clock::now() > deadline)
        return fail("cannot create table projection_offsets");
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    if (!begin_.prepare(db_, "BEGIN IMMEDIATE") || !commit_.prepare(db_, "COMMIT")
        || !savepoint_.prepare(db_, "SAVEPOINT annals_event")
        || !release_.prepare(db_, "RELEASE annals_event")
        || !rollback_to_.prepare(db_, "ROLLBACK TO annals_event")
        || !select_.prepare(db_, "SELECT \"offset\" FROM projection_offsets WHERE name = ?1")
        || !upsert_.prepare(db_, "INSERT INTO projection_offsets(name, \"offset\") "
                                 "VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE "
                                 "SET \"offset\" = excluded.\"offset\""))
      return fail("cannot prepare statements");
    sqlite3_bind_text(select_.get(), 1, opts_.name.data(), static_cast<int>(opts_.name.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(upsert_.get(), 1, opts_.name.data(), static_cast<int>(opts_.name.size()),
                      SQLITE_TRANSIENT);
    if (!begin_.run())
      return fail("cannot begin the schema transaction");
    try {
      handler_->create_schema(db_);
    } catch (...) {
      rollback();
      return make_error(projection_errc::read_model_failed,
                        "projection '" + opts_.name
                          + "': create_schema threw: " + current_exception_text());
    }
    if (!commit_.run()) {
      auto err = fail("cannot commit the schema");
      rollback();
      return err;
    }
    std::uint64_t offset = 0;
    auto rc = sqlite3_step(select_.get());
    if (rc == SQLITE_ROW)
      offset = static_cast<std::uint64_t>(sqlite3_column_int64(select_.get(), 0));
    sqlite3_reset(select_.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return fail("cannot read the stored offset");
    return offset;
  }

  batch_outcome apply(std::span<const event_record> batch, std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    if (!begin_.run()) {
      out.err = fail("cannot begin a transaction");
      return out;
    }
    for (const auto& rec : batch) {
      if (opts_.filter.matches(rec)) {
        // A savepoint per event lets a throwing handler roll back that event alone, so the
        // batch still commits up to the last good event, with its offset.
        if (!savepoint_.run()) {
          out.err = fail("cannot set a savepoint");
          break;
        }
        try {
          handler_->apply(db_, rec);
        } catch (...) {
          out.err = handler_error(opts_.name, rec, current_exception_text());
          if (sqlite3_get_autocommit(db_) == 0) {
            rollback_to_.run();
            release_.run();
          }
          break;
        }
        if (!release_.run()) {
          out.err = fail("cannot release a savepoint");
          break;
        }
        ++out.applied;
      }
      out.last_good = rec.offset;
    }
    // SQLite rolls the whole transaction back by itself after some errors (SQLITE_FULL,
    // SQLITE_IOERR, ...): then nothing of this batch is in the file.
    if (sqlite3_get_autocommit(db_) != 0) {
      out.last_good = prev;
      out.applied = 0;
      if (!out.err)
        out.err = fail("the transaction was rolled back");
      return out;
    }
    if (out.last_good != prev) {
      sqlite3_bind_int64(upsert_.get(), 2, static_cast<sqlite3_int64>(out.last_good));
      if (!upsert_.run()) {
        out.err = fail("cannot store offset " + std::to_string(out.last_good));
        rollback();
        out.last_good = prev;
        out.applied = 0;
        return out;
      }
    }
    if (!commit_.run()) {
      out.err = fail("cannot commit a batch");
      rollback();
      out.last_good = prev;
      out.applied = 0;
    }
    return out;
  }

  caf::error reset() override {
    if (!begin_.run())
      return fail("cannot begin the reset transaction");
    try {
      handler_->reset(db_);
    } catch (...) {
      rollback();
      return make_error(projection_errc::handler_failed,
                        "projection '" + opts_.name
                          + "': reset threw: " + current_exception_text());
    }
    sqlite3_bind_int64(upsert_.get(), 2, 0);
    if (!upsert_.run() || !commit_.run()) {
      auto err = fail("cannot commit the reset");
      rollback();
      return err;
    }
    return {};
  }

private:
  bool exec(const char* sql) {
    return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
  }

  void rollback() {
    if (sqlite3_get_autocommit(db_) == 0)
      exec("ROLLBACK");
  }

  caf::error fail(std::string_view what) const {
    return make_error(projection_errc::read_model_failed,
                      "projection '" + opts_.name + "': " + std::string{what} + " in '" + opts_.path
                        + "': " + (db_ ? sqlite3_errmsg(db_) : "out of memory"));
  }

  sqlite_projection_options opts_;
  std::shared_ptr<sqlite_projection_handler> handler_;
  sqlite3* db_ = nullptr;
  statement begin_, commit_, savepoint_, release_, rollback_to_, select_, upsert_;
};

// -- messages from journal callbacks to the actor -----------------------------------------

struct live_batch {
  std::vector<event_record> records;
};

struct page_result {
  std::uint64_t generation = 0;
  std::uint64_t from = 0;
  caf::expected<std::vector<event_record>> records{std::vector<event_record>{}};
};

struct head_result {
  std::uint64_t query = 0;
  caf::expected<std::uint64_t> head{std::uint64_t{0}};
};

struct waiter_expired {
  std::uint64_t id = 0;
};

/// Sent instead of live batches while the projection's queue of them is full.
struct live_overflow {};

/// Bounds the live batches waiting in a projection's mailbox. Shared by the commit listener
/// (journal thread) and the actor; a full queue makes the listener drop batches and post
/// one `live_overflow`, after which the actor reads the dropped range from the journal.
struct live_flow {
  explicit live_flow(std::size_t max) : limit(std::max<std::size_t>(max, 1)) {}
  const std::size_t limit;
  std::atomic<std::size_t> queued{0};
  std::atomic<std::uint64_t> dropped_head{0};
  std::atomic<bool> overflow_posted{false};
  std::atomic<std::uint64_t> dropped_batches{0};
};

} // namespace internal
} // namespace annals::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::live_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::page_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::head_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::waiter_expired)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(annals::actors::internal::live_overflow)

namespace annals::actors {
namespace internal {

// -- the actor ----------------------------------------------------------------------------

struct projection_setup {
  std::string name;
  persistence::journal_ptr journal;
  std::shared_ptr<sink> out;
  std::size_t page_size = 512;
  std::size_t max_queued_batches = 1024;
};

struct projection_actor_state {
  projection_setup setup;
  std::uint64_t next = 1;       // the next offset to process
  std::uint64_t live_head = 0;  // highest offset seen on the live stream
  std::uint64_t generation = 0; // bumped by rebuild and failure: stale pages are dropped
  bool opened = false;          // the sink has loaded its offset
  std::optional<std::uint64_t> subscription;
  std::shared_ptr<live_flow> flow;
  std::uint64_t applied = 0;
  projection_state state = projection_state::catching_up;
  caf::error error;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, caf::response_promise> status_queries;
  struct waiter {
    std::uint64_t offset;
    caf::response_promise promise;
  };
  std::map<std::uint64_t, waiter> waiters;

  ~projection_actor_state() {
    if (subscription)
      setup.journal->unsubscribe(*subscription);
  }

  static inline const char* name = "annals.projection";
};

using projection_actor = caf::stateful_actor<projection_actor_state>;

void subscribe(projection_actor* self) {
  auto& st = self->state;
  if (st.subscription)
    return;
  // The listener runs on the journal's thread: it only posts a copy of the batch (or, with
  // a full queue, one overflow notice), through a weak handle so that it neither blocks nor
  // keeps a stopped projection alive.
  st.subscription = st.setup.journal->subscribe(
    [addr = self->address(), flow = st.flow](const std::vector<event_record>& batch) {
      if (batch.empty())
        return;
      auto hdl = caf::actor_cast<caf::actor>(addr);
      if (!hdl)
        return;
      if (flow->queued.load() < flow->limit) {
        flow->queued.fetch_add(1);
        caf::anon_send(hdl, live_batch{batch});
        return;
      }
      flow->dropped_batches.fetch_add(1);
      auto last = batch.back().offset;
      auto cur = flow->dropped_head.load();
      while (cur < last && !flow->dropped_head.compare_exchange_weak(cur, last)) {
      }
      if (!flow->overflow_posted.exchange(true))
        caf::anon_send(hdl, live_overflow{});
    });
}

void unsubscribe(projection_actor* self) {
  auto& st = self->state;
  if (st.subscription) {
    st.setup.journal->unsubscribe(*st.subscription);
    st.subscription.reset();
  }
}

void reply_status(projection_actor* self, caf::response_promise rp) {
  auto& st = self->state;
  auto id = st.next_id++;
  st.status_queries.emplace(id, std::move(rp));
  st.setup.journal->head_offset([addr = self->address(), id](caf::expected<std::uint64_t> h) {
    if (auto hdl = caf::actor_cast<caf::actor>(addr))
      caf::anon_send(hdl, head_result{id, std::move(h)});
  });
}

void fail(projection_actor* self, caf::error err) {
  auto& st = self->state;
  st.state = projection_state::failed;
  st.error = std::move(err);
  ++st.generation;
  unsubscribe(self);
  for (auto& [id, w] : st.waiters)
    w.promise.deliver(st.error);
  st.waiters.clear();
}

void request_page(projection_actor* self) {
  auto& st = self->state;
  st.state = projection_state::catching_up;
  st.setup.journal->read_all(st.next, st.setup.page_size,
                             [addr = self->address(), gen = st.generation,
                              from = st.next](caf::expected<std::vector<event_record>> res) {
                               if (auto hdl = caf::actor_cast<caf::actor>(addr))
                                 caf::anon_send(hdl, page_result{gen, from, std::move(res)});
                             });
}

/// Applies `batch`, which starts at `st.next` with contiguous offsets.
void apply_batch(projection_actor* self, std::span<const event_record> batch) {
  auto& st = self->state;
  if (batch.empty())
    return;
  auto out = st.setup.out->apply(batch, st.next - 1);
  st.next = out.last_good + 1;
  st.applied += out.applied;
  if (out.err) {
    fail(self, std::move(out.err));
    return;
  }
  auto done = st.next - 1;
  for (auto i = st.waiters.begin(); i != st.waiters.end();) {
    if (i->second.offset <= done) {
      reply_status(self, std::move(i->second.promise));
      i = st.waiters.erase(i);
    } else {
      ++i;
    }
  }
}

/// The length of the prefix of `batch` whose offsets run on from `first` without a gap.
std::size_t contiguous_prefix(std::span<const event_record> batch, std::uint64_t first) {
  std::size_t n = 0;
  while (n < batch.size() && batch[n].offset == first + n)
    ++n;
  return n;
}

caf::behavior projection_behavior(projection_actor* self, projection_setup setup) {
  self->state.setup = std::move(setup);
  self->state.flow = std::make_shared<live_flow>(self->state.setup.max_queued_batches);
  // Subscribe before the first read: every commit after this point arrives live, every
  // commit before it is found by the catch-up reads, so nothing falls between the two.
  subscribe(self);
  // The behaviour function runs on the actor's own thread before any message, so the
  // (possibly blocking) open never races with a request.
  if (auto stored = self->state.setup.out->open(); !stored) {
    fail(self, std::move(stored.error()));
  } else {
    self->state.opened = true;
    self->state.next = *stored + 1;
    request_page(self);
  }
  return {
    [self](live_overflow) {
      auto& st = self->state;
      // Clear the flag before reading the head: a batch dropped after this load posts a
      // new notice, one dropped before it is covered by the value read here.
      st.flow->overflow_posted.store(false);
      st.live_head = std::max(st.live_head, st.flow->dropped_head.load());
      if (st.state == projection_state::running && st.next <= st.live_head)
        request_page(self);
    },
    [self](live_batch& batch) {
      auto& st = self->state;
      st.flow->queued.fetch_sub(1);
      if (batch.records.empty())
        return;
      st.live_head = std::max(st.live_head, batch.records.back().offset);
      // While catching up, the next read covers these records (see page_result).
      if (st.state != projection_state::running)
        return;
      std::span<const event_record> rest{batch.records};
      while (!rest.empty() && rest.front().offset < st.next)
        rest = rest.subspan(1); // already processed
      if (rest.empty())
        return;
      auto n = contiguous_prefix(rest, st.next);
      apply_batch(self, rest.first(n));
      if (st.state == projection_state::running && n < rest.size())
        request_page(self); // a gap: read the missing events from the journal first
    },
    [self](page_result& page) {
      auto& st = self->state;
      if (page.generation != st.generation || page.from != st.next
          || st.state == projection_state::failed)
        return; // a read made before a rebuild or a failure
      if (!page.records) {
        fail(self, make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name + "': reading from offset "
                                + std::to_string(page.from)
                                + " failed: " + render(page.records.error())));
        return;
      }
      auto& recs = *page.records;
      if (contiguous_prefix(recs, st.next) != recs.size()) {
        fail(self, make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name + "': a read from offset "
                                + std::to_string(page.from)
                                + " did not return consecutive offsets from there"));
        return;
      }
      apply_batch(self, recs);
      if (st.state == projection_state::failed)
        return;
      // A full page, or a live commit beyond what we have: more to read. Otherwise the
      // page ended at the head as of the read; later commits arrive live.
      if (recs.size() >= st.setup.page_size || st.next <= st.live_head)
        request_page(self);
      else
        st.state = projection_state::running;
    },
    [self](projection_status_atom) -> caf::result<projection_status> {
      auto rp = self->make_response_promise<projection_status>();
      reply_status(self, rp);
      return rp;
    },
    [self](head_result& res) {
      auto& st = self->state;
      auto i = st.status_queries.find(res.query);
      if (i == st.status_queries.end())
        return;
      auto rp = std::move(i->second);
      st.status_queries.erase(i);
      if (!res.head) {
        rp.deliver(make_error(projection_errc::journal_failed,
                              "projection '" + st.setup.name
                                + "': cannot read the head: " + render(res.head.error())));
        return;
      }
      projection_status out;
      out.name = st.setup.name;
      out.offset = st.next - 1;
      out.head = *res.head;
      out.lag = out.head > out.offset ? out.head - out.offset : 0;
      out.applied = st.applied;
      out.live_dropped = st.flow->dropped_batches.load();
      out.state = st.state;
      out.error = st.error ? render(st.error) : std::string{};
      rp.deliver(std::move(out));
    },
    [self](projection_await_atom, std::uint64_t offset,
           std::uint64_t timeout_ms) -> caf::result<projection_status> {
      auto& st = self->state;
      if (st.state == projection_state::failed)
        return st.error;
      auto rp = self->make_response_promise<projection_status>();
      if (st.next > offset) {
        reply_status(self, rp);
        return rp;
      }
      auto id = st.next_id++;
      st.waiters.emplace(id, projection_actor_state::waiter{offset, rp});
      self->delayed_send(self, std::chrono::milliseconds{timeout_ms}, waiter_expired{id});
      return rp;
    },
    [self](waiter_expired& w) {
      auto& st = self->state;
      auto i = st.waiters.find(w.id);
      if (i == st.waiters.end())
        return;
      i->second.promise.deliver(make_error(
        projection_errc::timeout, "projection '" + st.setup.name + "' did not reach offset "
                                    + std::to_string(i->second.offset) + " in time (at "
                                    + std::to_string(st.next - 1) + ")"));
      st.waiters.erase(i);
    },
    [self](projection_rebuild_atom) -> caf::result<caf::ok_atom> {
      auto& st = self->state;
      ++st.generation;  // drops the page in flight, if any
      if (!st.opened) { // a failed start: try again
        if (auto stored = st.setup.out->open(); !stored) {
          fail(self, stored.error());
          return stored.error();
        }
        st.opened = true;
      }
      if (auto err = st.setup.out->reset()) {
        fail(self, err);
        return err;
      }
      st.error = caf::error{};
      st.next = 1;
      subscribe(self);
      request_page(self);
      return caf::ok_atom::value;
    },
  };
}

} // namespace internal

// -- the handle ---------------------------------------------------------------------------

struct projection::impl {
  caf::actor_system* sys = nullptr;
  caf::actor hdl;
  std::string name;
};

namespace {

caf::error from_request_error(const std::string& name, caf::error err) {
  if (err == caf::sec::request_timeout)
    return make_error(projection_errc::timeout, "projection '" + name + "' did not answer in time");
  if (err == caf::sec::request_receiver_down)
    return make_error(projection_errc::stopped, "projection '" + name + "' is stopped");
  return err;
}

projection make_handle(caf::actor_system& sys, std::string name, internal::projection_setup setup) {
  auto ptr = std::make_shared<projection::impl>();
  ptr->sys = &sys;
  ptr->name = std::move(name);
  // Detached: the projection has a thread of its own, so that handlers, offset stores and
  // read-model transactions may block on I/O without stalling the scheduler's threads.
  ptr->hdl = sys.spawn<caf::detached>(internal::projection_behavior, std::move(setup));
  return projection{std::move(ptr)};
}

template <class T, class... Ts>
caf::expected<T> ask(const projection::impl& p, std::chrono::milliseconds timeout, Ts... xs) {
  if (!p.hdl)
    return make_error(projection_errc::stopped, "projection '" + p.name + "' is stopped");
  caf::expected<T> result{make_error(projection_errc::timeout, "no answer")};
  caf::scoped_actor self{*p.sys};
  self->request(p.hdl, caf::duration{timeout}, xs...)
    .receive([&](T& x) { result = std::move(x); },
             [&](caf::error& err) { result = from_request_error(p.name, std::move(err)); });
  return result;
}

} // namespace

projection::projection(std::shared_ptr<impl> ptr) : impl_(std::move(ptr)) {}
projection::projection(projection&&) noexcept = default;

projection& projection::operator=(projection&& other) noexcept {
  if (this != &other) {
    stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

projection::~projection() {
  stop();
}

const std::string& projection::name() const {
  static const std::string none;
  return impl_ ? impl_->name : none;
}

caf::expected<projection_status> projection::status(std::chrono::milliseconds timeout) const {
  if (!impl_)
    return make_error(projection_errc::stopped, "an empty projection handle");
  return ask<projection_status>(*impl_, timeout, projection_status_atom::value);
}

caf::expected<projection_status> projection::await_offset(std::uint64_t offset,
                                                          std::chrono::milliseconds timeout) const {
  if (!impl_)
    return make_error(projection_errc::stopped, "an empty projection handle");
  // The actor gives up after `timeout`; the request's own bound is a backstop above it.
  return ask<projection_status>(*impl_, timeout + std::chrono::seconds{5},
                                projection_await_atom::value, offset,
                                static_cast<std::uint64_t>(timeout.count()));
}

caf::error projection::rebuild(std::chrono::milliseconds timeout) const {
  if (!impl_)
    return make_error(projection_errc::stopped, "an empty projection handle");
  auto res = ask<caf::ok_atom>(*impl_, timeout, projection_rebuild_atom::value);
  return res ? caf::error{} : std::move(res.error());
}

void projection::stop() {
  if (!impl_ || !impl_->hdl)
    return;
  // Wait (bounded) for the actor to end, so that a projection restarted under the same name
  // never runs beside the old one's last batch.
  caf::scoped_actor self{*impl_->sys};
  self->monitor(impl_->hdl);
  caf::anon_send_exit(impl_->hdl, caf::exit_reason::user_shutdown);
  self->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds{30}) >> [] {});
  impl_->hdl = caf::actor{};
}

caf::actor projection::actor() const {
  return impl_ ? impl_->hdl : caf::actor{};
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<projection_handler> handler, projection_options opts) {
  if (!opts.offsets)
    opts.offsets = std::make_shared<memory_offset_store>();
  auto out = std::make_shared<internal::handler_sink>(opts.name, opts.filter, std::move(handler),
                                                      opts.offsets);
  return make_handle(sys, opts.name,
                     {opts.name, std::move(journal), std::move(out),
                      std::max<std::size_t>(opts.page_size, 1), opts.max_queued_batches});
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<sqlite_projection_handler> handler,
                            sqlite_projection_options opts) {
  auto name = opts.name;
  auto page = std::max<std::size_t>(opts.page_size, 1);
  auto queued = opts.max_queued_batches;
  auto out = std::make_shared<internal::sqlite_sink>(std::move(opts), std::move(handler));
  return make_handle(sys, name, {name, std::move(journal), std::move(out), page, queued});
}

} // namespace annals::actors
