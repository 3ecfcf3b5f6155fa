#include "sqlite/inline.hpp"

#include <exception>
#include <set>
#include <utility>

#include "annals/persistence/sqlite_format.hpp"
#include "sqlite/reader.hpp"

namespace annals::persistence::sqlite {

namespace {

// Events read per step while a model catches up.
constexpr std::size_t catch_up_page = 512;

std::string exception_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

caf::error refused(const sqlite_inline_projection& p, const event_record& rec,
                   const std::string& what) {
  return make_error(journal_errc::projection_failed,
                    "inline projection '" + p.name + "' refused offset "
                      + std::to_string(rec.offset) + " (" + rec.persistence_id + " seq "
                      + std::to_string(rec.seq) + ", " + rec.name + "): " + what);
}

// Runs `body` inside a transaction of its own on the writer connection.
template <class Body>
auto in_transaction(writer_state& w, Body&& body) -> decltype(body()) {
  if (!step_done(w.begin))
    return last_failure(w.conn.db, "starting a transaction for the inline projections", w.path);
  auto res = body();
  if (res) {
    if (step_done(w.commit))
      return res;
    auto err = last_failure(w.conn.db, "committing the inline projections", w.path);
    if (!sqlite3_get_autocommit(w.conn.db))
      step_done(w.rollback);
    return err;
  }
  if (!sqlite3_get_autocommit(w.conn.db))
    step_done(w.rollback);
  return res;
}

caf::expected<std::uint64_t> stored_offset(writer_state& w, const std::string& name) {
  bind_text(w.get_inline_offset, 1, name);
  return read_count(w.conn.db, w.get_inline_offset, w.path,
                    "reading an inline projection's offset");
}

caf::error store_offset(writer_state& w, const std::string& name, std::uint64_t offset) {
  bind_text(w.set_inline_offset, 1, name);
  bind_u64(w.set_inline_offset, 2, offset);
  if (!step_done(w.set_inline_offset))
    return last_failure(w.conn.db, "storing the offset of inline projection '" + name + "'",
                        w.path);
  return {};
}

// Applies every event after `from` to `p`'s model and stores the offset reached.
caf::expected<std::uint64_t> catch_up(writer_state& w, sqlite_inline_projection& p,
                                      std::uint64_t from) {
  auto at = from;
  for (;;) {
    bind_u64(w.read_after, 1, at);
    bind_u64(w.read_after, 2, catch_up_page);
    auto page = read_records(w.conn.db, w.read_after, catch_up_page, w.path,
                             "reading events for an inline projection");
    if (!page)
      return std::move(page.error());
    for (const auto& rec : *page) {
      try {
        p.model->apply(w.conn.db, rec);
      } catch (...) {
        return refused(p, rec, exception_text());
      }
      at = rec.offset;
    }
    if (page->size() < catch_up_page)
      break;
  }
  if (auto err = store_offset(w, p.name, at))
    return err;
  return at;
}

} // namespace

caf::error open_inline_projections(writer_state& w, std::vector<sqlite_inline_projection> list) {
  std::set<std::string> names;
  for (const auto& p : list) {
    if (p.name.empty() || !p.model)
      return make_error(journal_errc::invalid_request,
                        w.path + ": an inline projection needs a name and a model");
    if (!names.insert(p.name).second)
      return make_error(journal_errc::invalid_request,
                        w.path + ": two inline projections are named '" + p.name + "'");
  }
  w.inlines = std::move(list);
  if (w.inlines.empty())
    return {};
  if (auto err = exec(w.conn.db, sqlite_format::projection_offsets_ddl, w.path))
    return err;
  struct {
    statement* target;
    std::string sql;
  } statements[] = {
    {&w.get_inline_offset, sqlite_format::select_offset_sql},
    {&w.set_inline_offset, sqlite_format::upsert_offset_sql},
    {&w.read_after, std::string{"SELECT "} + sqlite_format::event_columns
                      + " FROM events WHERE global_offset > ?1 ORDER BY global_offset LIMIT ?2"},
  };
  for (auto& s : statements) {
    auto stmt = prepare(w.conn.db, s.sql.c_str(), w.path);
    if (!stmt)
      return std::move(stmt.error());
    *s.target = std::move(*stmt);
  }
  for (auto& p : w.inlines) {
    auto res = in_transaction(w, [&]() -> caf::expected<std::uint64_t> {
      try {
        p.model->create_schema(w.conn.db);
      } catch (...) {
        return make_error(journal_errc::projection_failed,
                          "inline projection '" + p.name
                            + "': creating its schema failed: " + exception_text());
      }
      auto from = stored_offset(w, p.name);
      if (!from)
        return std::move(from.error());
      return catch_up(w, p, *from);
    });
    if (!res)
      return std::move(res.error());
  }
  return {};
}

caf::error apply_inline(writer_state& w, const std::vector<event_record>& recs) {
  for (auto& p : w.inlines)
    for (const auto& rec : recs) {
      try {
        p.model->apply(w.conn.db, rec);
      } catch (...) {
        auto err = refused(p, rec, exception_text());
        return make_error(journal_errc::projection_failed,
                          context_of(err) + "; nothing of the append was written");
      }
    }
  return {};
}

caf::error advance_inline(writer_state& w, std::uint64_t head) {
  for (const auto& p : w.inlines)
    if (auto err = store_offset(w, p.name, head))
      return err;
  return {};
}

caf::expected<std::uint64_t> rebuild_inline_projection(writer_state& w, const std::string& name) {
  for (auto& p : w.inlines) {
    if (p.name != name)
      continue;
    return in_transaction(w, [&]() -> caf::expected<std::uint64_t> {
      try {
        p.model->reset(w.conn.db);
      } catch (...) {
        return make_error(journal_errc::projection_failed,
                          "inline projection '" + name + "': reset threw: " + exception_text());
      }
      return catch_up(w, p, 0);
    });
  }
  return make_error(journal_errc::invalid_request,
                    w.path + ": no inline projection is named '" + name + "'");
}

} // namespace annals::persistence::sqlite
