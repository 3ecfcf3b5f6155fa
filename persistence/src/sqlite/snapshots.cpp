#include "internal/validate.hpp"
#include "sqlite/writer.hpp"

namespace annals::persistence::sqlite {

applied apply_snapshot(writer_state& w, snapshot_item& item, outcome& out) {
  auto& snap = item.snap;
  if (!step_done(w.savepoint))
    return fail_last(w, "opening a savepoint", false, out);
  auto what = "saving the snapshot at seq " + std::to_string(snap.seq) + " of persistence id "
              + snap.persistence_id;
  auto* ins = w.insert_snapshot.ptr;
  bind_text(ins, 1, snap.persistence_id);
  bind_u64(ins, 2, snap.seq);
  bind_text(ins, 3, snap.name);
  sqlite3_bind_int64(ins, 4, snap.version);
  bind_text(ins, 5, snap.payload);
  sqlite3_bind_int64(ins, 6, snap.timestamp_us);
  if (!step_done(ins))
    return fail_last(w, what, true, out);
  bind_text(w.trim_snapshots, 1, snap.persistence_id);
  sqlite3_bind_int64(w.trim_snapshots, 2, static_cast<std::int64_t>(w.keep_snapshots));
  if (!step_done(w.trim_snapshots) || !step_done(w.release))
    return fail_last(w, what, true, out);
  return applied::ok;
}

} // namespace annals::persistence::sqlite

namespace annals::persistence {

using namespace sqlite;

sqlite_snapshot_store::sqlite_snapshot_store(std::shared_ptr<sqlite_journal::impl> ptr)
  : impl_(std::move(ptr)) {}

sqlite_snapshot_store::~sqlite_snapshot_store() = default;

void sqlite_snapshot_store::save(snapshot_record snap, callback<caf::unit_t> done) {
  if (impl_->opts.read_only) {
    done(impl_->refuse_write("the snapshot at seq " + std::to_string(snap.seq)
                             + " of persistence id " + snap.persistence_id + " was not saved"));
    return;
  }
  if (auto err = internal::validate(snap)) {
    done(std::move(err));
    return;
  }
  if (snap.timestamp_us == 0)
    snap.timestamp_us = internal::now_us();
  write_item item{snapshot_item{std::move(snap), std::move(done)}};
  if (!impl_->submit_write(item))
    std::get<snapshot_item>(item).done(closed_error(impl_->opts.path));
}

void sqlite_snapshot_store::load(std::string persistence_id,
                                 callback<std::vector<snapshot_record>> done) {
  auto task = [pid = std::move(persistence_id), done](reader_state& r) {
    reset_guard guard{r.snapshots};
    bind_text(r.snapshots, 1, pid);
    std::vector<snapshot_record> result;
    for (;;) {
      auto rc = sqlite3_step(r.snapshots);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        done(sqlite_failure(rc, r.conn.db, "loading snapshots of persistence id " + pid, r.path));
        return;
      }
      auto& snap = result.emplace_back();
      snap.persistence_id = column_string(r.snapshots, 0);
      snap.seq = static_cast<std::uint64_t>(sqlite3_column_int64(r.snapshots, 1));
      snap.name = column_string(r.snapshots, 2);
      snap.version = static_cast<std::uint32_t>(sqlite3_column_int64(r.snapshots, 3));
      snap.payload = column_string(r.snapshots, 4);
      snap.timestamp_us = sqlite3_column_int64(r.snapshots, 5);
    }
    done(std::move(result));
  };
  if (!impl_->submit_read(std::move(task)))
    done(closed_error(impl_->opts.path));
}

} // namespace annals::persistence
