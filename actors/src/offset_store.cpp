#include "annals/actors/offset_store.hpp"

#include <optional>

#include <sqlite3.h>

#include "annals/actors/projection.hpp"
#include "annals/actors/projection_sink.hpp"
#include "internal/offsets_table.hpp"

namespace annals::actors {

offset_store::~offset_store() = default;

caf::error offset_store::advance(const std::string& projection, std::uint64_t expected,
                                 std::uint64_t offset) {
  auto stored = load(projection);
  if (!stored)
    return std::move(stored.error());
  if (*stored != expected)
    return offset_moved_error(projection, "its offset store", expected, *stored);
  return save(projection, offset);
}

memory_offset_store::memory_offset_store() = default;
memory_offset_store::~memory_offset_store() = default;

caf::expected<std::uint64_t> memory_offset_store::load(const std::string& projection) {
  std::lock_guard guard{mtx_};
  auto i = offsets_.find(projection);
  return i == offsets_.end() ? std::uint64_t{0} : i->second;
}

caf::error memory_offset_store::save(const std::string& projection, std::uint64_t offset) {
  std::lock_guard guard{mtx_};
  offsets_[projection] = offset;
  return {};
}

caf::error memory_offset_store::advance(const std::string& projection, std::uint64_t expected,
                                        std::uint64_t offset) {
  std::lock_guard guard{mtx_};
  auto& stored = offsets_[projection];
  if (stored != expected)
    return offset_moved_error(projection, "its memory offset store", expected, stored);
  stored = offset;
  return {};
}

struct sqlite_offset_store::impl {
  std::string path;
  std::mutex mtx; // one connection, used by every projection sharing the store
  sqlite3* db = nullptr;
  sqlite3_stmt* select = nullptr;
  sqlite3_stmt* upsert = nullptr;
  sqlite3_stmt* update = nullptr; // compare-and-set
  sqlite3_stmt* insert = nullptr; // a first offset

  ~impl() {
    sqlite3_finalize(select);
    sqlite3_finalize(upsert);
    sqlite3_finalize(update);
    sqlite3_finalize(insert);
    sqlite3_close_v2(db);
  }

  caf::error fail(std::string_view what) const {
    return make_error(projection_errc::offset_store_failed,
                      std::string{what} + " in '" + path
                        + "': " + (db ? sqlite3_errmsg(db) : "out of memory"));
  }
};

caf::expected<std::shared_ptr<sqlite_offset_store>>
sqlite_offset_store::open(sqlite_offset_store_options opts) {
  auto st = std::make_unique<impl>();
  st->path = opts.path;
  if (sqlite3_open_v2(opts.path.c_str(), &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr)
      != SQLITE_OK)
    return st->fail("cannot open the offset store");
  sqlite3_busy_timeout(st->db, static_cast<int>(opts.busy_timeout.count()));
  if (!create_offsets_table(st->db, opts.fsync_each_save, opts.busy_timeout))
    return st->fail("cannot create table projection_offsets");
  if (sqlite3_prepare_v2(st->db, internal::select_offset_sql, -1, &st->select, nullptr) != SQLITE_OK
      || sqlite3_prepare_v2(st->db, internal::upsert_offset_sql, -1, &st->upsert, nullptr)
           != SQLITE_OK
      || sqlite3_prepare_v2(st->db, internal::advance_offset_sql, -1, &st->update, nullptr)
           != SQLITE_OK
      || sqlite3_prepare_v2(st->db, internal::insert_offset_sql, -1, &st->insert, nullptr)
           != SQLITE_OK)
    return st->fail("cannot prepare the offset statements");
  return std::shared_ptr<sqlite_offset_store>{new sqlite_offset_store{std::move(st)}};
}

sqlite_offset_store::sqlite_offset_store(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}

sqlite_offset_store::~sqlite_offset_store() = default;

caf::expected<std::uint64_t> sqlite_offset_store::load(const std::string& projection) {
  std::lock_guard guard{impl_->mtx};
  auto* stmt = impl_->select;
  sqlite3_bind_text(stmt, 1, projection.data(), static_cast<int>(projection.size()),
                    SQLITE_TRANSIENT);
  auto rc = sqlite3_step(stmt);
  caf::expected<std::uint64_t> result{std::uint64_t{0}};
  if (rc == SQLITE_ROW)
    result = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  else if (rc != SQLITE_DONE)
    result = impl_->fail("cannot read the offset of '" + projection + "'");
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return result;
}

caf::error sqlite_offset_store::save(const std::string& projection, std::uint64_t offset) {
  std::lock_guard guard{impl_->mtx};
  auto* stmt = impl_->upsert;
  sqlite3_bind_text(stmt, 1, projection.data(), static_cast<int>(projection.size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_int64(stmt, 2, static_cast<sqlite3_int64>(offset));
  caf::error result;
  if (sqlite3_step(stmt) != SQLITE_DONE)
    result =
      impl_->fail("cannot store offset " + std::to_string(offset) + " of '" + projection + "'");
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return result;
}

caf::error sqlite_offset_store::advance(const std::string& projection, std::uint64_t expected,
                                        std::uint64_t offset) {
  {
    std::lock_guard guard{impl_->mtx};
    // Whether `stmt` changed the row; nothing if it failed.
    auto cas = [&](sqlite3_stmt* stmt) -> std::optional<bool> {
      sqlite3_bind_text(stmt, 1, projection.data(), static_cast<int>(projection.size()),
                        SQLITE_TRANSIENT);
      sqlite3_bind_int64(stmt, 2, static_cast<sqlite3_int64>(offset));
      if (sqlite3_bind_parameter_count(stmt) >= 3)
        sqlite3_bind_int64(stmt, 3, static_cast<sqlite3_int64>(expected));
      auto rc = sqlite3_step(stmt);
      auto changed = sqlite3_changes(impl_->db) == 1;
      sqlite3_reset(stmt);
      sqlite3_clear_bindings(stmt);
      if (rc != SQLITE_DONE)
        return std::nullopt;
      return changed;
    };
    auto done = cas(impl_->update);
    if (done && !*done && expected == 0)
      done = cas(impl_->insert);
    if (!done)
      return impl_->fail("cannot store offset " + std::to_string(offset) + " of '" + projection
                         + "'");
    if (*done)
      return {};
  }
  auto stored = load(projection);
  if (!stored)
    return std::move(stored.error());
  return offset_moved_error(projection, impl_->path, expected, *stored);
}

} // namespace annals::actors
