#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <sqlite3.h>

#include "internal/offsets_table.hpp"
#include "internal/sink.hpp"

namespace annals::actors::internal {

namespace {

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
    if (!create_offsets_table(db_, opts_.fsync_each_batch, opts_.busy_timeout))
      return fail("cannot create table projection_offsets");
    if (!begin_.prepare(db_, "BEGIN IMMEDIATE") || !commit_.prepare(db_, "COMMIT")
        || !savepoint_.prepare(db_, "SAVEPOINT annals_event")
        || !release_.prepare(db_, "RELEASE annals_event")
        || !rollback_to_.prepare(db_, "ROLLBACK TO annals_event")
        || !select_.prepare(db_, select_offset_sql) || !upsert_.prepare(db_, upsert_offset_sql)
        || !advance_.prepare(db_, advance_offset_sql) || !insert_.prepare(db_, insert_offset_sql))
      return fail("cannot prepare statements");
    for (auto* st : {&select_, &upsert_, &advance_, &insert_})
      sqlite3_bind_text(st->get(), 1, opts_.name.data(), static_cast<int>(opts_.name.size()),
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
    auto stored = stored_offset();
    if (!stored)
      return std::move(stored.error());
    return stored->value_or(0);
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    if (!begin_.run()) {
      out.err = fail("cannot begin a transaction");
      return out;
    }
    // Read under the write lock (BEGIN IMMEDIATE), before any event: if another instance of
    // this projection (another process on the same file) has moved the offset, this one
    // stops here instead of applying events that instance has applied already.
    auto stored = stored_offset();
    if (!stored || stored->value_or(0) != prev) {
      out.err = stored ? offset_moved_error(opts_.name, opts_.path, prev, *stored)
                       : std::move(stored.error());
      rollback();
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
      if (auto err = advance(prev, out.last_good)) {
        out.err = std::move(err);
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

  delivery guarantee() const noexcept override {
    return delivery::exactly_once;
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
  /// The offset stored for this projection; none if it has no row.
  caf::expected<std::optional<std::uint64_t>> stored_offset() {
    std::optional<std::uint64_t> offset;
    auto rc = sqlite3_step(select_.get());
    if (rc == SQLITE_ROW)
      offset = static_cast<std::uint64_t>(sqlite3_column_int64(select_.get(), 0));
    sqlite3_reset(select_.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return fail("cannot read the stored offset");
    return offset;
  }

  /// Moves the stored offset from `prev` to `next` by compare-and-set, inside the batch's
  /// transaction.
  caf::error advance(std::uint64_t prev, std::uint64_t next) {
    // Whether `st` changed the row; nothing if it failed.
    auto cas = [this](statement& st, std::uint64_t from, std::uint64_t to) -> std::optional<bool> {
      sqlite3_bind_int64(st.get(), 2, static_cast<sqlite3_int64>(to));
      if (sqlite3_bind_parameter_count(st.get()) >= 3)
        sqlite3_bind_int64(st.get(), 3, static_cast<sqlite3_int64>(from));
      auto rc = sqlite3_step(st.get());
      auto changed = sqlite3_changes(db_) == 1;
      sqlite3_reset(st.get());
      if (rc != SQLITE_DONE)
        return std::nullopt;
      return changed;
    };
    auto done = cas(advance_, prev, next);
    if (done && !*done && prev == 0)
      done = cas(insert_, prev, next);
    if (!done)
      return fail("cannot store offset " + std::to_string(next));
    if (*done)
      return {};
    auto stored = stored_offset();
    if (!stored)
      return std::move(stored.error());
    return offset_moved_error(opts_.name, opts_.path, prev, *stored);
  }

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
  statement begin_, commit_, savepoint_, release_, rollback_to_, select_, upsert_, advance_,
    insert_;
};

} // namespace

std::shared_ptr<sink> make_sqlite_sink(sqlite_projection_options opts,
                                       std::shared_ptr<sqlite_projection_handler> handler) {
  return std::make_shared<sqlite_sink>(std::move(opts), std::move(handler));
}

} // namespace annals::actors::internal
