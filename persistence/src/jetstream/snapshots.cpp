// Snapshots in STREAM_SNAPSHOTS, and `verify`.

#include <algorithm>

#include "internal/validate.hpp"
#include "jetstream/state.hpp"

namespace annals::persistence {

using namespace jetstream;

namespace {

/// The store shares the journal's connection and reader thread; the stream keeps the
/// newest `keep_snapshots` messages per subject (`max_msgs_per_subject`).
class jetstream_snapshot_store final : public snapshot_store {
public:
  explicit jetstream_snapshot_store(std::shared_ptr<jetstream_journal::impl> p)
    : impl_(std::move(p)) {}

  void save(snapshot_record snap, callback<caf::unit_t> done) override {
    if (auto err = internal::validate(snap)) {
      done(std::move(err));
      return;
    }
    if (snap.timestamp_us == 0)
      snap.timestamp_us = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    impl_->post_read(
      [p = impl_.get(), snap = std::move(snap), done = std::move(done)](bool closed_now) mutable {
        if (closed_now)
          return done(make_error(journal_errc::closed, "the JetStream journal was closed"));
        auto body = encode(snap);
        auto subject = p->names.snapshots(snap.persistence_id);
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = p->opts.request_timeout.count();
        jsPubAck* ack = nullptr;
        jsErrCode code{};
        auto s = js_Publish(&ack, p->js, subject.c_str(), body.data(),
                            static_cast<int>(body.size()), nullptr, &code);
        if (ack != nullptr)
          jsPubAck_Destroy(ack);
        if (s != NATS_OK)
          return done(
            nats_error(s, "saving a snapshot of persistence id " + snap.persistence_id, code));
        done(caf::unit);
      });
  }

  void load(std::string persistence_id, callback<std::vector<snapshot_record>> done) override {
    impl_->post_read([p = impl_.get(), id = std::move(persistence_id),
                      done = std::move(done)](bool closed_now) mutable {
      if (closed_now)
        return done(make_error(journal_errc::closed, "the JetStream journal was closed"));
      std::vector<snapshot_record> out;
      if (id.empty())
        return done(std::move(out));
      auto subject = p->names.snapshots(id);
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.Wait = p->opts.request_timeout.count();
      natsMsg* raw = nullptr;
      jsErrCode code{};
      auto s =
        js_GetLastMsg(&raw, p->js, p->names.snapshot_stream.c_str(), subject.c_str(), &jo, &code);
      msg_ptr last{raw};
      if (s == NATS_NOT_FOUND || code == JSNoMessageFoundErr)
        return done(std::move(out));
      if (s != NATS_OK)
        return done(nats_error(s, "loading the snapshots of persistence id " + id, code));
      caf::error bad;
      auto err = p->scan(p->names.snapshot_stream, subject, 1, natsMsg_GetSequence(last.get()),
                         [&](natsMsg* m, std::uint64_t seq) {
                           auto snap = decode_snapshot(data_of(m), "snapshot stream sequence "
                                                                     + std::to_string(seq));
                           if (!snap) {
                             bad = std::move(snap.error());
                             return false;
                           }
                           out.push_back(std::move(*snap));
                           return true;
                         });
      if (bad)
        return done(std::move(bad));
      if (err)
        return done(std::move(err));
      std::stable_sort(out.begin(), out.end(),
                       [](const auto& a, const auto& b) { return a.seq > b.seq; });
      if (out.size() > p->opts.keep_snapshots)
        out.resize(p->opts.keep_snapshots);
      done(std::move(out));
    });
  }

private:
  std::shared_ptr<jetstream_journal::impl> impl_;
};

} // namespace

snapshot_store_ptr jetstream_journal::snapshots() {
  return std::make_shared<jetstream_snapshot_store>(impl_);
}

caf::expected<verify_report> jetstream_journal::verify() {
  auto ids = wait_ids();
  if (!ids)
    return std::move(ids.error());
  verify_report report;
  for (const auto& id : *ids) {
    auto last = impl_->last_append(id);
    if (!last)
      return std::move(last.error());
    if (!*last)
      continue;
    event_hash prev{};
    std::uint64_t next_seq = 1;
    std::optional<chain_break> found;
    caf::error bad;
    auto err = impl_->scan(
      impl_->opts.stream, impl_->names.events(id), 1, (*last)->stream_seq,
      [&](natsMsg* m, std::uint64_t seq) {
        auto where = "stream sequence " + std::to_string(seq);
        auto env = decode_envelope(data_of(m), where);
        if (!env) {
          found = chain_break{seq * offsets_per_append, id, next_seq, render(env.error())};
          return false;
        }
        report.events_checked += env->events.size();
        auto offset = seq * offsets_per_append;
        if (env->persistence_id != id || env->first_seq != next_seq) {
          found =
            chain_break{offset, id, env->first_seq,
                        "the append at " + where + " holds persistence id " + env->persistence_id
                          + " from seq " + std::to_string(env->first_seq) + " where seq "
                          + std::to_string(next_seq) + " of " + id + " belongs"};
          return false;
        }
        auto h = chain(prev, *env);
        if (h != env->hash) {
          found = chain_break{offset, id, env->first_seq,
                              "stored hash " + to_hex(env->hash) + " differs from the recomputed "
                                + to_hex(h)};
          return false;
        }
        prev = h;
        next_seq = env->last_seq() + 1;
        return true;
      });
    if (err)
      return err;
    if (found) {
      report.first_break = std::move(found);
      break;
    }
    report.head_hash = prev;
  }
  auto head = impl_->stream_last_seq(impl_->opts.stream);
  if (!head)
    return std::move(head.error());
  report.head_offset = *head * offsets_per_append;
  return report;
}

caf::expected<std::vector<std::string>> jetstream_journal::wait_ids() {
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<caf::expected<std::vector<std::string>>> result;
  persistence_ids("", SIZE_MAX, [&](caf::expected<std::vector<std::string>> res) {
    std::lock_guard guard{mtx};
    result = std::move(res);
    cv.notify_all();
  });
  std::unique_lock lk{mtx};
  cv.wait(lk, [&] { return result.has_value(); });
  return std::move(*result);
}

} // namespace annals::persistence
