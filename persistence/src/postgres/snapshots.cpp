// The snapshot store: saves and loads on the reader threads, each save one transaction
// that writes the snapshot and trims the older ones of its stream.

#include "internal/validate.hpp"
#include "postgres/state.hpp"

namespace annals::persistence {

using namespace postgres;

postgres_snapshot_store::postgres_snapshot_store(std::shared_ptr<postgres_journal::impl> ptr)
  : impl_(std::move(ptr)) {}

postgres_snapshot_store::~postgres_snapshot_store() = default;

void postgres_snapshot_store::save(snapshot_record snap, callback<caf::unit_t> done) {
  if (auto err = internal::validate(snap)) {
    done(std::move(err));
    return;
  }
  if (has_nul(snap.persistence_id) || has_nul(snap.name) || has_nul(snap.payload)) {
    done(make_error(journal_errc::invalid_request,
                    "snapshot of persistence id " + snap.persistence_id
                      + " holds a NUL byte, which PostgreSQL text cannot store"));
    return;
  }
  if (snap.timestamp_us == 0)
    snap.timestamp_us = internal::now_us();
  auto keep = impl_->opts.keep_snapshots;
  auto task = [snap = std::move(snap), keep, done](const connection& conn) {
    std::string sql = "BEGIN; INSERT INTO snapshots (persistence_id, seq, name, version, payload, "
                      "timestamp_us) VALUES (";
    append_literal(sql, snap.persistence_id);
    sql += ", " + bigint_of(snap.seq) + ", ";
    append_literal(sql, snap.name);
    sql += ", " + std::to_string(snap.version) + ", ";
    append_literal(sql, snap.payload);
    sql += ", " + std::to_string(snap.timestamp_us)
           + ") ON CONFLICT (persistence_id, seq) DO UPDATE SET name = excluded.name, version = "
             "excluded.version, payload = excluded.payload, timestamp_us = excluded.timestamp_us; "
             "DELETE FROM snapshots WHERE persistence_id = ";
    append_literal(sql, snap.persistence_id);
    sql += " AND seq NOT IN (SELECT seq FROM snapshots WHERE persistence_id = ";
    append_literal(sql, snap.persistence_id);
    sql += " ORDER BY seq DESC LIMIT " + std::to_string(keep) + "); COMMIT";
    auto res = conn.exec(sql);
    if (!res.ok()) {
      auto err = conn.failure(res, "saving a snapshot of persistence id " + snap.persistence_id);
      if (conn.alive())
        conn.exec("ROLLBACK");
      done(std::move(err));
      return;
    }
    done(caf::unit);
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

void postgres_snapshot_store::load(std::string persistence_id,
                                   callback<std::vector<snapshot_record>> done) {
  auto task = [pid = std::move(persistence_id), done](const connection& conn) {
    auto res = conn.exec("SELECT seq, name, version, payload, timestamp_us FROM snapshots WHERE "
                         "persistence_id = $1 ORDER BY seq DESC",
                         {pid});
    if (!res.ok()) {
      done(conn.failure(res, "loading the snapshots of persistence id " + pid));
      return;
    }
    std::vector<snapshot_record> out;
    for (int row = 0; row < res.rows(); ++row) {
      auto& s = out.emplace_back();
      s.persistence_id = pid;
      s.seq = res.u64(row, 0);
      s.name = res.text(row, 1);
      s.version = static_cast<std::uint32_t>(res.u64(row, 2));
      s.payload = res.text(row, 3);
      s.timestamp_us = static_cast<std::int64_t>(res.u64(row, 4));
    }
    done(std::move(out));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->info.server));
}

} // namespace annals::persistence
